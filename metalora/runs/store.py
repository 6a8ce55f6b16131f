"""The run store: one folder per run (the source of truth) and an SQLite index (a cache for speed).

Layout of ``<store>/<run id>/``: ``config.json``, ``env.json``, ``adapter/`` (safetensors),
``training_log.jsonl``, ``checkpoint/`` (only while training), ``eval/results.json``,
``eval/samples/<benchmark>.jsonl.gz``, ``cost.json``, ``DONE`` (written last), ``FAILED`` (why a
run failed, one line) and ``CLAIM`` (the worker running it). Every file is written atomically
(``metalora.files``), so a killed process leaves whole files or none.

``RunRecord`` is the one typed reading of a run folder: the runner writes the files with the
``write_*`` functions below, ``mlbench show``, the report and the test fixtures read or write
through this module, and nothing here imports torch (the report renders without it).

Claims live in the run folder, not in SQLite (whose locking is not trustworthy on network file
systems): ``CLAIM`` is created whole by a hard link, which fails when the file exists, so exactly
one worker holds a run. It names the host, the pid and the process's start time (so a live
unrelated process that reuses the pid is not taken for the worker), and its modification time is
the heartbeat, refreshed every ``HEARTBEAT_S`` while the run goes on. A claim whose process is gone
(same host), or whose heartbeat is older than ``STALE_AFTER_S`` (any host: a killed machine, a
frozen process), is stale and is taken over, by one worker only (an exclusive takeover marker).

The index is verified when a store is opened (``PRAGMA quick_check`` and the table's columns); a
damaged, truncated or deleted index is rebuilt from the folders, and every listing reconciles it
with the folders (a deleted folder drops its row, a removed ``DONE`` makes the run redoable). The
status words are those of ``mlbench ls``, ``show`` and the report: done, failed, running,
interrupted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eval_tasks.records import read_records
from metalora.errors import MlbenchError
from metalora.files import storage_error, write_atomic, write_json
from metalora.jsonlines import all_objects

STORE_ENV = "MLBENCH_STORE"
DEFAULT_STORE = "runs"
INDEX_FILE = "index.sqlite"
RUN_ID = re.compile(r"^[0-9a-f]{16}$")  # a run id; also what makes a name safe to use as a path
HEARTBEAT_S = 30.0  # how often a running worker touches its claim
STALE_AFTER_S = 900.0  # a claim without a heartbeat for this long is taken over (15 min: clocks of hosts differ)
DONE, FAILED, RUNNING, INTERRUPTED = "done", "failed", "running", "interrupted"

_COLUMNS = ("run_id", "status", "method", "model", "scenario", "shots", "seed", "profile", "owner", "heartbeat",
            "created", "finished", "headline", "error")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,          -- done | failed | running (a cache: the folder decides)
    method TEXT, model TEXT, scenario TEXT, shots TEXT, seed INTEGER, profile TEXT,
    owner TEXT, heartbeat REAL, created REAL, finished REAL,
    headline TEXT,                 -- JSON: the main metrics
    error TEXT
)
"""


def check_run_id(run_id: str) -> str:
    """A run id is 16 hex digits; anything else (``../``, a slash) is never used as a path."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise MlbenchError(f"{run_id!r} is not a run id (16 hex digits, as 'mlbench ls' lists them)")
    return run_id


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); None
    where /proc is missing or the process is gone. With the pid it names one process for good."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


@dataclass(frozen=True)
class Claim:
    """Who runs a run: read from its ``CLAIM`` file; ``heartbeat`` is the file's modification time."""

    host: str | None
    pid: int | None
    start: str | None
    token: str
    heartbeat: float

    @property
    def ours(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid() and self.start == process_start(os.getpid())

    def alive(self, now: float | None = None) -> bool:
        if (now or time.time()) - self.heartbeat > STALE_AFTER_S:
            return False
        if self.host == socket.gethostname() and isinstance(self.pid, int):
            if not _pid_exists(self.pid):
                return False
            running = process_start(self.pid)
            if self.start is not None and running is not None and running != self.start:
                return False  # the pid now belongs to another process
        return True

    def describe(self) -> str:
        ago = max(0, int(time.time() - self.heartbeat))
        return f"{self.host}:{self.pid}, last heartbeat {ago} s ago"


def read_claim(folder: Path) -> Claim | None:
    path = Path(folder) / CLAIM_FILE
    try:
        stat = path.stat()
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}  # a damaged claim still has a heartbeat: its age decides
        try:
            stat = path.stat()
        except OSError:
            return None
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return Claim(
        host=data.get("host") if isinstance(data.get("host"), str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        start=data.get("start") if isinstance(data.get("start"), str) else None,
        token=str(data.get("token") or f"inode-{stat.st_ino}-{stat.st_mtime_ns}"),
        heartbeat=stat.st_mtime,
    )


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` whole, or return False when it exists. A hard link of a
    finished temporary file is atomic on local and network file systems (O_EXCL is not on old NFS)."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write_atomic(temp, text)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise storage_error(path, error) from None
        try:  # a file system without hard links
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        return True
    finally:
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    status: str  # done | failed | running | interrupted
    method: str
    model: str
    scenario: str | None
    shots: str | None
    seed: int | None
    profile: str | None
    headline: dict
    error: str | None


class RunStore:
    """``create=False`` opens an existing store for reading (``ls``, ``show``, the report): a
    missing folder is an error, never created; a store that cannot be written is still read, and a
    store without an index (a published one) is listed from its folders without creating one."""

    def __init__(self, root: str | os.PathLike | None = None, *, create: bool = True):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()
        if not create:
            if not self.root.is_dir():
                raise MlbenchError(
                    f"run store {self.root} does not exist or is not a folder; pass --store with the folder of your runs"
                )
            self._open_index(required=False)
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise storage_error(self.root / INDEX_FILE, error) from None
        self._open_index(required=True)

    # --- the index ------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def _open_index(self, required: bool) -> None:
        """Verify the index (or create it); a damaged one is rebuilt from the folders. A reader that
        cannot write keeps going without it (``self.indexed`` False): the folders answer."""
        self.indexed = True
        try:
            if self.index_path.exists() and self._index_sound():
                with self._connect() as db:
                    self._enable_wal(db)
                    db.execute(_SCHEMA)
            elif self.index_path.exists() or (required and self._run_folders()):
                self.rebuild()  # damaged, or deleted while runs exist (a reader lists the folders instead)
            elif required:
                with self._connect() as db:
                    self._enable_wal(db)
                    db.execute(_SCHEMA)
            else:
                self.indexed = False  # nothing to index, and a reader creates nothing
        except (sqlite3.Error, OSError, MlbenchError) as error:
            if required:
                if isinstance(error, MlbenchError):
                    raise
                raise MlbenchError(f"cannot write the run index {self.index_path} ({error}); check space and permissions") from None
            self.indexed = False

    def _index_sound(self) -> bool:
        try:
            db = sqlite3.connect(self.index_path, timeout=60)
            try:
                db.execute("PRAGMA busy_timeout=60000")
                if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                    return False
                columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                db.close()
        except sqlite3.OperationalError as error:
            # busy or not writable is not damaged: the connection that follows says more
            return any(word in str(error) for word in ("locked", "unable to open", "readonly"))
        except sqlite3.DatabaseError:
            return False  # "file is not a database", "database disk image is malformed"
        return not tables or ("runs" in tables and set(_COLUMNS) <= columns)

    def rebuild(self) -> int:
        """Write a new index from the run folders and put it in place of the old one (kept as
        ``index.sqlite.damaged`` when it was unreadable). Returns the number of runs indexed."""
        rows = [self._folder_row(folder) for folder in self._run_folders()]
        fresh = self.root / f".{INDEX_FILE}.rebuild-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            db = sqlite3.connect(fresh, isolation_level=None)
            try:
                db.execute(_SCHEMA)
                db.execute("BEGIN")
                db.executemany(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
                db.execute("COMMIT")
            finally:
                db.close()
            if self.index_path.exists() and not self._index_sound():
                os.replace(self.index_path, self.root / f"{INDEX_FILE}.damaged")
            for suffix in ("-wal", "-shm", "-journal"):  # a stale log must never be replayed onto the new file
                (self.root / f"{INDEX_FILE}{suffix}").unlink(missing_ok=True)
            os.replace(fresh, self.index_path)
        except sqlite3.Error as error:
            raise MlbenchError(f"cannot write the run index {self.index_path} ({error}); check space and permissions") from None
        except OSError as error:
            raise storage_error(self.index_path, error) from None
        finally:
            fresh.unlink(missing_ok=True)
        with self._connect() as db:
            self._enable_wal(db)
        self.indexed = True
        return len(rows)

    def _run_folders(self) -> list[Path]:
        return [self.root / name for name in self._run_ids()]

    def _run_ids(self) -> list[str]:
        """The names of the store's run folders (only names that are run ids), sorted."""
        try:
            entries = list(os.scandir(self.root))
        except OSError as error:
            raise MlbenchError(f"cannot read the run store {self.root} ({error.strerror})") from None
        return sorted(e.name for e in entries if RUN_ID.match(e.name) and e.is_dir(follow_symlinks=False))

    def _folder_row(self, folder: Path) -> tuple:
        """An index row read from a run folder (what a rebuild writes)."""
        document = read_json_or_none(folder / CONFIG_FILE)
        config = document.get("config") if isinstance(document, dict) else None
        config = config if isinstance(config, dict) else {}
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        done = read_json_or_none(folder / DONE_FILE)
        failed = read_json_or_none(folder / FAILED_FILE)
        status = DONE if (folder / DONE_FILE).is_file() else FAILED if (folder / FAILED_FILE).is_file() else RUNNING
        headline = done.get("headline") if isinstance(done, dict) and isinstance(done.get("headline"), dict) else {}
        error = failed.get("error") if isinstance(failed, dict) else None
        try:
            created = (folder / CONFIG_FILE).stat().st_mtime
        except OSError:
            created = folder.stat().st_mtime
        shots = config.get("shots")
        seed = train.get("seed")
        return (folder.name, status, _text(config.get("method")), _text(config.get("model")),
                _text(config.get("scenario")), None if shots is None else str(shots),
                seed if isinstance(seed, int) and not isinstance(seed, bool) else None, _text(config.get("profile")),
                None, None, created, None, json.dumps(headline), _text(error) if status == FAILED else None)

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
        db = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        except sqlite3.OperationalError as error:
            if "disk" in str(error).lower() or "readonly" in str(error).lower():
                raise MlbenchError(f"cannot write the run index in {self.root} ({error}); check space and permissions") from None
            raise
        finally:
            db.close()

    def _index_write(self, sql: str, parameters: tuple) -> None:
        """Keep the index in step with a folder change. The folder already says it all, so an index
        that cannot be written (damaged meanwhile, read-only) is rebuilt later, not an error now."""
        if not self.indexed:
            return
        try:
            with self._connect() as db:
                db.execute(sql, parameters)
        except (sqlite3.Error, MlbenchError):
            self.indexed = False

    # --- runs -----------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def is_done(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / DONE_FILE).is_file()

    def holder(self, run_id: str) -> Claim | None:
        """The live claim of another worker on the run, if any."""
        claim = read_claim(self.run_dir(run_id))
        return claim if claim is not None and not claim.ours and claim.alive() else None

    def claim(self, run_id: str, config: dict) -> bool:
        """Take the run for this process; False if it is done or another live worker has it."""
        folder = self.run_dir(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(folder / CLAIM_FILE, error) from None
        if self.is_done(run_id):
            return False
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
                           "token": uuid.uuid4().hex, "claimed": now()})
        if not _create_exclusive(folder / CLAIM_FILE, mine):
            current = read_claim(folder)
            if current is not None and current.ours:
                self.heartbeat(run_id)
            elif (current is not None and current.alive()) or not self._take_over(folder, current, mine):
                return False
        if self.is_done(run_id):  # finished between the first look and the claim
            self.release(run_id)
            return False
        (folder / FAILED_FILE).unlink(missing_ok=True)  # a new attempt
        train = config.get("train") or {}
        stamp = time.time()
        self._index_write(
            "INSERT INTO runs (run_id, status, method, model, scenario, shots, seed, profile, owner, heartbeat, created)"
            " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            # A row may exist without the config: an index rebuilt while the folder held only a
            # claim. The claimer knows the config, so it fills the row in (else ls shows blanks).
            " ON CONFLICT(run_id) DO UPDATE SET status='running', owner=excluded.owner,"
            " heartbeat=excluded.heartbeat, error=NULL, "
            + ", ".join(f"{c}=COALESCE(runs.{c}, excluded.{c})" for c in ("method", "model", "scenario", "shots",
                                                                         "seed", "profile")),
            (run_id, config.get("method"), config.get("model"), config.get("scenario"),
             None if config.get("shots") is None else str(config.get("shots")), train.get("seed"),
             config.get("profile"), f"{socket.gethostname()}:{os.getpid()}", stamp, stamp),
        )
        return True

    @staticmethod
    def _take_over(folder: Path, stale: Claim | None, mine: str) -> bool:
        """Replace a stale claim; of several workers doing so at once exactly one wins: the one that
        creates the takeover marker of that claim's token, and only while the claim is still that one."""
        if stale is None:  # it went away meanwhile: an ordinary claim
            return _create_exclusive(folder / CLAIM_FILE, mine)
        marker = folder / f".{CLAIM_FILE}.takeover-{stale.token}"
        if not _create_exclusive(marker, ""):
            return False
        try:
            current = read_claim(folder)
            if current is not None:
                if current.token != stale.token:
                    return False  # claimed afresh in between
                (folder / CLAIM_FILE).unlink(missing_ok=True)
            return _create_exclusive(folder / CLAIM_FILE, mine)
        finally:
            marker.unlink(missing_ok=True)

    def heartbeat(self, run_id: str) -> bool:
        """Refresh this worker's claim; False when the claim is no longer its own (taken over)."""
        path = self.run_dir(run_id) / CLAIM_FILE
        claim = read_claim(path.parent)
        if claim is None or not claim.ours:
            return False
        stamp = time.time()
        try:
            os.utime(path, (stamp, stamp))
        except OSError:
            return False
        return True

    @contextmanager
    def holding(self, run_id: str, every: float = HEARTBEAT_S) -> Iterator[None]:
        """Heartbeat the claim from a background thread while the block runs (training, loading and
        evaluation alike), so only a dead or frozen worker's claim ever goes stale."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                self.heartbeat(run_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self, run_id: str) -> None:
        """Give the claim up (an interrupted run stays resumable); only this worker's own."""
        folder = self.run_dir(run_id)
        claim = read_claim(folder)
        if claim is not None and claim.ours:
            (folder / CLAIM_FILE).unlink(missing_ok=True)

    def finish(self, run_id: str, headline: dict) -> None:
        """DONE is the last file of a run; the index row follows it. A worker whose claim was taken
        over (it was frozen past the stale time) does not write DONE: the other worker's run counts."""
        claim = read_claim(self.run_dir(run_id))
        if claim is not None and not claim.ours:
            raise MlbenchError(f"run {run_id} was taken over by another worker ({claim.describe()}) while this one "
                               f"was stalled; its result is the one kept")
        write_done(self.run_dir(run_id), headline)
        self.release(run_id)
        self._index_write(
            "UPDATE runs SET status='done', finished=?, headline=?, owner=NULL, error=NULL WHERE run_id=?",
            (time.time(), json.dumps(headline), run_id),
        )

    def update_headline(self, run_id: str, headline: dict) -> None:
        """A finished run evaluated further: DONE keeps its finishing time, gains the new metrics."""
        folder = self.run_dir(run_id)
        done = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
        write_json(folder / DONE_FILE, {**done, "headline": dict(headline), "evaluated": now()})
        self._index_write("UPDATE runs SET headline=? WHERE run_id=?", (json.dumps(headline), run_id))

    def fail(self, run_id: str, error: str) -> None:
        """Record why the run failed (one line, in the folder and the index) and give the claim up."""
        folder = self.run_dir(run_id)
        claim = read_claim(folder)
        if claim is not None and not claim.ours:
            return  # another worker has taken it over; its outcome is the one recorded
        reason = " ".join(str(error).split())
        write_failed(folder, reason)
        self.release(run_id)
        self._index_write("UPDATE runs SET status='failed', error=?, owner=NULL WHERE run_id=?", (reason, run_id))

    def rows(self) -> list[RunRow]:
        """Every run, its status read from its folder; the index supplies the rest and is brought in
        step with the folders on the way (rows of deleted folders dropped, new folders added)."""
        root = str(self.root)
        folders = {run_id: os.path.join(root, run_id) for run_id in self._run_ids()}  # str: cheaper than Path
        indexed: dict[str, tuple] = {}
        if self.indexed:
            try:
                with self._connect() as db:
                    for record in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs"):
                        indexed[record[0]] = record
            except (sqlite3.Error, MlbenchError):
                self.indexed = False
                indexed = {}
        missing = [Path(folders[run_id]) for run_id in folders if run_id not in indexed]
        added = [self._folder_row(folder) for folder in missing]
        indexed.update((row[0], row) for row in added)
        gone = [run_id for run_id in indexed if run_id not in folders]  # also any id that is not a run id
        if self.indexed and (added or gone):
            try:
                with self._connect() as db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES "
                                   f"({', '.join('?' * len(_COLUMNS))})", added)
                    db.executemany("DELETE FROM runs WHERE run_id = ?", [(run_id,) for run_id in gone])
                    db.execute("COMMIT")
            except (sqlite3.Error, MlbenchError):
                self.indexed = False
        rows = []
        for run_id, record in sorted(((k, v) for k, v in indexed.items() if k in folders),
                                     key=lambda item: (item[1][10] or 0, item[0])):
            status, headline, error = self._folder_status(folders[run_id], record)
            rows.append(RunRow(run_id, status, record[2], record[3], record[4], record[5], record[6], record[7],
                               headline, error))
        return rows

    def _folder_status(self, folder: Path | str, record: tuple) -> tuple[str, dict, str | None]:
        """(status, headline, error) from the folder's marker files; the index row where it agrees."""
        if os.path.isfile(os.path.join(folder, DONE_FILE)):  # one stat per run: ls lists thousands
            headline = _json_object(record[12])
            folder = Path(folder)
            if record[1] != DONE:  # finished but the index missed it: read DONE, mend the row
                done = read_json_or_none(folder / DONE_FILE)
                headline = done.get("headline") if isinstance(done, dict) and isinstance(done.get("headline"), dict) else {}
                self._index_write("UPDATE runs SET status='done', headline=?, error=NULL WHERE run_id=?",
                                  (json.dumps(headline), folder.name))
            return DONE, headline, None
        folder = Path(folder)
        if (folder / FAILED_FILE).is_file():
            failed = read_json_or_none(folder / FAILED_FILE)
            error = _text(failed.get("error")) if isinstance(failed, dict) else None
            return FAILED, {}, error or record[13] or "the FAILED file is damaged; the reason is lost"
        if record[1] == DONE:  # DONE was removed: the run is to be done again
            self._index_write("UPDATE runs SET status='running', headline=NULL WHERE run_id=?", (folder.name,))
        claim = read_claim(folder)
        if claim is not None and claim.alive():
            return RUNNING, {}, None
        if record[1] == FAILED and record[13]:  # a store from before FAILED files: the index kept the reason
            return FAILED, {}, record[13]
        return INTERRUPTED, {}, None

    def status(self, run_id: str) -> tuple[str, str | None]:
        """(status, failure reason) of one run, in ``mlbench ls``'s words."""
        folder = self.run_dir(run_id)
        status, _, error = self._folder_status(folder, (run_id, None) + (None,) * (len(_COLUMNS) - 2))
        return status, error

    def find(self, prefix: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{1,16}", prefix or ""):
            raise MlbenchError(f"{prefix!r} is not a run id or a prefix of one (hex digits, as 'mlbench ls' lists them)")
        matches = [run_id for run_id in self._run_ids() if run_id.startswith(prefix)]
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
            raise MlbenchError(f"{what} in {self.root} match {prefix!r}; give more of a run id from 'mlbench ls'")
        return matches[0]

    def record(self, run_id: str) -> RunRecord:
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            raise MlbenchError(f"run {run_id} has no folder in {self.root}")
        try:
            return read_run(folder)
        except (OSError, ValueError, KeyError, TypeError) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise MlbenchError(f"run {run_id}: {folder / CONFIG_FILE} is damaged or missing ({detail}); "
                               f"'mlbench rm {run_id}' removes the run") from None

    def discard(self, run_id: str) -> None:
        """Delete a run this worker claimed that failed before doing any work (no training step, no
        evaluation): a failure of its setting, not of a run, so the store keeps nothing of it (no
        folder, no index row). Another worker's claim is left alone."""
        folder = self.run_dir(run_id)
        claim = read_claim(folder)
        if claim is not None and not claim.ours:
            return
        if folder.is_dir():
            self.remove(run_id)

    def remove(self, run_id: str) -> None:
        """Delete a run's folder and its index row. The folder is first renamed to a hidden name, so
        an interrupted delete never leaves something that looks like a run."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            raise MlbenchError(f"run {run_id} has no folder in {self.root}")
        claim = self.holder(run_id)
        if claim is not None:
            raise MlbenchError(f"run {run_id} is running ({claim.describe()}); stop that worker first")
        trash = self.root / f".deleting-{run_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except OSError as error:
            raise MlbenchError(f"cannot delete {folder} ({error.strerror}); check permissions") from None
        shutil.rmtree(trash, ignore_errors=True)
        self._index_write("DELETE FROM runs WHERE run_id = ?", (run_id,))


def read_json_or_none(path: Path):
    """A JSON file's value, or None when it is missing or unreadable (a run folder being written)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_object(text) -> dict:
    if text in (None, "", "{}"):
        return {}
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value) -> str | None:
    return None if value is None else str(value)


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
FAILED_FILE = "FAILED"
# Written by ``mlbench publish`` into each run it copies into a committable results folder
# (reports/publish.py): the report marks such runs as published, wherever the folder is read from.
PUBLISHED_FILE = "PUBLISHED"
CLAIM_FILE = "CLAIM"
SAMPLES_SUFFIX = ".jsonl.gz"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_config(
    folder: Path, run_id: str, config: Mapping, data_hashes: Mapping[str, str], data_root: str | None,
    created: str | None = None, differs_from_defaults: Mapping | None = None,
) -> None:
    """``differs_from_defaults``: the options that differ from the protocol's defaults under the
    run's profile (``runconfig.differs_from_defaults``), recorded beside the config."""
    write_json(
        folder / CONFIG_FILE,
        {"run_id": run_id, "config": dict(config), "data_hashes": dict(data_hashes), "data_root": data_root,
         "created": created or now()}
        | ({} if differs_from_defaults is None else {"differs_from_defaults": dict(differs_from_defaults)}),
    )


def write_env(folder: Path, env: Mapping) -> None:
    write_json(folder / ENV_FILE, dict(env))


def write_training_log(folder: Path, log: Sequence[Mapping]) -> None:
    write_atomic(folder / TRAINING_LOG_FILE, "".join(json.dumps(dict(record)) + "\n" for record in log))


def write_results(folder: Path, results_json: str) -> None:
    write_atomic(folder / RESULTS_FILE, results_json)


def write_cost(folder: Path, cost: Mapping) -> None:
    """Add or replace the given sections of cost.json, keeping the others: the trainer's "training"
    count and the runner's "time", "throughput" and "memory" are written at different moments."""
    path = folder / COST_FILE
    kept = {}
    if path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            kept = {}  # a damaged file is replaced by what is known now
    write_json(path, {**(kept if isinstance(kept, dict) else {}), **dict(cost)})


def write_done(folder: Path, headline: Mapping, finished: str | None = None) -> None:
    """DONE is the last file of a run."""
    write_json(folder / DONE_FILE, {"finished": finished or now(), "headline": dict(headline)})


def write_failed(folder: Path, error: str) -> None:
    """Why the run failed, on one line; removed when the run is tried again."""
    write_json(folder / FAILED_FILE, {"failed": now(), "error": " ".join(str(error).split())})


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
    published: dict | None = None  # the PUBLISHED marker of a run copied by ``mlbench publish``
    # config.json's options that differ from the protocol's defaults (runconfig.differs_from_defaults);
    # None for runs recorded before it existed
    differs_from_defaults: dict | None = None

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
    failed = _optional_json(folder / FAILED_FILE, problems)
    published = _optional_json(folder / PUBLISHED_FILE, problems)
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
        error=_failure_reason(folder, failed),
        published=published if isinstance(published, dict) else None,
        differs_from_defaults=document.get("differs_from_defaults")
        if isinstance(document.get("differs_from_defaults"), dict) else None,
    )


def _failure_reason(folder: Path, failed) -> str | None:
    if not (folder / FAILED_FILE).is_file():
        return None
    reason = failed.get("error") if isinstance(failed, dict) else None
    return " ".join(str(reason).split()) if reason else "the FAILED file is damaged; the reason is lost"


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
    text = path.read_text(encoding="utf-8")
    if text.isascii() and (parsed := all_objects(text)) is not None:  # as json.dumps writes it
        return tuple(parsed)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
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
