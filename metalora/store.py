"""The run store: one folder per run (the source of truth) and an SQLite index (for speed).

Layout of ``<store>/<run id>/``: ``config.json``, ``env.json``, ``adapter/`` (safetensors),
``training_log.jsonl``, ``checkpoint/`` (only while training), ``eval/results.json``,
``eval/samples/<benchmark>.jsonl.gz`` and ``DONE``, written last. Every file is written to a
temp name and renamed, so a killed process leaves whole files or none.

The index (WAL mode) lets several sweeps share one store: a run is claimed by exactly one worker
inside an immediate transaction; a claim whose process has died (same host, pid gone) or whose
heartbeat is stale can be taken over, which is how an interrupted run resumes.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from metalora.errors import MlbenchError

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


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise _storage_error(path, error) from None


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _storage_error(path: Path, error: OSError) -> MlbenchError:
    if error.errno == errno.ENOSPC:
        return MlbenchError(f"no space left on the device holding {path}; free space or use --store on another disk")
    if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return MlbenchError(f"cannot write to {path.parent} ({error.strerror}); choose a writable --store folder")
    return MlbenchError(f"cannot write {path}: {error.strerror}")


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
            raise _storage_error(self.root / "index.sqlite", error) from None
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
        write_json(self.run_dir(run_id) / "DONE", {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "headline": headline})
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status='done', finished=?, headline=?, owner=NULL WHERE run_id=?",
                (time.time(), json.dumps(headline), run_id),
            )

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
