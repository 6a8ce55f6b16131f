"""Evaluating a run's adapter and adding the results to its folder, without retraining.

The run id covers what training computes (``runconfig.EVALUATION_FIELDS`` are not in it), so
``mlbench run``/``sweep`` with another benchmark, or ``mlbench eval RUN_ID``, lands in the same run
and only evaluates. What is evaluated (``plan_evaluation``):

- a requested benchmark that ``eval/results.json`` lacks, whose data files changed since, or that
  ``force`` asks for again;
- every stored benchmark when ``eval_limit`` changes, and every stored generative benchmark when
  the generation cap changes: a run's benchmarks share one ``eval_limit`` and ``max_gen_tokens``,
  the ones its ``config.json`` states (the report compares runs by them).
Everything else is kept as it is.

Writing (``store_evaluation``): the new per-sample files are written to a temporary folder inside
``eval/`` while evaluating; then a results.json without the benchmarks being replaced (only when
some are), the sample files moved into place (one rename each), the merged results.json, then
config.json's evaluation fields and the evaluation times in cost.json. At every moment results.json
describes only sample files that belong to it; a benchmark cut short is simply evaluated again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from metalora.data.root import DataRoot
from metalora.files import write_json
from metalora.runs import store as files


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate a run on; ``tasks`` are the run's training tasks (``heldout`` follows them)."""

    benchmarks: tuple[str, ...]
    tasks: tuple[str, ...]
    eval_limit: int | None = None
    max_gen_tokens: int | None = None
    force: bool = False

    def subtasks(self, benchmarks: Sequence[str]) -> dict[str, tuple[str, ...]]:
        from eval_tasks.registry import training_task_subtasks

        return training_task_subtasks(benchmarks, self.tasks)

    def gen_tokens(self, benchmark: str) -> int | None:
        from eval_tasks.registry import get_benchmark

        spec = get_benchmark(benchmark)
        return (self.max_gen_tokens or spec.max_gen_tokens) if spec.generative else None


@dataclass(frozen=True)
class EvalPlan:
    evaluate: tuple[str, ...]  # benchmarks to evaluate now, in order
    reasons: Mapping[str, str]  # benchmark -> why, in words
    kept: tuple[str, ...]  # stored benchmarks left as they are

    def describe(self) -> str:
        return "; ".join(f"{name} ({self.reasons[name]})" for name in self.evaluate)


def evaluation_data_hashes(
    benchmarks: Sequence[str], tasks: Sequence[str], root: DataRoot, hasher: Callable[[Path], str]
) -> dict[str, str]:
    """sha256 of every data file the benchmarks read, keyed as results.json's ``data_files``."""
    from eval_tasks.registry import get_benchmark, training_task_subtasks

    chosen = training_task_subtasks(benchmarks, tasks)
    if root.is_hub:
        return {f"hub:{name}": get_benchmark(name).hub_sources for name in dict.fromkeys(benchmarks)}
    names = dict.fromkeys(
        file
        for benchmark in benchmarks
        for subtask in chosen.get(benchmark, get_benchmark(benchmark).subtasks)
        for file in get_benchmark(benchmark).data_files(subtask)
    )
    return {name: hasher(root.file(name)) for name in names}


def stored_results(folder: Path) -> dict | None:
    path = Path(folder) / files.RESULTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def plan_evaluation(stored: Mapping | None, request: EvalRequest, data_files: Mapping[str, str]) -> EvalPlan:
    """Which benchmarks to evaluate (module docstring); ``data_files``: the current hashes of the
    requested benchmarks' files (``evaluation_data_hashes``)."""
    from eval_tasks.registry import get_benchmark

    requested = tuple(dict.fromkeys(request.benchmarks))
    if stored is None:
        return EvalPlan(requested, {name: "not evaluated yet" for name in requested}, ())
    have = tuple(stored.get("benchmarks", ()))
    settings = stored.get("settings", {})
    caps = settings.get("max_gen_tokens", {})
    limit_changed = settings.get("limit") != request.eval_limit
    old_files = stored.get("data_files", {})
    changed_files = {name for name, sha in data_files.items() if name in old_files and old_files[name] != sha}
    chosen = request.subtasks(requested)
    reasons: dict[str, str] = {}
    for name in dict.fromkeys(requested + have):
        spec = get_benchmark(name)
        if name not in have:
            reasons[name] = "not evaluated yet"
        elif limit_changed:
            reasons[name] = f"eval_limit {settings.get('limit')} -> {request.eval_limit}"
        elif spec.generative and caps.get(name) != request.gen_tokens(name):
            reasons[name] = f"max_gen_tokens {caps.get(name)} -> {request.gen_tokens(name)}"
        elif name in requested and any(
            file in changed_files for sub in chosen.get(name, spec.subtasks) for file in spec.data_files(sub)
        ):
            reasons[name] = "its data files changed"
        elif name in requested and request.force:
            reasons[name] = "asked again"
    evaluate = tuple(name for name in dict.fromkeys(requested + have) if name in reasons)
    return EvalPlan(evaluate, reasons, tuple(name for name in have if name not in reasons))


def merge_results(old: Mapping | None, new: Mapping, samples_dir: Path) -> dict:
    """``new`` (an ``EvalResult`` as JSON data) over ``old``: the new benchmarks replace theirs,
    the others are kept; the latest evaluation's provenance is the top level, and
    ``settings.evaluations`` says per benchmark which evaluation produced it."""
    fresh = tuple(new["benchmarks"])
    evaluation = {
        "versions": new["versions"],
        "eval_backend": new["settings"].get("eval_backend"),
        "eval_shapes": new["settings"].get("eval_shapes"),
        "batch_size": new["settings"].get("batch_size"),
        "merged_lora": new["settings"].get("merged_lora"),
        "evaluated": files.now(),
    }
    new = json.loads(json.dumps(new))
    new["sample_files"] = {name: str(samples_dir / Path(path).name) for name, path in new["sample_files"].items()}
    new["settings"]["evaluations"] = {name: evaluation for name in fresh}
    if old is None:
        return new
    kept = [name for name in old["benchmarks"] if name not in fresh]

    def keep(mapping: Mapping) -> dict:
        return {name: value for name, value in (mapping or {}).items() if name in kept}

    merged = dict(new)
    # A benchmark evaluated again keeps its place; new ones follow.
    order = list(old["benchmarks"]) + [name for name in fresh if name not in old["benchmarks"]]
    merged["benchmarks"] = order
    for key in ("protocols", "sample_files", "flagged", "references"):
        merged[key] = keep(old.get(key)) | new.get(key, {})
    for key in ("tasks", "aggregates"):
        merged[key] = [row for name in order for row in (old if name in kept else new)[key] if row["benchmark"] == name]
    merged["data_files"] = {**old.get("data_files", {}), **new["data_files"]}
    settings = dict(new["settings"])
    old_settings = old.get("settings", {})
    for key in ("subtasks", "max_gen_tokens", "timing", "evaluations"):
        settings[key] = keep(old_settings.get(key)) | new["settings"].get(key, {})
    merged["settings"] = settings
    return merged


def without(results: Mapping, benchmarks: Sequence[str]) -> dict | None:
    """``results`` less some benchmarks; None when none is left."""
    gone = set(benchmarks)
    kept = [name for name in results["benchmarks"] if name not in gone]
    if not kept:
        return None
    data = {**results, "benchmarks": kept}
    data["tasks"] = [t for t in results["tasks"] if t["benchmark"] not in gone]
    data["aggregates"] = [a for a in results["aggregates"] if a["benchmark"] not in gone]
    for key in ("protocols", "sample_files", "flagged", "references"):
        data[key] = {k: v for k, v in (results.get(key) or {}).items() if k not in gone}
    return data


def store_evaluation(folder: Path, stored: Mapping | None, new: Mapping, pending: Path, request: EvalRequest) -> dict:
    """Commit an evaluation whose sample files are in ``pending/samples`` (module docstring)."""
    folder = Path(folder)
    samples = folder / files.SAMPLES_DIR
    merged = merge_results(stored, new, samples)
    replaced = [name for name in new["benchmarks"] if stored and name in stored["benchmarks"]]
    if replaced:
        remaining = without(stored, replaced)
        if remaining is None:
            (folder / files.RESULTS_FILE).unlink()
        else:
            files.write_results(folder, json.dumps(remaining, indent=2, sort_keys=True, allow_nan=False))
    samples.mkdir(parents=True, exist_ok=True)
    for name in new["benchmarks"]:
        written = Path(pending) / "samples" / f"{name}{files.SAMPLES_SUFFIX}"
        if written.is_file():
            os.replace(written, samples / written.name)
    files.write_results(folder, json.dumps(merged, indent=2, sort_keys=True, allow_nan=False))
    _update_config(folder, merged, request)
    _update_cost(folder, new["settings"].get("timing", {}))
    return merged


def _update_config(folder: Path, results: Mapping, request: EvalRequest) -> None:
    """config.json states what the run is now evaluated on (its run id does not change)."""
    path = folder / files.CONFIG_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    document["config"] |= {
        "benchmarks": list(results["benchmarks"]),
        "eval_limit": request.eval_limit,
        "max_gen_tokens": request.max_gen_tokens,
    }
    document["data_hashes"] = {**document.get("data_hashes", {}), **results.get("data_files", {})}
    write_json(path, document)


def _update_cost(folder: Path, timing: Mapping[str, Mapping]) -> None:
    """Each benchmark's evaluation time and speed, merged into cost.json (other sections kept)."""
    if not timing:
        return
    path = folder / files.COST_FILE
    try:
        cost = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        cost = {}
    time_section = cost.setdefault("time", {})
    throughput = cost.setdefault("throughput", {})
    time_section["eval_s"] = {**time_section.get("eval_s", {}), **{k: v["seconds"] for k, v in timing.items()}}
    throughput["eval_items_per_s"] = {
        **throughput.get("eval_items_per_s", {}), **{k: v["items_per_second"] for k, v in timing.items()}
    }
    files.write_cost(folder, cost)


@contextlib.contextmanager
def pending_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder inside the run's ``eval/`` for sample files not yet committed."""
    eval_dir = Path(folder) / files.EVAL_DIR
    eval_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pending-", dir=eval_dir) as pending:
        yield Path(pending)


@contextlib.contextmanager
def evaluation_lock(folder: Path) -> Iterator[bool]:
    """Yields whether this process may add evaluations to a finished run now: two workers adding
    benchmarks to one run at once would each write a results.json without the other's."""
    eval_dir = Path(folder) / files.EVAL_DIR
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
