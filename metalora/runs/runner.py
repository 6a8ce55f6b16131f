"""One run from config to stored result: check, hash, claim, train (resumable), evaluate, finish.

``build_run_config`` (runconfig) has validated every value; ``prepare_run`` adds what needs the
data (the data root, each task's budget, the method's checks on the budgets, the data hashes and
so the run id), all before any model is loaded. A run whose ``DONE`` exists is never redone; a run
interrupted in training resumes from its checkpoint, and one interrupted after training reuses
its saved adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from metalora.data.budgets import TaskBudget, load_budgets
from metalora.data.registry import TaskSplit, get_task
from metalora.data.root import DataRoot, resolve_data_root
from metalora.errors import MlbenchError
from metalora.methods import adapter_kinds, get_method
from metalora.models import load_model, model_identity, pick_device, pick_dtype
from metalora.provenance import FileHashCache, environment_record
from metalora.runs import store as files
from metalora.runs.runconfig import ExecutionOptions, RunConfig, run_id_for
from metalora.runs.store import RunStore
from metalora.training.adapters import NoAdapter, load_adapter
from metalora.training.checkpoint import FolderCheckpointer
from metalora.training.preflight import (
    check_sequence_length,
    check_target_modules,
    config_linear_names,
    folder_tokenizer,
    linear_module_names,
)
from metalora.training.trainer import check_budgets


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig  # dtype resolved for the device
    run_id: str
    root: DataRoot
    budgets: tuple[TaskBudget, ...]  # empty for the base model
    data_hashes: dict[str, str]
    model_identity: str  # sha256 of the weights, checked again when the model loads


def data_hashes_for(config: RunConfig, root: DataRoot, hasher: Callable[[Path], str]) -> dict[str, str]:
    from eval_tasks.registry import get_benchmark, training_task_subtasks

    files_read = [name for task in (config.tasks if config.trains else ()) for name in get_task(task).files]
    chosen = training_task_subtasks(config.benchmarks, config.tasks)
    files_read += [
        name
        for benchmark in config.benchmarks
        for subtask in chosen.get(benchmark, get_benchmark(benchmark).subtasks)
        for name in get_benchmark(benchmark).data_files(subtask)
    ]
    if root.is_hub:
        return {f"hub:{name}": "hub" for name in dict.fromkeys(files_read)}
    return {name: hasher(root.file(name)) for name in dict.fromkeys(files_read)}


class DataCache:
    """What preparing many runs can share (a sweep's dry run prepares every run): file hashes,
    each task's parsed split and the benchmark files already parsed, so every
    data file is read once per sweep, not once per run."""

    def __init__(self):
        self.hasher = FileHashCache()
        self._splits: dict[tuple[DataRoot, str], TaskSplit] = {}
        self._checked: set[tuple[DataRoot, tuple[str, ...], tuple[str, ...]]] = set()
        self._hub_checked = False

    def check_hub(self) -> None:
        """With no data root every file comes from the hub: an unusable hub is named now, before
        any model loads, not after the training when the first benchmark is built."""
        from metalora.data.hub import hub_unavailable_reason

        if not self._hub_checked:
            reason = hub_unavailable_reason()
            if reason:
                raise MlbenchError(
                    f"no data root is set and the hub is unreachable ({reason}): pass --data-root DIR or set "
                    "MLBENCH_DATA_DIR to a local mirror laid out like shared/data (README: Data)"
                )
            self._hub_checked = True

    def split(self, root: DataRoot, task: str) -> TaskSplit:
        if (root, task) not in self._splits:
            self._splits[(root, task)] = get_task(task).load(root)
        return self._splits[(root, task)]

    def check_benchmarks(self, root: DataRoot, benchmarks: tuple[str, ...], tasks: tuple[str, ...]) -> None:
        from eval_tasks.datacheck import check_benchmark_data
        from eval_tasks.registry import training_task_subtasks

        if (root, benchmarks, tasks) not in self._checked:
            check_benchmark_data(benchmarks, root, training_task_subtasks(benchmarks, tasks))
            self._checked.add((root, benchmarks, tasks))


def prepare_run(
    config: RunConfig, execution: ExecutionOptions | None = None, cache: DataCache | None = None
) -> PreparedRun:
    """The checks that need data, and the run id; no model is loaded, nothing is written."""
    execution = execution or ExecutionOptions()
    cache = cache or DataCache()
    config = replace(config, dtype=pick_dtype(config.dtype, pick_device(execution.device)))
    root = resolve_data_root(execution.data_root)
    if root.is_hub:
        cache.check_hub()
    model = model_identity(config.model)  # also checks the model's files (or the hub) before anything loads
    budgets: tuple[TaskBudget, ...] = ()
    if config.trains:
        budgets = tuple(load_budgets(root, config.tasks, config.shots, config.train.seed, config.full_cap,
                                     load_split=lambda task: cache.split(root, task)))
        check_budgets(config.options, budgets)
        if Path(config.model).expanduser().is_dir():
            # A local folder: its config.json tells the layers and its tokenizer the lengths, so
            # both are checked here, without reading any weights (else after loading, see execute_run).
            names = config_linear_names(config.model)
            if names is not None:
                check_target_modules(names, config.train.target_modules, config.model)
            tokenizer = folder_tokenizer(config.model)
            if tokenizer is not None:
                check_sequence_length(tokenizer, budgets, config.train.max_seq_len)
    hashes = data_hashes_for(config, root, cache.hasher)
    # Every evaluation file is parsed now, so a malformed one fails before the training, not after.
    cache.check_benchmarks(root, tuple(config.benchmarks), tuple(config.tasks))
    return PreparedRun(config, run_id_for(config, hashes, model), root, budgets, hashes, model)


def headline_metrics(results: dict) -> dict[str, float]:
    """Each benchmark's macro average of its primary metric."""
    from eval_tasks.registry import get_benchmark

    headline = {}
    for benchmark in results["benchmarks"]:
        primary = get_benchmark(benchmark).metrics[0]
        for aggregate in results["aggregates"]:
            if aggregate["benchmark"] == benchmark and aggregate["name"] == "macro" and aggregate["metric"] == primary:
                headline[f"{benchmark}/{primary}"] = aggregate["value"]
    return headline


Reporter = Callable[[str], None]


def execute_run(
    prepared: PreparedRun,
    store: RunStore,
    options: ExecutionOptions | None = None,
    *,
    report: Reporter = lambda line: None,
    on_step: Callable[[dict, int], None] | None = None,
    task_cache=None,
) -> str:
    """Run it; returns "done" (finished now), "skipped" (already done) or "busy" (another worker).

    ``task_cache`` (an ``eval_tasks.task_cache.TaskCache``) lets a worker that runs many runs build
    each benchmark's tasks and requests once."""
    options = options or ExecutionOptions()
    run_id, config = prepared.run_id, prepared.config
    if store.is_done(run_id):
        return "skipped"
    device = pick_device(options.device)
    report(f"run {run_id}: loading model {config.model} on {device} ({config.dtype})")
    loaded = load_model(config.model, dtype=config.dtype, device=device)
    if config.trains:
        # What needs the loaded model is checked before the claim: a refusal leaves no run behind.
        check_target_modules(linear_module_names(loaded.model), config.train.target_modules, config.model)
        check_sequence_length(loaded.tokenizer, prepared.budgets, config.train.max_seq_len)
    if not store.claim(run_id, config.to_dict()):
        return "skipped" if store.is_done(run_id) else "busy"
    folder = store.run_dir(run_id)
    try:
        _execute_claimed(prepared, store, folder, options, loaded, report, on_step, task_cache)
    except BaseException as error:
        store.fail(run_id, f"{type(error).__name__}: {error}")
        raise
    return "done"


def _execute_claimed(prepared, store, folder: Path, options, loaded, report, on_step, task_cache=None) -> None:
    run_id, config = prepared.run_id, prepared.config
    if not (folder / files.CONFIG_FILE).is_file():
        files.write_config(folder, run_id, config.to_dict(), prepared.data_hashes, prepared.root.describe())
    if loaded.source.identity != prepared.model_identity:
        raise MlbenchError(f"the weights of {config.model} changed after run {run_id} was planned; run it again")
    environment = environment_record(loaded.device) | {
        "dtype": loaded.dtype,
        "model_source": loaded.source.to_dict(),
        "eval_batch_size": options.eval_batch_size,
        "eval_backend": options.eval_backend,
    }
    files.write_env(folder, environment)

    adapter_dir = folder / files.ADAPTER_DIR
    if config.trains and (adapter_dir / "adapter.json").is_file():
        report(f"run {run_id}: reusing the trained adapter")
        adapter = load_adapter(adapter_dir, adapter_kinds())
    elif config.trains:
        total = config.train.steps or 0  # unknown ahead of time when training by epochs
        checkpointer = FolderCheckpointer(folder / files.CHECKPOINT_DIR, options.checkpoint_every)
        resumed = checkpointer.load()
        if resumed is not None:
            report(f"run {run_id}: resuming training after step {resumed.step}")

        def step_callback(record: dict) -> None:
            if record["step"] % 10 == 0:
                store.heartbeat(run_id)
            if on_step:
                on_step(record, total)

        trainer = get_method(config.method).trainer(config.options)
        adapter = trainer.fit(loaded.model, loaded.tokenizer, prepared.budgets, config.train, step_callback, checkpointer)
        files.write_training_log(folder, adapter.training_log)
        adapter.save(adapter_dir)
        checkpointer.clear()
    else:
        adapter = NoAdapter({}, {})

    results_path = folder / files.RESULTS_FILE
    if not results_path.is_file():
        from eval_tasks.harness import evaluate
        from eval_tasks.registry import training_task_subtasks

        report(f"run {run_id}: evaluating on {', '.join(config.benchmarks)}"
               + (f" (first {config.eval_limit} items per task)" if config.eval_limit else ""))
        model = adapter.attach(loaded.model)
        result = evaluate(
            model,
            loaded.tokenizer,
            list(config.benchmarks),
            data_root=prepared.root,
            batch_size=options.eval_batch_size,
            limit=config.eval_limit,
            max_gen_tokens=config.max_gen_tokens,
            output_dir=folder / files.EVAL_DIR,
            run_label=run_id,
            merge_lora=adapter.mergeable,
            subtasks=training_task_subtasks(config.benchmarks, config.tasks),
            eval_backend=options.eval_backend,
            task_cache=task_cache,
        )
        files.write_results(folder, result.to_json())
    results = json.loads(results_path.read_text())
    store.finish(run_id, headline_metrics(results))
    report(f"run {run_id}: done")
