"""One run from config to stored result: validate, hash, claim, train (resumable), evaluate, finish.

Everything that can be checked is checked in ``prepare_run`` before any model is loaded. A run
whose ``DONE`` exists is never redone; a run interrupted in training resumes from its checkpoint,
and one interrupted after training reuses its saved adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from metalora.adapters import load_adapter
from metalora.checkpoint import FolderCheckpointer
from metalora.data.registry import get_task
from metalora.data.root import DataRoot, resolve_data_root, sha256_file
from metalora.environment import environment_record
from metalora.errors import MlbenchError
from metalora.experiment import TrainingPlan, TrainingRequest, plan_training
from metalora.models import load_model, pick_device, pick_dtype
from metalora.runconfig import RunConfig, run_id_for
from metalora.store import RunStore, write_atomic, write_json

DEFAULT_CHECKPOINT_EVERY = 10


@dataclass(frozen=True)
class ExecutionOptions:
    """How to execute, not what: none of these change a number, so none is in the run id."""

    device: str | None = None
    eval_batch_size: int | str = 8
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig
    run_id: str
    root: DataRoot
    plan: TrainingPlan | None
    data_hashes: dict[str, str]


class FileHashCache:
    """sha256 of data files, once per file per process (a sweep hashes the same files for every run)."""

    def __init__(self):
        self.known: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self.known:
            self.known[path] = sha256_file(path)
        return self.known[path]


def data_hashes_for(config: RunConfig, root: DataRoot, hasher: Callable[[Path], str]) -> dict[str, str]:
    from eval_tasks.registry import get_benchmark, training_task_subtasks

    files = [name for task in (config.tasks if config.trains else ()) for name in get_task(task).files]
    chosen = training_task_subtasks(config.benchmarks, config.tasks)
    files += [
        name
        for benchmark in config.benchmarks
        for subtask in chosen.get(benchmark, get_benchmark(benchmark).subtasks)
        for name in get_benchmark(benchmark).data_files(subtask)
    ]
    if root.is_hub:
        return {f"hub:{name}": "hub" for name in dict.fromkeys(files)}
    return {name: hasher(root.file(name)) for name in dict.fromkeys(files)}


def prepare_run(
    config: RunConfig, data_root: str | None, device: str | None, hasher: Callable[[Path], str] | None = None
) -> PreparedRun:
    """Validate everything and fix the run id; no model is loaded, nothing is written."""
    from eval_tasks.datacheck import check_benchmark_data
    from eval_tasks.registry import training_task_subtasks

    config = replace(config, dtype=pick_dtype(config.dtype, pick_device(device)))
    root = resolve_data_root(data_root)
    plan = None
    if config.trains:
        plan = plan_training(
            TrainingRequest(
                method=config.method,
                model=config.model,
                scenario=config.scenario,
                tasks=config.tasks,
                held_out_languages=config.held_out_languages,
                shots=config.shots,
                full_cap=config.full_cap,
                data_root=data_root,
                train=config.train,
                method_options=config.method_options,
            )
        )
    hashes = data_hashes_for(config, root, hasher or FileHashCache())
    # Every evaluation file is parsed now, so a malformed one fails before the training, not after.
    check_benchmark_data(config.benchmarks, root, training_task_subtasks(config.benchmarks, config.tasks))
    return PreparedRun(config, run_id_for(config, hashes), root, plan, hashes)


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
    options: ExecutionOptions = ExecutionOptions(),
    *,
    report: Reporter = lambda line: None,
    on_step: Callable[[dict, int], None] | None = None,
) -> str:
    """Run it; returns "done" (finished now), "skipped" (already done) or "busy" (another worker)."""
    run_id, config = prepared.run_id, prepared.config
    if store.is_done(run_id):
        return "skipped"
    if not store.claim(run_id, config.to_dict()):
        return "skipped" if store.is_done(run_id) else "busy"
    folder = store.run_dir(run_id)
    try:
        _execute_claimed(prepared, store, folder, options, report, on_step)
    except BaseException as error:
        store.fail(run_id, f"{type(error).__name__}: {error}")
        raise
    return "done"


def _execute_claimed(prepared, store, folder: Path, options, report, on_step) -> None:
    run_id, config = prepared.run_id, prepared.config
    if not (folder / "config.json").is_file():
        write_json(
            folder / "config.json",
            {"run_id": run_id, "config": config.to_dict(), "data_hashes": prepared.data_hashes,
             "data_root": prepared.root.describe(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        )
    device = pick_device(options.device)
    report(f"run {run_id}: loading model {config.model} on {device} ({config.dtype})")
    loaded = load_model(config.model, dtype=config.dtype, device=device)
    environment = environment_record(device) | {
        "dtype": loaded.dtype,
        "model_source": loaded.source.to_dict(),
        "eval_batch_size": options.eval_batch_size,
    }
    write_json(folder / "env.json", environment)

    adapter_dir = folder / "adapter"
    if config.trains and (adapter_dir / "adapter.json").is_file():
        report(f"run {run_id}: reusing the trained adapter")
        adapter = load_adapter(adapter_dir)
    elif config.trains:
        total = config.train.steps or 0  # unknown ahead of time when training by epochs
        checkpointer = FolderCheckpointer(folder / "checkpoint", options.checkpoint_every)
        resumed = checkpointer.load()
        if resumed is not None:
            report(f"run {run_id}: resuming training after step {resumed.step}")

        def step_callback(record: dict) -> None:
            if record["step"] % 10 == 0:
                store.heartbeat(run_id)
            if on_step:
                on_step(record, total)

        adapter = prepared.plan.trainer.fit(
            loaded.model, loaded.tokenizer, prepared.plan.budgets, config.train, step_callback, checkpointer
        )
        write_atomic(folder / "training_log.jsonl", "".join(json.dumps(r) + "\n" for r in adapter.training_log))
        adapter.save(adapter_dir)
        checkpointer.clear()
    else:
        from metalora.adapters import NoAdapter

        adapter = NoAdapter({}, {})

    results_path = folder / "eval" / "results.json"
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
            output_dir=folder / "eval",
            run_label=run_id,
            merge_lora=adapter.mergeable,
            subtasks=training_task_subtasks(config.benchmarks, config.tasks),
        )
        write_atomic(results_path, result.to_json())
    results = json.loads(results_path.read_text())
    store.finish(run_id, headline_metrics(results))
    report(f"run {run_id}: done")


def read_run(store: RunStore, run_id: str) -> dict:
    """Everything stored for a run, as plain data (for ``mlbench show`` and the report)."""
    folder = store.run_dir(run_id)
    if not folder.is_dir():
        raise MlbenchError(f"run {run_id} has no folder in {store.root}")

    def load(name):
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else None

    log_path = folder / "training_log.jsonl"
    return {
        "run_id": run_id,
        "folder": str(folder),
        "config": load("config.json"),
        "env": load("env.json"),
        "results": load("eval/results.json"),
        "done": load("DONE"),
        "training_log": [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else [],
    }
