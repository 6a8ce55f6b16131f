"""The run store, sweeps and the CLI on a tiny local model folder (real lm-eval, real data)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from metalora.cli import app
from metalora.errors import MlbenchError
from metalora.files import write_atomic
from metalora.runs.runconfig import build_run_config
from metalora.runs.store import RunStore

REPO = Path(__file__).resolve().parents[1]
# two tasks of 10 examples: 10 steps of 2 (or meta-iterations of 2 + 2 per task) see every example
TINY_RUN = {"steps": 10, "batch_size": 2, "max_seq_len": 64, "rank": 2, "support_size": 2, "query_size": 2,
            "inner_steps": 1, "benchmarks": ["xcopa"], "eval_limit": 1, "scenario": "multilingual",
            "tasks": ["xcopa_et", "xcopa_it"], "shots": 10}



def write_sweep(path: Path, model: Path, grid: dict, runs=()) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"description": "test", "defaults": {**TINY_RUN, "model": str(model)},
                                    "grid": grid, "runs": list(runs)}))
    return path


def cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


def test_sweep_file_errors_name_the_field(tmp_path, tiny_model_dir, data_root):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("grid:\n  method: [lora\n  shots: 10\n")
    result = cli("sweep", str(bad_yaml), "--dry-run", "--data-root", str(data_root.path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"mlbench: error: malformed YAML in {bad_yaml} at line ")
    assert result.stderr.count("\n") == 1

    unknown_top = tmp_path / "top.yaml"
    unknown_top.write_text("grids: {method: [lora]}\n")
    result = cli("sweep", str(unknown_top), "--dry-run")
    assert result.exit_code == 2 and "unknown key(s) grids; allowed: description, defaults, grid, runs" in result.stderr

    unknown_option = write_sweep(tmp_path / "opt.yaml", tiny_model_dir, {"method": ["lora"], "learning_rate": [1e-3]})
    result = cli("sweep", str(unknown_option), "--dry-run")
    assert result.exit_code == 2 and "grid: unknown option(s) learning_rate; allowed: " in result.stderr

    invalid = write_sweep(tmp_path / "val.yaml", tiny_model_dir, {"method": ["lora"], "shots": [10, 5]})
    result = cli("sweep", str(invalid), "--dry-run", "--data-root", str(data_root.path))
    assert result.exit_code == 2
    assert "run 2 (method=lora, shots=5): shots must be an integer from 10 to 100 or 'full', got 5" in result.stderr


def test_an_unknown_eval_backend_is_refused_before_any_work(tmp_path, tiny_model_dir, data_root):
    store = tmp_path / "store"
    result = cli("run", "--model", str(tiny_model_dir), "--eval-backend", "vllm", "--store", str(store),
                 "--data-root", str(data_root.path), "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr == "mlbench: error: --eval-backend must be one of fast, hflm, got 'vllm'\n"
    sweep = write_sweep(tmp_path / "s.yaml", tiny_model_dir, {"method": ["lora"]})
    result = cli("sweep", str(sweep), "--eval-backend", "vllm", "--store", str(store))
    assert result.exit_code == 2 and "--eval-backend must be one of fast, hflm" in result.stderr
    assert not store.exists()


def test_unwritable_store_and_full_disk_get_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(MlbenchError, match="cannot write"):
        RunStore(blocker / "store")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(MlbenchError, match="no space left on the device holding .*; free space or use --store"):
        write_atomic(tmp_path / "x.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # nothing half-written left behind


def test_claims_are_exclusive_between_live_workers(tmp_path):
    store = RunStore(tmp_path)
    import socket
    import sqlite3

    from metalora.runs.store import CLAIM_FILE, process_start

    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    config = build_run_config({"method": "lora", "shots": 10}).to_dict()
    run_id = "00000000000000a1"
    assert store.claim(run_id, config)
    assert store.claim(run_id, config)  # the same worker may continue its own run
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = {"host": socket.gethostname(), "pid": sleeper.pid, "start": process_start(sleeper.pid), "token": "x"}
        (tmp_path / run_id / CLAIM_FILE).write_text(json.dumps(claim))
        assert not store.claim(run_id, config)  # a live worker holds it
        sleeper.kill()
        sleeper.wait()
        assert store.claim(run_id, config)  # its process is gone: the run is taken over
    finally:
        sleeper.kill()
    store.finish(run_id, {"xcopa/acc": 0.5})
    assert not store.claim(run_id, config)
    assert [(r.run_id, r.status, r.headline) for r in store.rows()] == [(run_id, "done", {"xcopa/acc": 0.5})]


def _sweep_process(sweep: Path, store: Path, data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "metalora.cli", "sweep", str(sweep), "--store", str(store),
         "--data-root", str(data_root), "--checkpoint-every", "2", "--device", "cpu"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_sweep_killed_mid_run_resumes_exactly(tmp_path, tiny_model_dir, data_root):
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora", "metalora"], "seed": [0]},
                        runs=[{"method": "base"}])
    store_dir = tmp_path / "store"
    first = _sweep_process(sweep, store_dir, data_root.path)
    # Wait until the first run is finished and the second has written a checkpoint, then SIGKILL.
    deadline = time.time() + 300
    while time.time() < deadline:
        done = list(store_dir.glob("*/DONE"))
        checkpoints = list(store_dir.glob("*/checkpoint/checkpoint.safetensors"))
        if done and checkpoints:
            break
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.05)
    else:
        pytest.fail("the sweep never reached a checkpoint of its second run")
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished_before = {path.parent.name: path.stat().st_mtime_ns for path in store_dir.glob("*/DONE")}
    interrupted = checkpoints[0].parent.parent.name
    assert interrupted not in finished_before

    second = _sweep_process(sweep, store_dir, data_root.path)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    assert "resuming training after step" in output

    runs = [row for row in RunStore(store_dir).rows()]
    assert sorted(row.method for row in runs) == ["base", "lora", "metalora"]  # each exactly once
    assert all(row.status == "done" for row in runs)
    for run_id, mtime in finished_before.items():  # finished runs were not redone
        assert (store_dir / run_id / "DONE").stat().st_mtime_ns == mtime
    assert not (store_dir / interrupted / "checkpoint" / "checkpoint.safetensors").exists()

    # The interrupted run's adapter equals an uninterrupted run of the same config.
    clean_store = tmp_path / "clean"
    config = json.loads((store_dir / interrupted / "config.json").read_text())["config"]
    single = tmp_path / "single.yaml"
    write_sweep(single, tiny_model_dir, {"method": [config["method"]]})
    clean = _sweep_process(single, clean_store, data_root.path)
    output, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, output
    assert (clean_store / interrupted / "DONE").is_file()  # same config, same data: same run id
    resumed = load_file(store_dir / interrupted / "adapter" / "adapter.safetensors")
    reference = load_file(clean_store / interrupted / "adapter" / "adapter.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    log = [json.loads(line) for line in (store_dir / interrupted / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 11))
    # the resumed run counts what its first part consumed too (its other sections hold seconds)
    assert json.loads((store_dir / interrupted / "cost.json").read_text())["training"] == json.loads(
        (clean_store / interrupted / "cost.json").read_text()
    )["training"]


def test_cli_run_ls_show_and_dry_run(tmp_path, tiny_model_dir, data_root):
    store = tmp_path / "store"
    options = ["--model", str(tiny_model_dir), "--scenario", "multilingual", "--tasks", "xcopa_et,xcopa_it",
               "--shots", "10", "--steps", "10", "--batch-size", "2", "--max-seq-len", "64", "--rank", "2",
               "--benchmarks", "xcopa", "--eval-limit", "1", "--store", str(store), "--data-root", str(data_root.path),
               "--profile", "full", "--device", "cpu"]
    result = cli("run", "--method", "lora", *options)
    assert result.exit_code == 0, result.output
    rows = RunStore(store).rows()
    assert len(rows) == 1 and rows[0].status == "done" and rows[0].method == "lora"
    run_dir = store / rows[0].run_id
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert {t["task"] for t in results["tasks"]} == {"et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"}
    assert all(t["n_evaluated"] == 1 for t in results["tasks"])
    assert (run_dir / "eval" / "samples" / "xcopa.jsonl.gz").is_file()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and env["code_revision"] and env["model_source"]["kind"] == "local"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_hashes"]["xcopa/data/et/val.et.jsonl"] == _sha(data_root.path / "xcopa/data/et/val.et.jsonl")
    assert config["config"]["dtype"] == "float32"

    again = cli("run", "--method", "lora", *options)  # a finished run is never redone
    assert again.exit_code == 0 and "already finished, not redone" in again.output

    listing = cli("ls", "--store", str(store))
    assert rows[0].run_id in listing.output and "done" in listing.output
    shown = cli("show", rows[0].run_id[:6], "--store", str(store))
    assert shown.exit_code == 0 and "xcopa" in shown.output and "training: 10 steps" in shown.output
    log = [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text().splitlines()]
    # two tasks of 10 examples, batches of 2: 10 steps see each example exactly once
    cost = {
        "budget_rule": "matched_updates", "outer_updates": 10, "example_passes": 20,
        "tokens": sum(record["tokens"] for record in log), "trainable_parameters": 960, "min_epochs": 1.0,
    }
    assert json.loads((run_dir / "cost.json").read_text())["training"] == cost
    assert (
        f"cost: budget rule matched_updates, 10 outer updates, 20 example passes, {cost['tokens']:,} tokens, "
        "960 trainable parameters, at least 1 epoch per task"
    ) in " ".join(shown.output.split())
    missing = cli("show", "ffff", "--store", str(store))
    assert missing.exit_code == 2 and "no run in" in missing.stderr


def _sha(path: Path) -> str:
    from metalora.provenance import sha256_file

    return sha256_file(path)


def test_two_sweeps_at_once_share_the_store(tmp_path, tiny_model_dir, data_root):
    """Started together on one store, two sweeps run every run exactly once between them."""
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora", "hydralora", "metalora"],
                                                                  "seed": [0, 1]})
    store_dir = tmp_path / "store"
    workers = [_sweep_process(sweep, store_dir, data_root.path) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    rows = RunStore(store_dir).rows()
    assert len(rows) == 6 and all(row.status == "done" for row in rows)
    done_lines = sum(output.count("\n  done in ") for output in outputs)
    assert done_lines == 6  # no run was trained and evaluated twice
    for row in rows:
        assert (store_dir / row.run_id / "eval" / "results.json").is_file()
