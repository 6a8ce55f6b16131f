"""A sweep's progress, read from the store: done, running, failed and left, with an ETA.

The numbers come from the run folders (``DONE``: the source of truth, also on a network
filesystem) and the index (which worker is running what). The ETA divides what is left by the rate
at which runs finished since this sweep started, so it counts every worker, wherever it runs.

Runs are not alike: a sweep's runs train 1,600 to 20,000 example passes, and launched sweeps start
the longest first, so counting runs would overstate the time left while the long ones finish and
understate it if they come last. Given the runs' plans (``Planned``), the ETA weighs each run by the
dry run's cost model (``metalora.runs.estimate``, from the store's finished runs, this sweep's
included): seconds estimated for the runs left, times the wall time so far per estimated second
finished. Until every run has an estimate (a method without a finished run of its own), it counts runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metalora.runs.estimate import Planned, estimate, finished_runs, measured_rates
from metalora.runs.store import RunStore


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    running: int
    failed: int
    finished_now: int  # runs that became done since the sweep started
    elapsed_s: float
    # Estimated seconds of the runs not done (nor failed) and of those finished since the sweep
    # started (module docstring); None: some run has no estimate, the ETA counts runs.
    left_cost_s: float | None = None
    finished_cost_s: float | None = None

    @property
    def left(self) -> int:
        return self.total - self.done - self.running - self.failed

    @property
    def eta_s(self) -> float | None:
        """Seconds until every run not done is done, at the rate runs (or estimated seconds) finished so far."""
        remaining = self.total - self.done - self.failed
        if remaining == 0:
            return 0.0
        if self.finished_now == 0 or self.elapsed_s <= 0:
            return None
        if self.left_cost_s is not None and self.finished_cost_s:
            return self.left_cost_s * self.elapsed_s / self.finished_cost_s
        return remaining * self.elapsed_s / self.finished_now

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} done", f"{self.running} running", f"{self.left} left"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        eta = self.eta_s
        parts.append("ETA " + ("unknown until a run finishes" if eta is None else duration(eta)))
        return "progress: " + ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


class SweepProgress:
    """Reads a sweep's state from the store; ``poll`` returns a line when it changed."""

    def __init__(self, store: RunStore, run_ids: Sequence[str], planned: Mapping[str, Planned] | None = None):
        self.store = store
        self.run_ids = tuple(dict.fromkeys(run_ids))
        self.planned = planned or {}
        self.started = time.monotonic()
        self.done_at_start = {run_id for run_id in self.run_ids if store.is_done(run_id)}
        self._last: tuple[int, int, int] | None = None
        self._costs: dict[str, float] | None = None
        self._costs_read_at: int | None = None  # runs done when the estimates were made

    def read(self) -> Progress:
        wanted = set(self.run_ids)
        done = {run_id for run_id in self.run_ids if self.store.is_done(run_id)}
        rows = [row for row in self.store.rows() if row.run_id in wanted and row.run_id not in done]
        failed = {row.run_id for row in rows if row.status == "failed"}
        costs = self._estimates(len(done))
        return Progress(
            total=len(self.run_ids),
            done=len(done),
            running=sum(row.status == "running" for row in rows),
            failed=len(failed),
            finished_now=len(done - self.done_at_start),
            elapsed_s=time.monotonic() - self.started,
            left_cost_s=None if costs is None else sum(
                costs[run_id] for run_id in self.run_ids if run_id not in done and run_id not in failed),
            finished_cost_s=None if costs is None else sum(costs[run_id] for run_id in done - self.done_at_start),
        )

    def _estimates(self, done: int) -> dict[str, float] | None:
        """Each run's estimated seconds, or None while some run has none; made again when more runs
        are done (their times refine the rates)."""
        if not self.planned or any(run_id not in self.planned for run_id in self.run_ids):
            return None
        if self._costs_read_at != done:
            found = estimate([self.planned[run_id] for run_id in self.run_ids],
                             measured_rates(finished_runs(self.store.root)))
            seconds = [run.seconds for run in found.runs]
            self._costs = None if None in seconds else dict(zip(self.run_ids, seconds, strict=True))
            self._costs_read_at = done
        return self._costs

    def poll(self) -> str | None:
        progress = self.read()
        state = (progress.done, progress.running, progress.failed)
        if state == self._last:
            return None
        self._last = state
        return progress.line()
