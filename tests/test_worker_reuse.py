"""One worker, many runs: the base model stays loaded and the tasks stay built, and every number
equals the same run done alone (tiny local model, real lm-eval tasks on real data)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from metalora.runs.runconfig import (
    CPU_EVAL_BATCH_SIZE,
    GPU_DECODE_ROWS,
    GPU_EVAL_BATCH_SIZE,
    ExecutionOptions,
    build_run_config,
)
from metalora.runs.runner import execute_runs, prepare_run
from metalora.runs.store import RunStore
from metalora.runs.worker import ModelKey, ModelPool, Worker, weights_checksum
from tests.conftest import make_tiny_llama

RUN = {"steps": 10, "batch_size": 2, "max_seq_len": 64, "rank": 2, "support_size": 2, "query_size": 2,
       "inner_steps": 1, "benchmarks": ["xcopa", "mgsm"], "eval_limit": 1, "max_gen_tokens": 4,
       "scenario": "multilingual", "tasks": ["xcopa_et", "xcopa_it"], "shots": 10, "profile": "full"}
# Timings and timestamps differ between any two executions, the sample files' paths between stores; nothing else may.
VOLATILE = {"timing", "created", "finished", "evaluated", "sample_files"}


def _prepared(model_dir: Path, data_root, methods):
    execution = ExecutionOptions(device="cpu", data_root=str(data_root.path))
    return execution, [prepare_run(build_run_config({**RUN, "model": str(model_dir), "method": method}), execution)
                       for method in methods]


def _strip(value):
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _run_files(folder: Path) -> dict:
    files = {"results": _strip(json.loads((folder / "eval" / "results.json").read_text()))}
    for path in sorted((folder / "eval" / "samples").glob("*.jsonl.gz")):
        files[path.name] = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    if (folder / "training_log.jsonl").is_file():
        files["training_log"] = (folder / "training_log.jsonl").read_text()
        files["adapter"] = {name: tensor.tolist() for name, tensor in
                            load_file(folder / "adapter" / "adapter.safetensors").items()}
    return files


def test_the_evaluation_batch_size_defaults_by_device_unless_given():
    assert ExecutionOptions().eval_batch_for("cpu") == CPU_EVAL_BATCH_SIZE
    assert ExecutionOptions().eval_batch_for("cuda:1") == ExecutionOptions().eval_batch_for("cuda") == GPU_EVAL_BATCH_SIZE
    assert GPU_EVAL_BATCH_SIZE > CPU_EVAL_BATCH_SIZE
    given = ExecutionOptions(eval_batch_size="16").validate()
    assert given.eval_batch_for("cpu") == given.eval_batch_for("cuda") == 16
    assert ExecutionOptions(eval_batch_size="auto").validate().eval_batch_for("cuda") == "auto"


def test_rows_generating_together_default_by_device_unless_given():
    # Fast shapes: None on a CPU (the evaluation batch size: each row costs arithmetic there).
    fast = ExecutionOptions(eval_shapes="fast").validate()
    assert fast.decode_rows_for("cpu") is None
    assert fast.decode_rows_for("cuda:1") == GPU_DECODE_ROWS > GPU_EVAL_BATCH_SIZE
    given = ExecutionOptions(eval_shapes="fast", eval_decode_rows=32).validate()
    assert given.decode_rows_for("cpu") == given.decode_rows_for("cuda") == 32
    # Stock shapes (the default) generate in HFLM's batches of the batch size: no rows beyond them.
    assert ExecutionOptions().decode_rows_for("cuda") is None
    assert ExecutionOptions(eval_decode_rows=32).validate().decode_rows_for("cuda") is None


def test_runs_in_one_worker_equal_each_run_alone(tmp_path, tiny_model_dir, data_root):
    # LoRA-kind (merged for evaluation), HydraLoRA (attached live) and the base model, in one worker.
    execution, prepared = _prepared(tiny_model_dir, data_root, ["metalora", "hydralora", "base"])
    shared = RunStore(tmp_path / "shared")
    worker = Worker()
    outcomes = execute_runs(prepared, shared, execution, worker=worker)
    assert list(outcomes.values()) == ["done", "done", "done"]
    assert worker.models.loads == 1 and worker.models.reloads_after_change == 0  # loaded once, never changed
    assert worker.task_cache.stats.misses == 2 and worker.task_cache.stats.hits == 4  # 2 benchmarks x 3 runs
    reused = [json.loads((shared.run_dir(p.run_id) / "env.json").read_text())["base_model_reused"] for p in prepared]
    assert reused == [False, True, True]
    # No batch size given: the CPU default, recorded where the run's numbers are.
    for run in prepared:
        folder = shared.run_dir(run.run_id)
        assert json.loads((folder / "env.json").read_text())["eval_batch_size"] == CPU_EVAL_BATCH_SIZE == 8
        assert json.loads((folder / "eval" / "results.json").read_text())["settings"]["batch_size"] == 8

    # Each run evaluated its own adapter: per-item scores differ between the three.
    samples = [_run_files(shared.run_dir(p.run_id))["xcopa.jsonl.gz"] for p in prepared]
    scores = [[record["scores"] for record in run_samples] for run_samples in samples]
    assert scores[0] != scores[2] and scores[1] != scores[2] and scores[0] != scores[1]

    for index, run in enumerate(prepared):
        alone = RunStore(tmp_path / f"alone{index}")
        assert execute_runs([run], alone, execution, worker=Worker()) == {run.run_id: "done"}
        together_files = _run_files(shared.run_dir(run.run_id))
        alone_files = _run_files(alone.run_dir(run.run_id))
        assert together_files.keys() == alone_files.keys()
        for name in alone_files:
            assert together_files[name] == alone_files[name], f"{run.config.method}: {name} differs"
        samples = sum(len(records) for name, records in alone_files.items() if name.endswith(".jsonl.gz"))
        assert samples == 22  # xcopa 11 languages + mgsm 11 languages, one item each


def test_eval_merge_lora_off_evaluates_the_lora_unmerged_as_lm_evals_peft_path_does(tmp_path, tiny_model_dir, data_root):
    """--eval-merge-lora off: the same run, its LoRA evaluated through peft's forward instead of merged
    (what lm-eval's peft= path computes); recorded where the numbers are; in float32 the same answers."""
    config = build_run_config({**RUN, "benchmarks": ["xcopa"], "model": str(tiny_model_dir), "method": "lora"})
    outcomes = {}
    for setting in ("on", "off"):
        execution = ExecutionOptions(device="cpu", data_root=str(data_root.path), eval_merge_lora=setting).validate()
        store = RunStore(tmp_path / setting)
        run = prepare_run(config, execution)
        assert execute_runs([run], store, execution, worker=Worker()) == {run.run_id: "done"}
        folder = store.run_dir(run.run_id)
        outcomes[setting] = (json.loads((folder / "env.json").read_text())["eval_merge_lora"],
                             json.loads((folder / "eval" / "results.json").read_text())["settings"]["merged_lora"],
                             _run_files(folder))
    assert outcomes["on"][:2] == ("on", True) and outcomes["off"][:2] == ("off", False)
    merged, unmerged = outcomes["on"][2], outcomes["off"][2]
    assert merged["adapter"] == unmerged["adapter"]  # the same training: only the evaluation's path differs
    # Each item's option log-likelihoods: equal to float32 rounding, not bit for bit (W + sBA is rounded once).
    first, second = ([r["scores"] for r in files["xcopa.jsonl.gz"]] for files in (merged, unmerged))
    assert len(first) == len(second) == 11 and first != second
    for a, b in zip(first, second, strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-3)
        assert max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__)


def test_pool_reloads_a_model_whose_weights_a_run_changed():
    loaded_models = []

    def loader(name, *, dtype, device):
        from types import SimpleNamespace

        loaded_models.append(make_tiny_llama())
        return SimpleNamespace(model=loaded_models[-1], tokenizer=None)

    pool = ModelPool(loader=loader)
    key = ModelKey("abc", "float32", "cpu")
    first, reused = pool.get("tiny", key)
    assert not reused and pool.loads == 1
    assert pool.get("tiny", key) == (first, True)
    with torch.no_grad():  # one element of one weight, changed by the smallest step
        weight = first.model.model.layers[1].mlp.down_proj.weight
        weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(1.0))
    second, reused = pool.get("tiny", key)
    assert not reused and second is not first and pool.loads == 2 and pool.reloads_after_change == 1
    assert pool.get("tiny", ModelKey("abc", "bfloat16", "cpu"))[1] is False  # another dtype: another model
    assert pool.loads == 3


def test_checksum_sees_a_swap_and_a_buffer():
    model = make_tiny_llama()
    before = weights_checksum(model)
    with torch.no_grad():
        row = model.lm_head.weight
        row[[0, 1]] = row[[1, 0]]  # same values, other places: the plain sum is blind to it
    swapped = weights_checksum(model)
    assert swapped != before
    with torch.no_grad():
        row[[0, 1]] = row[[1, 0]]
    assert weights_checksum(model) == before
    model.model.rotary_emb.inv_freq[0] += 1
    assert weights_checksum(model) != before
