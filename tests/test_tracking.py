"""--log-to: TensorBoard event files hold the run's training loss/lr per step and its final metrics;
a missing package is one line before any work; logging never changes the run id."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from typer.testing import CliRunner

from metalora.cli import app
from metalora.runs.runconfig import ExecutionOptions, build_run_config
from metalora.runs.runner import prepare_run
from metalora.runs.store import RunStore
from metalora.runs.tracking import WandbTracker

RUN = ["--method", "lora", "--scenario", "multilingual", "--tasks", "xcopa_et,xcopa_it", "--shots", "10",
       "--steps", "10", "--batch-size", "2", "--max-seq-len", "64", "--rank", "2", "--eval-limit", "1",
       "--benchmarks", "xcopa", "--profile", "full", "--device", "cpu", "--seed", "7"]


def cli(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path, tiny_model_dir, data_root):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = tmp_path / "store"
    result = cli("run", *RUN, "--model", tiny_model_dir, "--store", store, "--data-root", data_root.path,
                 "--log-to", "tensorboard")
    assert result.exit_code == 0, result.output
    (row,) = RunStore(store).rows()
    config = build_run_config({"method": "lora", "model": str(tiny_model_dir), "scenario": "multilingual",
                               "tasks": "xcopa_et,xcopa_it", "shots": 10, "steps": 10, "batch_size": 2,
                               "max_seq_len": 64, "rank": 2, "seed": 7, "profile": "full"})
    assert prepare_run(config, ExecutionOptions(data_root=str(data_root.path))).run_id == row.run_id

    events = EventAccumulator(str(store / row.run_id / "tensorboard"))
    events.Reload()
    log = [json.loads(line) for line in (store / row.run_id / "training_log.jsonl").read_text().splitlines()]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 11))  # two tasks of 10 in batches of 2: 10 steps
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in log], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in log], rel=1e-6)
    (final,) = events.Scalars("eval/xcopa/acc")
    assert final.step == 10 and final.value == pytest.approx(row.headline["xcopa/acc"], rel=1e-6)


def test_a_missing_logging_package_is_one_line_before_any_work(tmp_path, tiny_model_dir, data_root, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    store = tmp_path / "store"
    result = cli("run", *RUN, "--model", tiny_model_dir, "--store", store, "--data-root", data_root.path,
                 "--log-to", "wandb")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "mlbench: error: --log-to wandb needs the wandb package, which is not installed; "
        "pip install wandb (or leave out --log-to)"
    )
    assert not store.exists()
    unknown = cli("run", *RUN, "--model", tiny_model_dir, "--store", store, "--log-to", "mlflow")
    assert unknown.exit_code == 2 and "--log-to must be one of tensorboard, wandb" in unknown.stderr


def test_wandb_tracker_logs_steps_and_summary(tmp_path, monkeypatch):
    """Against a recording stand-in for the wandb module (not installed here): the calls made."""
    calls = []

    class Run:
        def __init__(self):
            self.summary = {}

        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    run = Run()
    fake = types.SimpleNamespace(init=lambda **kwargs: calls.append(("init", kwargs)) or run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = WandbTracker("abc123", tmp_path, {"method": "lora"})
    tracker.log_step({"step": 1, "loss": 2.5, "lr": 1e-3, "note": "text", "bad": float("nan")})
    tracker.log_metrics({"xcopa/acc": 0.5}, 1)
    tracker.close()
    assert calls[0] == ("init", {"project": "mlbench", "name": "abc123", "id": "abc123", "resume": "allow",
                                 "config": {"method": "lora"}, "dir": str(tmp_path)})
    assert calls[1] == ("log", {"train/loss": 2.5, "train/lr": 1e-3}, 1)
    assert run.summary == {"eval/xcopa/acc": 0.5} and calls[-1] == ("finish",)
