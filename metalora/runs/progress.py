"""A sweep's progress, read from the store: done, running, failed and left, with an ETA.

The numbers come from the run folders (``DONE``: the source of truth, also on a network
filesystem) and the index (which worker is running what). The ETA divides what is left by the rate
at which runs finished since this sweep started, so it counts every worker, wherever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from metalora.runs.store import RunStore


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    running: int
    failed: int
    finished_now: int  # runs that became done since the sweep started
    elapsed_s: float

    @property
    def left(self) -> int:
        return self.total - self.done - self.running - self.failed

    @property
    def eta_s(self) -> float | None:
        """Seconds until every run not done is done, at the rate runs finished so far."""
        remaining = self.total - self.done - self.failed
        if remaining == 0:
            return 0.0
        if self.finished_now == 0 or self.elapsed_s <= 0:
            return None
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

    def __init__(self, store: RunStore, run_ids: Sequence[str]):
        self.store = store
        self.run_ids = tuple(dict.fromkeys(run_ids))
        self.started = time.monotonic()
        self.done_at_start = sum(store.is_done(run_id) for run_id in self.run_ids)
        self._last: tuple[int, int, int] | None = None

    def read(self) -> Progress:
        wanted = set(self.run_ids)
        done = sum(self.store.is_done(run_id) for run_id in self.run_ids)
        rows = [row for row in self.store.rows() if row.run_id in wanted and not self.store.is_done(row.run_id)]
        return Progress(
            total=len(self.run_ids),
            done=done,
            running=sum(row.status == "running" for row in rows),
            failed=sum(row.status == "failed" for row in rows),
            finished_now=done - self.done_at_start,
            elapsed_s=time.monotonic() - self.started,
        )

    def poll(self) -> str | None:
        progress = self.read()
        state = (progress.done, progress.running, progress.failed)
        if state == self._last:
            return None
        self._last = state
        return progress.line()
