"""What ``mlbench run`` and ``mlbench sweep`` print while a run executes, and the summary after it.

A few lines per run: the run and its setting, model load, training (a bar with ETA on a terminal,
one line with steps, time and loss when done), evaluation per benchmark (a bar across benchmarks on
a terminal, one line per benchmark with items and items/s), then a compact summary read from the
run folder: run id, method/shots/seed/profile, the headline metrics with standard errors, the
durations and where the run and its log are stored. Third-party output is not here: it goes to the
run's log file (``metalora.chatter``).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_FILE = "run.log"  # third-party output of the run, in its folder


def seconds(value: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``: durations as people read them."""
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``: counts in messages read as English."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"


def describe(config) -> str:
    """``metalora, shots 10, seed 0, inner_steps=5, variant=full, quick profile``: the method's own
    options are named (ablations differ only in them); the base model has no shots or seed."""
    if not config.trains:
        return f"base model {config.model}, {config.profile} profile"
    given = "".join(f", {key}={value}" for key, value in config.method_options.items())
    return f"{config.method}, shots {config.shots}, seed {config.train.seed}{given}, {config.profile} profile"


class RunProgress:
    """Callbacks for ``execute_run``: the runner's report lines, training steps and benchmarks.
    Bars are drawn only on a terminal and vanish when their part ends; the lines stay."""

    def __init__(self, out: Console):
        self.out = out
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()
        self._mark = self._started
        self._progress: Progress | None = None
        self._task = None
        self._losses: list[float] = []
        self._first_step: int | None = None
        self._benchmarks: list[str] = []

    def line(self, text: str) -> None:
        self.out.print("  " + text, highlight=False, markup=False)

    # --- runner callbacks ---
    def report(self, text: str) -> None:
        if self._first_step is not None and "training_s" not in self.timings:
            self._end_training()
        if text.startswith("model loaded"):
            self.timings["model_load_s"] = time.perf_counter() - self._mark
        self.line(text)
        self._mark = time.perf_counter()

    def on_step(self, record: dict, total: int) -> None:
        if self._first_step is None:
            self._first_step = record["step"]
            self._start_bar(
                "training", total or None,
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                loss="-",
            )
            # The bar appears at the first step; its ETA counts from when training started.
            self._progress.reset(self._task, start=True, completed=record["step"] - 1, total=total or None)
            self._training_started = self._mark
        loss = record.get("loss")
        if loss is not None:
            self._losses.append(loss)
        self._steps = record["step"]
        self._progress.update(self._task, completed=record["step"], loss="-" if loss is None else f"{loss:.4f}")

    def on_benchmark(self, name: str, timing: dict | None) -> None:
        """Called with ``timing`` None when ``name`` starts, with its timing when it is done."""
        if timing is None:
            if self._first_step is not None and "training_s" not in self.timings:
                self._end_training()
            if self._progress is None:
                self._start_bar("evaluating", len(self._benchmarks) or None, TextColumn("{task.description}"),
                                BarColumn(), MofNCompleteColumn(), TextColumn("benchmarks"), TimeElapsedColumn())
            self._progress.update(self._task, description=f"evaluating {name}")
            return
        self.timings.setdefault("eval_s", 0.0)
        self.timings["eval_s"] += timing["seconds"]
        rate = timing.get("items_per_second")
        self._progress.advance(self._task)
        self._progress.console.print(
            f"  {name}: {plural(timing['items'], 'item')} in {seconds(timing['seconds'])}"
            + (f" ({rate:.1f} items/s)" if rate else ""), highlight=False, markup=False,
        )

    def expect_benchmarks(self, names) -> None:
        self._benchmarks = list(names)

    # --- bars ---
    def _start_bar(self, description: str, total, *columns, **fields) -> None:
        self._stop_bar()
        # rich would send sys.stdout/stderr through the bar's console: they stay with the log.
        self._progress = Progress(*columns, console=self.out, disable=not self.out.is_terminal, transient=True,
                                  redirect_stdout=False, redirect_stderr=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, **fields)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _end_training(self) -> None:
        self._stop_bar()
        took = time.perf_counter() - self._training_started
        self.timings["training_s"] = took
        loss = f", loss {self._losses[0]:.4f} -> {self._losses[-1]:.4f}" if self._losses else ""
        resumed = f" (resumed after step {self._first_step - 1})" if self._first_step and self._first_step > 1 else ""
        self.line(f"training: {plural(self._steps, 'step')} in {seconds(took)}{loss}{resumed}")

    def close(self) -> None:
        if self._first_step is not None and "training_s" not in self.timings:
            self._end_training()
        self._stop_bar()
        self.timings["total_s"] = time.perf_counter() - self._started


def summary(record, timings: dict[str, float], log: Path | None) -> list[str]:
    """The lines after a run: what it was, its headline metrics with standard errors, how long it
    took and where it is stored."""
    from eval_tasks.registry import get_benchmark
    from metalora.runs.profiles import PROFILES

    config = record.config
    train = config.get("train") or {}
    profile = config.get("profile", "full")
    comparable = "" if PROFILES.get(profile) is None or PROFILES[profile].comparable else \
        " (not comparable with the full protocol)"
    if config.get("method") == "base":
        what = f"base model, {profile} profile{comparable}"
    else:
        what = f"{config.get('method')}, shots {config.get('shots')}, seed {train.get('seed')}, {profile} profile{comparable}"
    lines = [f"run {record.run_id}: {'done' if record.done else record.status}", f"  {what}; model {config.get('model')}"]
    results = record.results or {}
    rows = []
    for benchmark in results.get("benchmarks", []):
        primary = get_benchmark(benchmark).metrics[0]
        for aggregate in results.get("aggregates", []):
            if aggregate["benchmark"] == benchmark and aggregate["name"] == "macro" and aggregate["metric"] == primary:
                error = aggregate.get("stderr")
                spread = f"± {error:.4f}" if error is not None else "(no standard error: one item per task)"
                rows.append((benchmark, primary, f"{aggregate['value']:.4f}", spread,
                             f"{plural(aggregate['n_items'], 'item')}, {plural(aggregate['n_tasks'], 'task')}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else []
    for row in rows:
        lines.append(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}} {row[3]}  ({row[4]})")
    timings = dict(timings) or _recorded_time(record.cost)
    parts = [(key, label) for key, label in (("model_load_s", "model load"), ("training_s", "training"),
                                              ("eval_s", "evaluation"), ("total_s", "total"))]
    said = [f"{label} {seconds(_total(timings[key]))}" for key, label in parts if timings.get(key) is not None]
    if said:
        lines.append("  time: " + ", ".join(said))
    where = f"  stored in {record.path}"
    if log is not None and log.is_file():
        where += f" (third-party output: {log.name})"
    lines.append(where + f"; details: mlbench show {record.run_id[:8]}")
    return lines


def _total(value) -> float:
    return sum(value.values()) if isinstance(value, dict) else float(value)


def _recorded_time(cost) -> dict:
    """The durations a run's cost.json recorded (a run finished earlier), or nothing."""
    recorded = cost.get("time") if isinstance(cost, dict) else None
    return {k: v for k, v in recorded.items() if isinstance(v, (int, float, dict))} if isinstance(recorded, dict) else {}


def estimate_line(estimate, workers: int = 1) -> str:
    """One line for a dry run: the run time of the runs to do (``metalora.runs.estimate``: the rest
    of a run plus its example passes at the finished runs' seconds per pass), which have no record,
    and with several workers the wall time that comes to."""
    count = len(estimate.runs)
    if not count:
        return "nothing to run"
    missing = estimate.missing
    named = ", ".join(list(missing)[:4]) + (", ..." if len(missing) > 4 else "")
    if not estimate.estimated:
        return (f"estimated duration: none recorded for {plural(count, 'run')} (no finished run in this store with "
                f"the same method, profile, model, benchmarks and eval_limit has cost.json times: {named})")
    line = (f"estimated duration: {seconds(estimate.total_s)} of run time for {plural(estimate.estimated, 'run')}"
            + (f" of {count:,}" if missing else "")
            + " (training scaled by each run's example passes from the finished runs' seconds per pass; "
              "evaluation and load from their median per method)")
    if missing:
        line += f"; none recorded for {plural(sum(missing.values()), 'run')} ({named})"
    if workers > 1:
        line += (f"; with {workers} workers about {seconds(estimate.wall_s(workers))} of wall time, if the finished "
                 "runs ran with as many workers per GPU")
    return line


def ignored_options_lines(runs) -> list[str]:
    """For a sweep's dry run: each option of one method that runs of other methods carry and
    ignore (a grid may mix methods), with how many runs of which methods ignore it."""
    from metalora.methods import method_name
    from metalora.runs.runconfig import foreign_method_options

    ignored: dict[str, dict[str, int]] = {}
    owners: dict[str, tuple[str, ...]] = {}
    for options in runs:
        for key, methods in foreign_method_options(options).items():
            method = method_name(options.get("method") or "metalora")
            ignored.setdefault(key, {})
            ignored[key][method] = ignored[key].get(method, 0) + 1
            owners[key] = methods
    return [
        f"{key} ({' and '.join(owners[key])} only) is ignored by "
        + ", ".join(f"{plural(count, method + ' run')}" for method, count in by_method.items())
        for key, by_method in sorted(ignored.items())
    ]
