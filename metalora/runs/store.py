"""The run store: one folder per run (the source of truth) and an SQLite index (for speed).

Layout of ``<store>/<run id>/``: ``config.json``, ``env.json``, ``adapter/`` (safetensors),
``training_log.jsonl``, ``checkpoint/`` (only while training), ``eval/results.json``,
``eval/samples/<benchmark>.jsonl.gz``, ``cost.json`` and ``DONE``, written last. Every file is
written atomically (``metalora.files``), so a killed process leaves whole files or none.

``RunRecord`` is the one typed reading of a run folder: the runner writes the files with the
``write_*`` functions below, ``mlbench show``, the report and the test fixtures read or write
through this module, and nothing here imports torch (the report renders without it).

The index (WAL mode) lets several sweeps share one store: a run is claimed by exactly one worker
inside an immediate transaction; a claim whose process has died (same host, pid gone) or whose
heartbeat is stale can be taken over, which is how an interrupted run resumes.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eval_tasks.records import read_records
from metalora.errors import MlbenchError
from metalora.files import storage_error, write_atomic, write_json

STORE_ENV = "MLBENCH_STORE"
DEFAULT_STORE = "runs"
STALE_AFTER_S = 6 * 3600  # a claim from another host is presumed dead after this long without a heartbeat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,          -- pending | running | done | failed
    method TEXT, model TEXT, scenario TEXT, shots TEXT, seed INTEGER, profile TEXT,
    owner TEXT, heartbeat REAL, created REAL, finished REAL,
    headline TEXT,                 -- JSON: the main metrics
    error TEXT
)
"""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None, heartbeat: float | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return heartbeat is not None and time.time() - heartbeat < STALE_AFTER_S


@dataclass(frozen=True)
class RunRow:
    run_id: str
    status: str
    method: str
    model: str
    scenario: str | None
    shots: str | None
    seed: int | None
    profile: str | None
    headline: dict
    error: str | None


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise storage_error(self.root / "index.sqlite", error) from None
        with self._connect() as db:
            self._enable_wal(db)
            db.execute(_SCHEMA)

    @staticmethod
    def _enable_wal(db: sqlite3.Connection) -> None:
        """WAL is a property of the database file, set once here rather than on every connection.
        Switching the journal mode can answer "locked" without waiting on the busy handler when
        another process opens the store at the same moment, so retry for a while."""
        deadline = time.monotonic() + 60
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        except sqlite3.OperationalError as error:
            if "disk" in str(error).lower() or "readonly" in str(error).lower():
                raise MlbenchError(f"cannot write the run index in {self.root} ({error}); check space and permissions") from None
            raise
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def is_done(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / "DONE").is_file()

    def claim(self, run_id: str, config: dict) -> bool:
        """Take the run for this process; False if it is done or another live worker has it."""
        train = config.get("train") or {}
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT status, owner, heartbeat FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if self.is_done(run_id) or (row and row[0] == "done"):
                    db.execute("COMMIT")
                    return False
                if row and row[0] == "running" and row[1] != owner_id() and _owner_alive(row[1], row[2]):
                    db.execute("COMMIT")
                    return False
                now = time.time()
                db.execute(
                    "INSERT INTO runs (run_id, status, method, model, scenario, shots, seed, profile, owner, heartbeat, created)"
                    " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(run_id) DO UPDATE SET status='running', owner=excluded.owner,"
                    " heartbeat=excluded.heartbeat, error=NULL",
                    (run_id, config.get("method"), config.get("model"), config.get("scenario"),
                     None if config.get("shots") is None else str(config.get("shots")), train.get("seed"),
                     config.get("profile"), owner_id(), now, now),
                )
                db.execute("COMMIT")
                return True
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def heartbeat(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ? AND owner = ?", (time.time(), run_id, owner_id()))

    def finish(self, run_id: str, headline: dict) -> None:
        """DONE is the last file of a run; the index row follows it."""
        write_done(self.run_dir(run_id), headline)
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status='done', finished=?, headline=?, owner=NULL WHERE run_id=?",
                (time.time(), json.dumps(headline), run_id),
            )

    def update_headline(self, run_id: str, headline: dict) -> None:
        """A finished run evaluated further: DONE keeps its finishing time, gains the new metrics."""
        folder = self.run_dir(run_id)
        done = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
        write_json(folder / DONE_FILE, {**done, "headline": dict(headline), "evaluated": now()})
        with self._connect() as db:
            db.execute("UPDATE runs SET headline=? WHERE run_id=?", (json.dumps(headline), run_id))

    def fail(self, run_id: str, error: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status='failed', error=?, owner=NULL WHERE run_id=?", (error, run_id))

    def rows(self) -> list[RunRow]:
        with self._connect() as db:
            records = db.execute(
                "SELECT run_id, status, method, model, scenario, shots, seed, profile, headline, error, owner, heartbeat"
                " FROM runs ORDER BY created"
            ).fetchall()
        rows = []
        for record in records:
            status = record[1]
            if status == "running" and not _owner_alive(record[10], record[11]):
                status = "interrupted"
            rows.append(RunRow(record[0], status, record[2], record[3], record[4], record[5], record[6], record[7],
                               json.loads(record[8]) if record[8] else {}, record[9]))
        return rows

    def find(self, prefix: str) -> str:
        matches = [row.run_id for row in self.rows() if row.run_id.startswith(prefix)]
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
            raise MlbenchError(f"{what} in {self.root} match {prefix!r}; give more of a run id from 'mlbench ls'")
        return matches[0]

    def record(self, run_id: str) -> RunRecord:
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            raise MlbenchError(f"run {run_id} has no folder in {self.root}")
        return read_run(folder)


# --- the run folder: file names, writers and the typed record --------------------------------

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
ADAPTER_DIR = "adapter"
PEFT_DIR = "adapter/peft"  # LoRA-family adapters in peft's format as well
CHECKPOINT_DIR = "checkpoint"
TRAINING_LOG_FILE = "training_log.jsonl"
EVAL_DIR = "eval"
RESULTS_FILE = "eval/results.json"
SAMPLES_DIR = "eval/samples"
COST_FILE = "cost.json"
DONE_FILE = "DONE"
SAMPLES_SUFFIX = ".jsonl.gz"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_config(
    folder: Path, run_id: str, config: Mapping, data_hashes: Mapping[str, str], data_root: str | None,
    created: str | None = None,
) -> None:
    write_json(
        folder / CONFIG_FILE,
        {"run_id": run_id, "config": dict(config), "data_hashes": dict(data_hashes), "data_root": data_root,
         "created": created or now()},
    )


def write_env(folder: Path, env: Mapping) -> None:
    write_json(folder / ENV_FILE, dict(env))


def write_training_log(folder: Path, log: Sequence[Mapping]) -> None:
    write_atomic(folder / TRAINING_LOG_FILE, "".join(json.dumps(dict(record)) + "\n" for record in log))


def write_results(folder: Path, results_json: str) -> None:
    write_atomic(folder / RESULTS_FILE, results_json)


def write_cost(folder: Path, cost: Mapping) -> None:
    write_json(folder / COST_FILE, dict(cost))


def write_done(folder: Path, headline: Mapping, finished: str | None = None) -> None:
    """DONE is the last file of a run."""
    write_json(folder / DONE_FILE, {"finished": finished or now(), "headline": dict(headline)})


@dataclass(frozen=True)
class RunRecord:
    """Everything stored for one run, read from its folder. Optional files that are missing read as
    None (or empty); files that exist but cannot be read are listed in ``problems``."""

    run_id: str
    path: Path
    created: str | None
    config: dict  # the "config" object of config.json (RunConfig.to_dict())
    data_hashes: dict[str, str]
    data_root: str | None
    env: dict
    results: dict | None  # eval/results.json (EvalResult.to_dict())
    training_log: tuple[dict, ...]
    finished: str | None  # the DONE marker's time; None while running or after a crash
    headline: dict  # from DONE: each benchmark's headline metric
    problems: tuple[str, ...]  # files that exist but could not be read
    cost: dict | None = None  # cost.json, where recorded
    error: str | None = None  # why the run failed, where recorded

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
        folder = self.path / SAMPLES_DIR
        return (
            tuple(sorted(p.name[: -len(SAMPLES_SUFFIX)] for p in folder.glob(f"*{SAMPLES_SUFFIX}")))
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
        path = self.path / SAMPLES_DIR / f"{benchmark}{SAMPLES_SUFFIX}"
        if not path.is_file():
            return [], None
        try:
            return read_records(path), None
        except (OSError, EOFError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            return [], f"{SAMPLES_DIR}/{path.name} could not be read ({reason})"


def read_run(folder: Path) -> RunRecord:
    """Raises when config.json is unusable; every other file is optional and reported if broken."""
    folder = Path(folder)
    document = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config = document["config"]
    if not isinstance(config, dict):
        raise TypeError("'config' is not an object")
    problems: list[str] = []
    env = _optional_json(folder / ENV_FILE, problems)
    results = _optional_json(folder / RESULTS_FILE, problems)
    done = _optional_json(folder / DONE_FILE, problems)
    cost = _optional_json(folder / COST_FILE, problems)
    finished = None
    if (folder / DONE_FILE).is_file():
        finished = str(done.get("finished", "")) if isinstance(done, dict) else ""
    return RunRecord(
        run_id=folder.name,
        path=folder,
        created=document.get("created"),
        config=config,
        data_hashes=dict(document.get("data_hashes") or {}),
        data_root=document.get("data_root"),
        env=env if isinstance(env, dict) else {},
        results=results if isinstance(results, dict) else None,
        training_log=_training_log(folder / TRAINING_LOG_FILE, problems),
        finished=finished,
        headline=dict(done.get("headline") or {}) if isinstance(done, dict) else {},
        problems=tuple(problems),
        cost=cost if isinstance(cost, dict) else None,
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
