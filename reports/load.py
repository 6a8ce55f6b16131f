"""Read the run store from its folders (the source of truth; the SQLite index is not needed).

A store is ``<store>/<run id>/`` folders. Anything that cannot be read is kept as a problem to
show in the report, never a crash: a half-written or hand-edited run must not hide all the others.
A run counts as finished only when its ``DONE`` marker and its ``eval/results.json`` both exist.
Each run is read as the store's ``RunRecord`` (``metalora/runs/store.py``), the one reading of a run
folder shared with ``mlbench show``; nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.store import RunRecord, read_run
from reports.primary import SWEEPS_FOLDER

# Folders of a store that are not runs: sweep declarations, and the Markdown tables of a published
# store (reports/publish.py).
NOT_RUNS = frozenset({SWEEPS_FOLDER, "tables"})
RUN_ID = re.compile(r"^[0-9a-f]{16}$")  # also what makes a folder name safe to use in a file name


Run = RunRecord  # the report's name for the store's typed run record


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class Store:
    path: Path
    runs: tuple[Run, ...]  # every readable run, finished or not, by creation time
    skipped: tuple[Skipped, ...]  # run folders that could not be read at all

    @property
    def finished(self) -> tuple[Run, ...]:
        return tuple(run for run in self.runs if run.done)


def load_store(path: Path) -> Store:
    path = Path(path)
    if not path.is_dir():
        raise MlbenchError(
            f"run store {path} does not exist or is not a folder; pass --store with the folder of your runs"
        )
    runs, skipped = [], []
    for folder in sorted(path.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in NOT_RUNS:
            continue  # the SQLite index, temp folders of atomic writes, sweep declarations
        if not RUN_ID.match(folder.name):
            skipped.append(Skipped(folder.name, "not a run folder (name is not a 16-hex-digit run id)"))
            continue
        try:
            runs.append(read_run(folder))
        except (OSError, ValueError, KeyError, TypeError) as error:
            skipped.append(Skipped(folder.name, f"config.json unreadable: {error}"))
    runs.sort(key=lambda run: (run.created or "", run.run_id))
    return Store(path=path, runs=tuple(runs), skipped=tuple(skipped))
