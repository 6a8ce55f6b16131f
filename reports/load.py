"""Read the run store from its folders (the source of truth; the SQLite index is not needed).

A store is ``<store>/<run id>/`` folders. Anything that cannot be read is kept as a problem to
show in the report, never a crash: a half-written or hand-edited run must not hide all the others.
A run counts as finished only when its ``DONE`` marker and its ``eval/results.json`` both exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from eval_tasks.records import read_records
from metalora.errors import MlbenchError
from reports.primary import SWEEPS_FOLDER

RUN_ID = re.compile(r"^[0-9a-f]{16}$")  # also what makes a folder name safe to use in a file name


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path
    created: str | None
    config: dict  # the "config" object of config.json
    data_hashes: dict[str, str]
    env: dict
    results: dict | None  # eval/results.json (EvalResult.to_dict())
    training_log: tuple[dict, ...]
    finished: str | None  # the DONE marker's time; None while running or after a crash
    problems: tuple[str, ...]  # files that exist but could not be read

    @property
    def done(self) -> bool:
        return self.finished is not None and self.results is not None

    @property
    def status(self) -> str:
        if self.done:
            return "finished"
        if self.finished is not None:
            return "finished without results"
        return "running or incomplete"

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def seed(self) -> int | None:
        return (self.config.get("train") or {}).get("seed")

    @property
    def profile(self) -> str:
        return str(self.config.get("profile", "full"))

    def sample_benchmarks(self) -> tuple[str, ...]:
        folder = self.path / "eval" / "samples"
        suffix = ".jsonl.gz"
        return (
            tuple(sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")))
            if folder.is_dir()
            else ()
        )

    def samples(self, benchmark: str) -> list[dict]:
        """The per-sample records of one benchmark; [] when the file is missing or unreadable."""
        return self.read_samples(benchmark)[0]

    def read_samples(self, benchmark: str) -> tuple[list[dict], str | None]:
        """The records, and why they could not be read where the file exists but cannot be.

        A damaged records file (a copy cut short) or one this user may not read (another user's
        run written 0600) costs that run's sample page and paired comparisons, not the whole
        report; the reason is shown, so records are never dropped silently.
        """
        path = self.path / "eval" / "samples" / f"{benchmark}.jsonl.gz"
        if not path.is_file():
            return [], None
        try:
            return read_records(path), None
        except (OSError, EOFError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            return [], f"eval/samples/{path.name} could not be read ({reason})"


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
        if not folder.is_dir() or folder.name.startswith(".") or folder.name == SWEEPS_FOLDER:
            continue  # the SQLite index, temp folders of atomic writes, sweep declarations
        if not RUN_ID.match(folder.name):
            skipped.append(Skipped(folder.name, "not a run folder (name is not a 16-hex-digit run id)"))
            continue
        try:
            runs.append(load_run(folder))
        except (OSError, ValueError, KeyError, TypeError) as error:
            skipped.append(Skipped(folder.name, f"config.json unreadable: {error}"))
    runs.sort(key=lambda run: (run.created or "", run.run_id))
    return Store(path=path, runs=tuple(runs), skipped=tuple(skipped))


def load_run(folder: Path) -> Run:
    """Raises when config.json is unusable; every other file is optional and reported if broken."""
    document = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = document["config"]
    if not isinstance(config, dict):
        raise TypeError("'config' is not an object")
    problems: list[str] = []
    env = _optional_json(folder / "env.json", problems) or {}
    results = _optional_json(folder / "eval" / "results.json", problems)
    done = _optional_json(folder / "DONE", problems)
    finished = None
    if (folder / "DONE").is_file():
        finished = str(done.get("finished", "")) if isinstance(done, dict) else ""
    return Run(
        run_id=folder.name,
        path=folder,
        created=document.get("created"),
        config=config,
        data_hashes=dict(document.get("data_hashes") or {}),
        env=env if isinstance(env, dict) else {},
        results=results if isinstance(results, dict) else None,
        training_log=_training_log(folder / "training_log.jsonl", problems),
        finished=finished,
        problems=tuple(problems),
    )


def _optional_json(path: Path, problems: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{path.name}: {error}")
        return None


def _training_log(path: Path, problems: list[str]) -> tuple[dict, ...]:
    if not path.is_file():
        return ()
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            # The last line of a killed run can be cut short; keep the steps before it.
            problems.append(f"{path.name} line {number} is not JSON")
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return tuple(entries)
