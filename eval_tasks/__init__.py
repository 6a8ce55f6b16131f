"""Evaluation tasks for lm-evaluation-harness, and the harness that runs them on an in-memory model.

Layout:
- ``registry.py``: the benchmark names (``bbh``, ``bbh_cot``, ``bbh_mc``, ``mmlu``, ``mmlu_5shot``,
  ``xcopa``, ``xwinograd``, ``mgsm``), their tasks, protocols, metrics and item counts;
- ``<benchmark>/``: hand-written YAML templates, per-task YAMLs generated from the registry
  (``python -m eval_tasks.generate``) and the ``!function`` helpers they name (loaders, prompts,
  scorers); ``bbh/answers.py`` holds BBH's answer extraction and normalisation;
- ``dataroot.py``: how the data root reaches the YAMLs at run time (TaskManager metadata);
- ``harness.py``: ``evaluate(model, tokenizer, benchmarks, data_root=...)``;
- ``results.py`` (scores, aggregates, provenance), ``records.py`` (per-sample records),
  ``model_state.py`` (eval mode, LoRA merge, response-cache key).

lm-eval's own CLI can run the same tasks: ``lm_eval --include_path eval_tasks --tasks mlbench_mmlu``
(data from ``MLBENCH_DATA_DIR``, or ``--metadata '{"mlbench_data_root": "/path"}'``).
"""
