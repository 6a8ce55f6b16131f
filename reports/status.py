"""A run's status in the words ``mlbench ls`` and ``show`` use: done, failed, running, interrupted.

The folders are the source of truth for what finished: a run with ``DONE`` and results is done
whatever the index says, and a run whose folder records a failure reason failed. For the others
the store's index tells a live run ("running", its worker is alive) from one whose worker died
("interrupted"); without an index entry such a run reads "interrupted" too, since nothing is
running it. A failed run shows its one-line reason.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.store import RunStore
from reports.load import Run

DONE, FAILED, RUNNING, INTERRUPTED = "done", "failed", "running", "interrupted"
FROM_INDEX = (RUNNING, INTERRUPTED, FAILED, "pending")


@dataclass(frozen=True)
class Status:
    name: str  # one of the store's status values
    reason: str = ""  # why a failed run failed, or what is odd about a done one

    @property
    def text(self) -> str:
        return f"{self.name}: {self.reason}" if self.reason else self.name


def index_statuses(store: Path) -> dict[str, tuple[str, str | None]]:
    """Run id -> (status, error) as ``mlbench ls`` reads them (claims and marker files, the index
    rebuilt where damaged); empty when the store cannot be read that way: the folders then decide."""
    try:
        return {row.run_id: (row.status, row.error) for row in RunStore(store, create=False).rows()}
    except (MlbenchError, sqlite3.Error, OSError):
        return {}


def run_status(run: Run, index: tuple[str, str | None] | None = None) -> Status:
    """``index`` is the store index's (status, error) for the run, where it has one."""
    if run.done:
        return Status(DONE)
    if run.finished is not None:
        return Status(DONE, "DONE is written but eval/results.json is missing or unreadable")
    error = run.error or (index[1] if index and index[0] == FAILED else None)
    if error:
        return Status(FAILED, " ".join(str(error).split()))
    if index and index[0] in FROM_INDEX:
        return Status(index[0])
    return Status(INTERRUPTED)
