"""The run folders are the source of truth: a damaged, truncated or deleted index is rebuilt from
them; claims are files in the run folder (heartbeat, pid and process start time); a deleted folder
or a removed DONE can be redone; damaged files and bad run ids are one line; rm, gc, store rebuild."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metalora.cli import app
from metalora.runs.store import CLAIM_FILE, STALE_AFTER_S, RunStore, process_start, read_claim
from tests.report_fixtures import bbh, rid, write_run

CONFIG = {"method": "lora", "model": "m", "shots": 10, "train": {"seed": 0}}


def cli(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("mlbench: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr


def five_runs(store: Path) -> Path:
    """Runs 1-3 done, run 4 failed (with its reason), run 5 interrupted (no live claim)."""
    for number in (1, 2, 3):
        write_run(store, rid(number), method="lora", seed=number, correct={"bbh": bbh(2, 2)})
    for number in (4, 5):
        write_run(store, rid(number), method="lora", seed=number, correct={"bbh": bbh(2, 2)}, done=False)
    runs = RunStore(store)
    assert runs.claim(rid(4), CONFIG)
    runs.fail(rid(4), "training diverged: the loss became nan at step 2")
    return store


def statuses(store: Path) -> dict[str, str]:
    return {row.run_id: row.status for row in RunStore(store, create=False).rows()}


EXPECTED = {rid(1): "done", rid(2): "done", rid(3): "done", rid(4): "failed", rid(5): "interrupted"}


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database at all " * 200)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def deleted(path: Path) -> None:
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("damage", [garbage, truncate, deleted], ids=["corrupt", "truncated", "deleted"])
def test_a_damaged_or_missing_index_is_rebuilt_from_the_folders(tmp_path, damage):
    store = five_runs(tmp_path / "store")
    with sqlite3.connect(store / "index.sqlite") as db:  # enough rows that half the file cuts pages
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.executemany("INSERT INTO runs (run_id, status) VALUES (?, 'done')", [(f"{n:016x}z",) for n in range(3000)])
    with sqlite3.connect(store / "index.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(store / "index.sqlite")

    listing = cli("ls", "--store", store)
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()[1:]
    assert sorted((line.split()[0], line.split()[1]) for line in lines) == sorted(EXPECTED.items())
    assert "training diverged: the loss became nan at step 2" in listing.stdout
    RunStore(store)  # a writer (run, sweep) brings back a deleted index; a damaged one is already rebuilt
    with sqlite3.connect(store / "index.sqlite") as db:  # the new index is whole and holds every run
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (5,)
    assert statuses(store) == EXPECTED
    shown = cli("show", rid(4), "--store", store)
    assert shown.exit_code == 0 and f"run {rid(4)}  (failed: training diverged" in shown.stdout
    site = cli("report", "--store", store, "--out", tmp_path / "site")
    assert site.exit_code == 0, site.output


def test_report_and_show_survive_an_index_damaged_after_opening(tmp_path):
    store = five_runs(tmp_path / "store")
    garbage(store / "index.sqlite")
    for suffix in ("-wal", "-shm"):
        Path(f"{store / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    site = cli("report", "--store", store, "--out", tmp_path / "site")
    assert site.exit_code == 0, site.output
    runs = (tmp_path / "site" / "index.html").read_text(encoding="utf-8").split('id="runs-table"')[1]
    assert ">failed: <span class=\"reason\">training diverged" in runs and ">interrupted<" in runs


def test_store_rebuild_command(tmp_path):
    store = five_runs(tmp_path / "store")
    result = cli("store", "rebuild", "--store", store)
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"index {store / 'index.sqlite'} rebuilt from 5 run folder(s): "
                             "3 done, 1 failed, 1 interrupted\n")
    one_line_error(cli("store", "rebuild", "--store", tmp_path / "typo"), f"run store {tmp_path / 'typo'} does not exist")
    assert not (tmp_path / "typo").exists()


def test_a_removed_done_or_a_deleted_folder_can_be_redone(tmp_path):
    store = five_runs(tmp_path / "store")
    runs = RunStore(store)
    assert [row.status for row in runs.rows()][:1] == ["done"]
    (store / rid(1) / "DONE").unlink()
    assert statuses(store)[rid(1)] == "interrupted"
    assert runs.claim(rid(1), CONFIG)  # not "busy forever": the folder says it is not done
    import shutil

    shutil.rmtree(store / rid(2))
    assert rid(2) not in statuses(store)
    assert runs.claim(rid(2), CONFIG)
    assert (store / rid(2) / CLAIM_FILE).is_file()
    runs.finish(rid(2), {"bbh/exact_match": 0.5})
    assert statuses(store)[rid(2)] == "done" and not (store / rid(2) / CLAIM_FILE).exists()


def test_a_claim_fills_in_the_row_an_index_rebuilt_from_a_bare_claim_left_blank(tmp_path):
    # Seen with six sweep workers starting at once: one rebuilt the index while another's run
    # folder held only its CLAIM, and `ls` showed that run without method, model or shots to the end.
    store = five_runs(tmp_path / "store")
    folder = store / rid(9)
    folder.mkdir()
    (folder / CLAIM_FILE).write_text("{}")  # a claim being written, no config.json yet
    runs = RunStore(store)
    runs.rebuild()
    blank = {row.run_id: row for row in runs.rows()}[rid(9)]
    assert (blank.method, blank.model, blank.shots) == (None, None, None)
    (folder / CLAIM_FILE).unlink()
    assert runs.claim(rid(9), CONFIG)
    row = {row.run_id: row for row in runs.rows()}[rid(9)]
    assert (row.status, row.method, row.model, row.shots, row.seed) == (
        "running", CONFIG["method"], CONFIG["model"], str(CONFIG["shots"]), CONFIG["train"]["seed"])


def test_a_failed_run_records_its_reason_in_the_folder_and_the_index(tmp_path):
    store = five_runs(tmp_path / "store")
    failed = json.loads((store / rid(4) / "FAILED").read_text())
    assert failed["error"] == "training diverged: the loss became nan at step 2"
    with sqlite3.connect(store / "index.sqlite") as db:
        assert db.execute("SELECT status, error FROM runs WHERE run_id=?", (rid(4),)).fetchone() == (
            "failed", "training diverged: the loss became nan at step 2")
    from reports.load import load_store

    (run,) = [r for r in load_store(store).runs if r.run_id == rid(4)]
    assert run.error == "training diverged: the loss became nan at step 2"
    assert RunStore(store).claim(rid(4), CONFIG)  # a new attempt clears the old reason
    assert not (store / rid(4) / "FAILED").exists() and statuses(store)[rid(4)] == "running"


def write_claim(folder: Path, pid: int, start: str | None, age: float = 0.0, host: str | None = None) -> None:
    path = folder / CLAIM_FILE
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "start": start, "token": f"t{pid}{age}"}))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_claims_weigh_pid_start_time_and_heartbeat(tmp_path, sleeper):
    runs = RunStore(tmp_path)
    folder = runs.run_dir(rid(1))
    folder.mkdir()
    start = process_start(sleeper.pid)
    assert start is not None and start != process_start(os.getpid())
    write_claim(folder, sleeper.pid, start)
    assert not runs.claim(rid(1), CONFIG)  # a live worker with a fresh heartbeat holds it
    assert runs.holder(rid(1)).pid == sleeper.pid

    write_claim(folder, sleeper.pid, str(int(start) + 1))  # the pid now belongs to an unrelated process
    assert runs.claim(rid(1), CONFIG)
    assert read_claim(folder).ours

    write_claim(folder, sleeper.pid, start, age=STALE_AFTER_S + 60)  # alive, but silent for too long
    assert runs.claim(rid(1), CONFIG)

    write_claim(folder, sleeper.pid, start, age=STALE_AFTER_S - 60, host="another-host")
    assert not runs.claim(rid(1), CONFIG)  # another host: its heartbeat alone decides
    write_claim(folder, 1, None, age=STALE_AFTER_S + 60, host="another-host")
    assert runs.claim(rid(1), CONFIG)

    (folder / CLAIM_FILE).write_text("{half a claim")  # damaged but fresh: presumed alive
    assert not runs.claim(rid(1), CONFIG)


def test_the_heartbeat_thread_keeps_a_claim_fresh_and_notices_a_takeover(tmp_path):
    runs = RunStore(tmp_path)
    assert runs.claim(rid(1), CONFIG)
    path = runs.run_dir(rid(1)) / CLAIM_FILE
    old = time.time() - 1000
    os.utime(path, (old, old))
    with runs.holding(rid(1), every=0.05):
        time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5
    write_claim(path.parent, 1, None, host="another-host")  # taken over while this worker stalled
    assert not runs.heartbeat(rid(1))
    with pytest.raises(Exception, match="was taken over by another worker"):
        runs.finish(rid(1), {})
    assert not (path.parent / "DONE").exists()


def _race(args) -> bool:
    root, run_id, barrier_at = args
    while time.time() < barrier_at:
        pass
    return RunStore(root).claim(run_id, CONFIG)


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-takeover"])
def test_of_many_launchers_exactly_one_claims_a_run(tmp_path, stale):
    RunStore(tmp_path)
    if stale:
        folder = tmp_path / rid(7)
        folder.mkdir()
        write_claim(folder, 1, None, age=STALE_AFTER_S + 60, host="another-host")
    context = multiprocessing.get_context("spawn")
    with context.Pool(8) as pool:
        start_at = time.time() + 3.0
        won = pool.map(_race, [(tmp_path, rid(7), start_at)] * 8)
    assert sum(won) == 1
    assert not list((tmp_path / rid(7)).glob(".CLAIM*"))  # no temporary or takeover file is left


def test_show_names_a_damaged_file_and_keeps_going(tmp_path):
    store = five_runs(tmp_path / "store")
    (store / rid(1) / "env.json").write_text("{not json")
    (store / rid(1) / "eval" / "results.json").write_bytes(b"\x00\xff garbage")
    shown = cli("show", rid(1), "--store", store)
    assert shown.exit_code == 0, shown.output
    assert "damaged file: env.json: " in shown.stdout and "damaged file: results.json: " in shown.stdout
    (store / rid(2) / "config.json").write_text('{"config": ')
    one_line_error(cli("show", rid(2), "--store", store), f"run {rid(2)}: {store / rid(2) / 'config.json'} is damaged")


def test_run_ids_from_the_index_are_never_used_as_paths(tmp_path):
    store = five_runs(tmp_path / "store")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "DONE").write_text("{}")
    with sqlite3.connect(store / "index.sqlite") as db:
        db.execute("INSERT INTO runs (run_id, status, created) VALUES ('../outside', 'done', 0)")
    assert statuses(store) == EXPECTED  # the row is dropped, never followed
    one_line_error(cli("show", "../outside", "--store", store), "'../outside' is not a run id or a prefix of one")
    one_line_error(cli("rm", "../outside", "--yes", "--store", store), "is not a run id or a prefix of one")
    with pytest.raises(Exception, match="is not a run id"):
        RunStore(store).claim("../outside", CONFIG)
    assert (tmp_path / "outside" / "DONE").is_file()


def test_ls_never_creates_a_store(tmp_path):
    one_line_error(cli("ls", "--store", tmp_path / "typo"), f"run store {tmp_path / 'typo'} does not exist")
    one_line_error(cli("show", "abc", "--store", tmp_path / "typo"), "does not exist")
    one_line_error(cli("gc", "--store", tmp_path / "typo"), "does not exist")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    assert cli("ls", "--store", tmp_path / "empty").stdout == "no runs yet\n"
    assert list((tmp_path / "empty").iterdir()) == []  # not even an index


def test_rm_and_gc_list_first_and_delete_with_yes(tmp_path):
    store = five_runs(tmp_path / "store")
    listed = cli("gc", "--store", store)
    assert listed.exit_code == 0
    assert listed.stdout.splitlines() == [
        f"{rid(4)}  failed  lora shots=50 seed=4  training diverged: the loss became nan at step 2",
        f"{rid(5)}  interrupted  lora shots=50 seed=5",
        "2 runs would be deleted; pass --yes to delete them",
    ]
    assert statuses(store) == EXPECTED
    assert cli("gc", "--yes", "--store", store).stdout.splitlines()[-1] == "deleted 2 runs"
    assert statuses(store) == {rid(n): "done" for n in (1, 2, 3)}
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith("index.sqlite")) == [rid(1), rid(2), rid(3)]
    assert cli("gc", "--store", store).stdout == "nothing to delete: no failed or interrupted runs\n"

    dry = cli("rm", rid(1), "--store", store)
    assert dry.stdout == f"would delete {rid(1)}  done  {store / rid(1)}\npass --yes to delete it\n"
    assert cli("rm", rid(1), "--yes", "--store", store).exit_code == 0
    assert statuses(store) == {rid(n): "done" for n in (2, 3)}
    assert not (store / rid(1)).exists()


def test_rm_refuses_a_running_run(tmp_path, sleeper):
    store = five_runs(tmp_path / "store")
    write_claim(store / rid(5), sleeper.pid, process_start(sleeper.pid))
    assert statuses(store)[rid(5)] == "running"
    one_line_error(cli("rm", rid(5), "--yes", "--store", store), f"run {rid(5)} is running ")
    assert rid(5) not in cli("gc", "--store", store).stdout and rid(4) in cli("gc", "--store", store).stdout
    assert (store / rid(5)).is_dir()


def test_a_read_only_store_is_read_and_refuses_writes_in_one_line(tmp_path, monkeypatch):
    store = five_runs(tmp_path / "store")
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    real_open, real_mkdir = os.open, os.mkdir

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    def guarded_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(store)):
            read_only(path)
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(store)):
            read_only(path)
        return real_mkdir(path, *args, **kwargs)

    import builtins

    real_builtin_open = builtins.open

    def guarded_builtin_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and str(file).startswith(str(store)):
            read_only(file)
        return real_builtin_open(file, mode, *args, **kwargs)

    def guarded(real):
        def call(source, *args, **kwargs):
            if str(source).startswith(str(store)):
                read_only(source)
            return real(source, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    monkeypatch.setattr(builtins, "open", guarded_builtin_open)
    for name in ("rename", "replace", "link", "utime"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))
    monkeypatch.setattr("metalora.files.tempfile.mkstemp", read_only)
    (store / "index.sqlite").unlink()  # a rebuild would be needed, and cannot be written
    listing = cli("ls", "--store", store)
    assert listing.exit_code == 0 and len(listing.stdout.splitlines()) == 6
    assert cli("show", rid(4), "--store", store).exit_code == 0
    one_line_error(cli("rm", rid(4), "--yes", "--store", store), "(Read-only file system); check permissions")
    with pytest.raises(Exception, match="Read-only file system"):
        RunStore(store)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == {
        p: m for p, m in before.items() if not p.name.startswith("index.sqlite")}


RUN = ("--device", "cpu", "--profile", "smoke", "--method", "lora", "--tasks", "strategyqa", "--shots", "10",
       "--benchmarks", "mgsm", "--eval-limit", "1")


def _prepared(model: Path, data: Path):
    from metalora.runs.runconfig import ExecutionOptions, build_run_config
    from metalora.runs.runner import prepare_run

    given = {"model": str(model), "profile": "smoke", "method": "lora", "tasks": "strategyqa", "shots": "10",
             "benchmarks": "mgsm", "eval_limit": 1}
    return prepare_run(build_run_config(given), ExecutionOptions(device="cpu", data_root=str(data)))


def test_a_run_another_worker_is_running_is_one_line_or_waited_for(tmp_path, tiny_model_dir, data_root, sleeper):
    store = tmp_path / "store"
    prepared = _prepared(tiny_model_dir, data_root.path)
    runs = RunStore(store)
    folder = runs.run_dir(prepared.run_id)
    folder.mkdir()
    write_claim(folder, sleeper.pid, process_start(sleeper.pid))
    args = ("run", "--model", tiny_model_dir, "--data-root", data_root.path, "--store", store, *RUN)
    refused = cli(*args)  # the heartbeat's age is a second or two on a loaded machine
    one_line_error(refused, f"run {prepared.run_id} is being run by another worker ({socket.gethostname()}:"
                            f"{sleeper.pid}, last heartbeat ")
    assert re.search(r"last heartbeat \d+ s ago\); pass --wait to wait for it", refused.stderr)
    assert sorted(p.name for p in folder.iterdir()) == [CLAIM_FILE]  # nothing was loaded or written

    from metalora.runs.runner import evaluation_request
    from metalora.runs.store import write_config, write_done, write_results

    request = evaluation_request(prepared.config)
    results = {"benchmarks": ["mgsm"], "aggregates": [], "data_files": {},
               "settings": {"limit": request.eval_limit, "max_gen_tokens": {"mgsm": request.gen_tokens("mgsm")}}}

    def other_worker_finishes() -> None:  # what the other worker does while this one waits
        time.sleep(1.5)
        write_config(folder, prepared.run_id, prepared.config.to_dict(), prepared.data_hashes, None)
        write_results(folder, json.dumps(results))  # everything asked is evaluated: nothing left to do here
        write_done(folder, {"mgsm/exact_match": 0.25})
        (folder / CLAIM_FILE).unlink()

    import threading

    thread = threading.Thread(target=other_worker_finishes)
    thread.start()
    started = time.monotonic()
    waited = cli(*args, "--wait")
    thread.join()
    assert waited.exit_code == 0, waited.output
    assert time.monotonic() - started >= 1.5
    assert "is being run by another worker" in waited.stderr and "waiting for it to finish" in waited.stderr
    assert f"run {prepared.run_id}: done" in waited.stderr.splitlines()  # the summary of its result
    assert not (folder / "adapter").exists()  # its result was used, nothing trained here
