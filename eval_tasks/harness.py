"""Evaluate an in-memory model (base, base + LoRA, base + HydraLoRA) on named benchmarks.

Every benchmark runs as lm-eval tasks from ``eval_tasks/`` (``TaskManager(include_path=...)``,
lm-eval's built-in tasks not even indexed). The data root travels as TaskManager metadata (see
``eval_tasks/dataroot.py``). Two backends, recorded as ``settings.eval_backend``:

- ``fast`` (default): the model wrapped in ``eval_tasks.fastlm.FastLM`` (HFLM's requests and
  answers, computed faster), tasks and requests from a ``TaskCache`` (built once per worker when
  the caller passes one), run through ``lm_eval.evaluator.evaluate``.
- ``hflm``: the stock path, lm-eval's ``HFLM`` through ``simple_evaluate``, tasks built per call.
  ``bench/eval_speed.py`` runs both on the same items.

The fast backend's shapes (``settings.eval_shapes``): ``stock`` (default) gives every forward the
shapes HFLM gives it (log-likelihood inputs in HFLM's batches, right-padded, no mask; generation
in HFLM's static batches), so its answers are stock lm-eval's in bfloat16 too; ``fast`` shares
prompt prefixes, scores in float32 and refills the generation batch (``decode_rows``): faster,
the same answers in float32, different ones at bfloat16 near-ties. ``stock-scored`` is ``stock``
with the output layer applied only at the positions a log-likelihood batch scores (through
transformers' ``logits_to_keep``): the network below it gets HFLM's inputs unchanged, only the
output layer's matrix product has fewer rows, and the full-vocabulary logits of every position are
never held (README, "Stock shapes by default", has what it changes and what it measured).

Order of work, so that a mistake costs nothing and a failure leaves nothing half-written:
names and options are checked, the data files are located and hashed, then every benchmark is
evaluated, and only then are the per-sample files written (each atomically).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from eval_tasks.dataroot import DATA_ROOT_KEY, task_metadata
from eval_tasks.generation_rules import OWN_STOP_GENERATION_RULE, STOCK_GENERATION_RULE
from eval_tasks.greedy import decoding_rows
from eval_tasks.model_state import evaluation_state, model_fingerprint
from eval_tasks.records import sample_record, write_records
from eval_tasks.references import benchmark_references
from eval_tasks.registry import EVAL_TASKS_DIR, BenchmarkSpec, get_benchmark
from eval_tasks.results import EvalResult, TaskScore, aggregate_benchmark, mean, mean_stderr, small_tasks
from eval_tasks.task_cache import TaskCache, TaskKey, seed_like_lm_eval
from eval_tasks.templates import compiled_once
from metalora.data.root import DATA_DIR_ENV, DataRoot
from metalora.errors import MlbenchError
from metalora.provenance import package_versions, sha256_file, sha256_text

BatchSize = int | Literal["auto"]
DEFAULT_BATCH_SIZE = 8
# Task-config keys that vary with where things are, not with what is evaluated.
_RUNTIME_METADATA = (DATA_ROOT_KEY, "config_source")


@dataclass(frozen=True)
class EvalOptions:
    """How to run; checked before any work."""

    batch_size: BatchSize = DEFAULT_BATCH_SIZE
    limit: int | None = None  # items per task (the first N), for quick runs
    max_gen_tokens: int | None = None  # None: each generative benchmark's own default
    merge_lora: bool = True
    response_cache_dir: Path | None = None  # lm-eval response cache, keyed by a model fingerprint
    backend: str = "fast"  # a key of EVAL_BACKENDS
    decode_rows: int | None = None  # rows generating together (fast backend, fast shapes); None: the batch size
    shapes: str = "stock"  # a member of EVAL_SHAPES (module docstring)
    cuda_graphs: bool = True  # stock shapes on CUDA: decoding steps as CUDA graphs (eval_tasks/step_graphs.py)

    def __post_init__(self) -> None:
        if self.backend not in EVAL_BACKENDS:
            raise MlbenchError(
                f"unknown eval backend {self.backend!r}; choose from {', '.join(EVAL_BACKENDS)}"
            )
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise MlbenchError(f"batch size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.limit is not None and not (isinstance(self.limit, int) and self.limit >= 1):
            raise MlbenchError(f"limit must be a positive number of items per task, got {self.limit!r}")
        if self.max_gen_tokens is not None and not (
            isinstance(self.max_gen_tokens, int) and self.max_gen_tokens >= 1
        ):
            raise MlbenchError(
                f"max generated tokens must be a positive integer, got {self.max_gen_tokens!r}"
            )
        if self.shapes not in EVAL_SHAPES:
            raise MlbenchError(f"eval shapes must be one of {', '.join(EVAL_SHAPES)}, got {self.shapes!r}")
        rows = self.decode_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise MlbenchError(f"decode rows must be a positive integer, got {self.decode_rows!r}")

    def stock_shaped(self) -> bool:
        """The fast backend with HFLM's shapes (``stock`` or ``stock-scored``)."""
        return self.backend == "fast" and shapes_are_stock(self.shapes)

    def generation_rows(self) -> int | str | None:
        """Rows generating together in the fast backend (never fewer than the batch size); None for
        the stock backend, whose static batches are the batch size."""
        if self.backend != "fast":
            return None
        # Stock shapes generate in HFLM's static batches; "auto" is known only once FastLM has probed it.
        if self.batch_size == "auto" or self.stock_shaped():
            return self.batch_size
        return decoding_rows(self.batch_size, self.decode_rows)

    def gen_tokens(self, spec: BenchmarkSpec) -> int | None:
        return (self.max_gen_tokens or spec.max_gen_tokens) if spec.generative else None

    def gen_kwargs(self, spec: BenchmarkSpec) -> dict | None:
        """lm-eval's ``gen_kwargs`` for ``spec``: its generation cap, None for a scored benchmark."""
        gen_tokens = self.gen_tokens(spec)
        return {"max_gen_toks": gen_tokens} if gen_tokens else None


def evaluate(
    model,
    tokenizer,
    benchmarks: Sequence[str],
    *,
    data_root: DataRoot,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    max_gen_tokens: int | None = None,
    output_dir: Path | None = None,
    run_label: str = "",
    merge_lora: bool = True,
    response_cache_dir: Path | None = None,
    subtasks: Mapping[str, Sequence[str]] | None = None,
    eval_backend: str = "fast",
    task_cache: TaskCache | None = None,
    on_benchmark: Callable[[str, dict | None], None] | None = None,
    decode_rows: int | None = None,
    eval_shapes: str = "stock",
    cuda_graphs: bool = True,
) -> EvalResult:
    """Score ``model`` on ``benchmarks`` (names from ``eval_tasks.registry.BENCHMARKS``).

    With ``output_dir``, per-sample records go to ``output_dir/samples/<benchmark>.jsonl.gz``.
    ``subtasks`` restricts a benchmark to some of its tasks, subjects or languages (quick runs);
    its aggregates then cover only those, as their ``n_tasks`` says. ``eval_backend`` is ``fast``
    or ``hflm`` (module docstring); ``task_cache`` (fast backend) keeps built tasks and
    tokenizations for the next call; ``decode_rows`` (fast backend) is how many prompts generate
    together, prefilled ``batch_size`` at a time (``eval_tasks/greedy.py``; default: the batch
    size) where ``eval_shapes`` is ``fast``; ``stock`` (default) keeps HFLM's shapes (module
    docstring), and with ``cuda_graphs`` on CUDA replays its decoding steps as CUDA graphs
    (``eval_tasks/step_graphs.py``; settings.decode_steps says how they ran). ``on_benchmark(name, None)`` is called when a benchmark starts and
    ``on_benchmark(name, timing)`` when it is done (progress display).
    """
    specs = resolve_benchmarks(benchmarks)
    chosen = choose_subtasks(specs, subtasks or {})
    options = EvalOptions(batch_size, limit, max_gen_tokens, merge_lora, response_cache_dir, eval_backend, decode_rows,
                          eval_shapes, cuda_graphs)
    data_files = hash_data_files(specs, chosen, data_root)
    task_cache = task_cache or TaskCache()
    references = {
        spec.name: task_cache.references(
            _task_key(spec, chosen[spec.name], data_root, data_files, options),
            lambda spec=spec: benchmark_references(spec, chosen[spec.name], data_root, options.limit),
        )
        for spec in specs
    }

    cache_key = model_fingerprint(model, tokenizer) if options.response_cache_dir else None
    context = _RunContext(options, data_root, data_files, cache_key, task_cache)
    timing = {}
    with evaluation_state(model, tokenizer, merge_lora=options.merge_lora) as merged:
        outputs = {}
        run_benchmark = EVAL_BACKENDS[options.backend](model, tokenizer, context)
        for spec in specs:
            if on_benchmark:
                on_benchmark(spec.name, None)
            started = time.perf_counter()
            outputs[spec.name] = run_benchmark(spec, chosen[spec.name])
            seconds = time.perf_counter() - started
            items = sum(len(samples) for samples in outputs[spec.name]["samples"].values())
            timing[spec.name] = {"seconds": round(seconds, 3), "items": items,
                                 "items_per_second": round(items / seconds, 3) if seconds > 0 else None}  # fmt: skip
            if on_benchmark:
                on_benchmark(spec.name, timing[spec.name])

    scores, aggregates, records, flagged = [], [], {}, {}
    for spec in specs:
        spec_scores, per_item, records[spec.name] = _collect(spec, chosen[spec.name], outputs[spec.name])
        scores += spec_scores
        aggregates += aggregate_benchmark(
            spec.name, spec.metrics, spec_scores, per_item, spec.unit, spec.categories, spec.min_items_for_macro
        )
        if small := small_tasks(spec_scores, spec.min_items_for_macro):
            flagged[spec.name] = small

    sample_files = {}
    if output_dir is not None:
        for name, spec_records in records.items():
            path = Path(output_dir) / "samples" / f"{name}.jsonl.gz"
            write_records(path, spec_records)
            sample_files[name] = str(path)

    return EvalResult(
        run_label=run_label,
        benchmarks=tuple(spec.name for spec in specs),
        protocols={spec.name: spec.protocol for spec in specs},
        tasks=tuple(scores),
        aggregates=tuple(aggregates),
        versions=package_versions(("lm_eval", "transformers", "torch", "peft", "datasets", "mlbench")),
        data_root=data_root.describe(),
        data_files=data_files,
        settings={
            "batch_size": options.batch_size,
            "decode_rows": options.generation_rows(),
            "limit": options.limit,
            "subtasks": {
                name: list(names) for name, names in chosen.items() if subtasks and name in subtasks
            },
            "max_gen_tokens": {spec.name: options.gen_tokens(spec) for spec in specs if spec.generative},
            "merged_lora": merged,
            "response_cache": str(_cache_path(options, cache_key)) if cache_key else None,
            "eval_backend": options.backend,
            "eval_shapes": options.shapes if options.backend == "fast" else None,
            "generation_rule": OWN_STOP_GENERATION_RULE if options.backend == "fast" and not options.stock_shaped()
            else STOCK_GENERATION_RULE,
            "decode_steps": context.notes.get("decode_steps"),
            "timing": timing,  # wall time per benchmark, tasks and requests built or cached included
        },
        sample_files=sample_files,
        flagged=flagged,
        references=references,
    )


def resolve_benchmarks(names: Sequence[str]) -> list[BenchmarkSpec]:
    if isinstance(names, str) or not names:
        raise MlbenchError("give a list of benchmark names, e.g. ['bbh', 'mmlu']")
    return [get_benchmark(name) for name in dict.fromkeys(names)]


def choose_subtasks(
    specs: Sequence[BenchmarkSpec], subtasks: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    """The subtasks to run per benchmark: all of them, or a checked selection."""
    names = [spec.name for spec in specs]
    for name in subtasks:
        if name not in names:
            raise MlbenchError(
                f"subtasks given for {name!r}, which is not among the benchmarks {', '.join(names)}"
            )
    chosen = {}
    for spec in specs:
        selection = tuple(dict.fromkeys(subtasks.get(spec.name, spec.subtasks)))
        unknown = [subtask for subtask in selection if subtask not in spec.subtasks]
        if unknown or not selection:
            raise MlbenchError(
                f"unknown {spec.unit} {', '.join(map(repr, unknown)) or '(none given)'} for {spec.name}; "
                f"valid: {', '.join(spec.subtasks)}"
            )
        chosen[spec.name] = selection
    return chosen


def hash_data_files(
    specs: Sequence[BenchmarkSpec], chosen: Mapping[str, Sequence[str]], root: DataRoot
) -> dict[str, str]:
    """sha256 of every file the benchmarks read (a missing root or file fails here, in one line)."""
    if root.is_hub:
        return {f"hub:{spec.name}": spec.hub_sources for spec in specs}
    if not root.path.is_dir():
        raise MlbenchError(
            f"data root {root.path} not found; set {DATA_DIR_ENV} or --data-root to a folder laid out "
            "like shared/data"
        )
    relative = dict.fromkeys(
        file for spec in specs for subtask in chosen[spec.name] for file in spec.data_files(subtask)
    )
    return {name: sha256_file(root.file(name)) for name in relative}


def _cache_path(options: EvalOptions, cache_key: str) -> Path:
    # lm-eval appends "_rank<N>.db"; the fingerprint in the name keeps adapters apart.
    return Path(options.response_cache_dir) / f"lm-eval-{cache_key}"


@dataclass(frozen=True)
class _RunContext:
    options: EvalOptions
    data_root: DataRoot
    data_files: Mapping[str, str]
    cache_key: str | None  # response-cache fingerprint, when a response cache is used
    task_cache: TaskCache
    # What the backend did that the options alone do not say (settings.decode_steps), filled as it runs.
    notes: dict = field(default_factory=dict)


RunBenchmark = Callable[[BenchmarkSpec, Sequence[str]], dict]


def _stock_backend(model, tokenizer, context: _RunContext) -> RunBenchmark:
    """lm-eval's HFLM through ``simple_evaluate``: tasks built for every call."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=context.options.batch_size)
    manager = TaskManager(
        include_path=str(EVAL_TASKS_DIR), include_defaults=False, metadata=task_metadata(context.data_root)
    )
    return lambda spec, subtasks: _run_benchmark(
        spec, subtasks, lm, manager, context.options, context.cache_key
    )


def _fast_backend(model, tokenizer, context: _RunContext) -> RunBenchmark:
    """FastLM through ``lm_eval.evaluator.evaluate`` on tasks from the task cache."""
    from lm_eval.api.model import CachingLM
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    from eval_tasks.fastlm import FastLM

    options = context.options
    cache = context.task_cache
    lm = FastLM(model, tokenizer, options.batch_size, encodings=cache.encodings(tokenizer),
                vocabulary_texts=lambda: cache.token_texts(tokenizer), decode_rows=options.decode_rows,
                cuda_graphs=options.cuda_graphs, **EVAL_SHAPES[options.shapes])  # fmt: skip
    fast_lm = lm
    if context.cache_key:  # as simple_evaluate(use_cache=...) does
        Path(options.response_cache_dir).mkdir(parents=True, exist_ok=True)
        lm = CachingLM(lm, f"{_cache_path(options, context.cache_key)}_rank0.db")

    def run(spec: BenchmarkSpec, subtasks: Sequence[str]) -> dict:
        key = _task_key(spec, subtasks, context.data_root, context.data_files, options)
        tasks = context.task_cache.tasks(key, context.data_root, options.gen_kwargs(spec))
        seed_like_lm_eval()
        # Scoring renders every document's target again, compiling its template each time (on the
        # H200, 3.7 of BBH's 35.7 s; eval_tasks/templates.py): each template compiled once, the same text.
        with compiled_once():
            output = lm_eval_evaluate(
                lm=lm, task_dict=tasks, limit=options.limit, log_samples=True, bootstrap_iters=0
            )
        context.notes["decode_steps"] = fast_lm.decode_steps
        return output

    return run


def _task_key(
    spec: BenchmarkSpec, subtasks: Sequence[str], root: DataRoot, data_files: Mapping[str, str], options: EvalOptions
) -> TaskKey:
    """The task cache's key for one benchmark: its tasks, their data files' hashes and the options
    that change its requests."""
    files = {name: data_files[name] for subtask in subtasks for name in spec.data_files(subtask)
             if name in data_files}  # fmt: skip
    names = [spec.task_name(subtask) for subtask in subtasks]
    return TaskKey.make(spec.name, names, root, files, options.limit, options.gen_kwargs(spec))


# Registry of the fast backend's shapes: name -> FastLM's options for them (module docstring).
EVAL_SHAPES: Mapping[str, Mapping[str, bool]] = MappingProxyType({
    "stock": MappingProxyType({"stock_shapes": True}),
    "stock-scored": MappingProxyType({"stock_shapes": True, "scored_logits": True}),
    "fast": MappingProxyType({}),
})


def shapes_are_stock(shapes: str) -> bool:
    """Whether ``--eval-shapes shapes`` gives every forward HFLM's inputs (``stock``, ``stock-scored``)."""
    return bool(EVAL_SHAPES[shapes].get("stock_shapes"))


# Registry of evaluation backends: name -> (model, tokenizer, context) -> per-benchmark runner.
EVAL_BACKENDS: Mapping[str, Callable[..., RunBenchmark]] = MappingProxyType(
    {"fast": _fast_backend, "hflm": _stock_backend}
)


def _run_benchmark(
    spec: BenchmarkSpec, subtasks: Sequence[str], lm, manager, options: EvalOptions, cache_key: str | None
) -> dict:
    from lm_eval import simple_evaluate

    if cache_key:
        Path(options.response_cache_dir).mkdir(parents=True, exist_ok=True)
    return simple_evaluate(
        model=lm,
        # Tasks by name rather than the group: lm-eval's group figures are not used (results.py).
        tasks=[spec.task_name(subtask) for subtask in subtasks],
        task_manager=manager,
        limit=options.limit,
        log_samples=True,
        # Standard errors are computed from the samples (results.py); lm-eval's are skipped.
        bootstrap_iters=0,
        gen_kwargs=options.gen_kwargs(spec),
        use_cache=str(_cache_path(options, cache_key)) if cache_key else None,
    )


def _collect(
    spec: BenchmarkSpec, subtasks: Sequence[str], output: dict
) -> tuple[list[TaskScore], dict, list[dict]]:
    scores, per_item, records = [], {}, []
    for subtask in subtasks:
        name = spec.task_name(subtask)
        samples = sorted(output["samples"][name], key=lambda sample: sample["doc_id"])
        per_item[subtask] = {metric: [float(sample[metric]) for sample in samples] for metric in spec.metrics}
        for metric, values in per_item[subtask].items():
            reported = output["results"][name][f"{metric},none"]
            if abs(reported - mean(values)) > 1e-9:  # a bug, not a user error
                raise RuntimeError(
                    f"{name}: lm-eval reports {metric} {reported}, samples give {mean(values)}"
                )
        scores.append(
            TaskScore(
                benchmark=spec.name,
                task=subtask,
                lm_eval_task=name,
                metrics={metric: mean(values) for metric, values in per_item[subtask].items()},
                stderr={metric: mean_stderr(values) for metric, values in per_item[subtask].items()},
                n_evaluated=len(samples),
                n_available=int(output["n-samples"][name]["original"]),
                version=str(output["versions"][name]),
                config_hash=config_hash(output["configs"][name]),
            )
        )
        records += [
            sample_record(subtask, sample, spec.metrics[0], spec.metrics, spec.explain) for sample in samples
        ]
    return scores, per_item, records


def config_hash(config: dict) -> str:
    """sha256 of a task config as lm-eval ran it, without the keys that only say where files are."""
    metadata = {
        key: value for key, value in config.get("metadata", {}).items() if key not in _RUNTIME_METADATA
    }
    return sha256_text(json.dumps({**config, "metadata": metadata}, sort_keys=True, default=str))
