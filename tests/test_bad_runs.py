"""Faults during a run: a diverging loss and a full disk end as one line, a failed run with its
reason, and nothing partial; a run that fails before any work leaves nothing in the store; a
sweep's plan reads each data file once; numbers as people write them."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metalora.cli import app
from metalora.errors import MlbenchError
from metalora.runs.runconfig import ExecutionOptions, build_run_config
from metalora.runs.runner import execute_run, prepare_run
from metalora.runs.store import RunStore
from tests.conftest import _byte_tokenizer, make_tiny_llama


def run_args(model: Path, data: Path, store: Path, *extra: str) -> list[str]:
    # one task of 10 examples in batches of 2: 5 steps see every one (fewer are refused)
    return ["run", "--model", str(model), "--data-root", str(data), "--store", str(store), "--device", "cpu",
            "--profile", "smoke", "--method", "lora", "--tasks", "strategyqa", "--shots", "10",
            "--benchmarks", "mgsm", "--eval-limit", "1", "--rank", "2", "--batch-size", "2", *extra]


def files_under(root: Path) -> set[str]:
    return {str(Path(folder, name).relative_to(root)) for folder, dirs, names in os.walk(root) for name in names + dirs}


def test_a_diverging_loss_stops_training_and_the_run_is_failed_with_its_reason(tmp_path, tiny_model_dir, data_root):
    store = tmp_path / "store"
    result = CliRunner().invoke(app, run_args(tiny_model_dir, data_root.path, store, "--steps", "5", "--lr", "1e30"))
    assert result.exit_code == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("mlbench: error: training diverged: the loss became nan at step 2 (learning rate 1e+30)")
    assert "Traceback" not in result.stderr
    (row,) = RunStore(store).rows()
    assert row.status == "failed" and "training diverged: the loss became nan at step 2" in row.error
    folder = store / row.run_id
    assert not (folder / "DONE").exists() and not (folder / "eval").exists() and not (folder / "adapter").exists()
    # never reported: the report lists it as failed, with the reason, and ranks nothing
    from reports.site import build_report

    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert "1 run, 0 finished." in html
    runs = html.split('id="runs-table"')[1]
    assert '>failed: <span class="reason">training diverged: the loss became nan at step 2' in runs


def _fail_replace(monkeypatch, matches):
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if matches(Path(dst)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_file(
    tmp_path, tiny_model_dir, data_root, monkeypatch
):
    store = tmp_path / "store"
    _fail_replace(monkeypatch, lambda dst: dst.parent.name == "checkpoint")
    result = CliRunner().invoke(
        app, run_args(tiny_model_dir, data_root.path, store, "--steps", "5", "--checkpoint-every", "2")
    )
    assert result.exit_code == 2, result.stderr
    (row,) = RunStore(store).rows()
    assert result.stderr.splitlines()[-1] == (
        f"mlbench: error: no space left on the device holding {store / row.run_id}/checkpoint/checkpoint.safetensors; "
        "free space or use --store on another disk"
    )
    assert row.status == "failed" and "no space left" in row.error
    left = files_under(store / row.run_id)
    assert not any(Path(name).name.startswith(".") for name in left), left  # no temporary file
    assert "checkpoint/checkpoint.safetensors" not in left and "adapter" not in left


def test_a_full_disk_while_saving_the_adapter_leaves_no_partial_adapter(tmp_path, tiny_model_dir, data_root, monkeypatch):
    store = tmp_path / "store"
    _fail_replace(monkeypatch, lambda dst: dst.name == "adapter")
    result = CliRunner().invoke(app, run_args(tiny_model_dir, data_root.path, store, "--steps", "5"))
    assert result.exit_code == 2, result.stderr
    (row,) = RunStore(store).rows()
    assert result.stderr.splitlines()[-1] == (
        f"mlbench: error: no space left on the device holding {store / row.run_id}/adapter; "
        "free space or use --store on another disk"
    )
    left = files_under(store / row.run_id)
    assert not any(Path(name).name.startswith(".") for name in left), left
    assert not any(name.startswith("adapter") for name in left), left
    assert "config.json" in left and "DONE" not in left


def test_a_sweep_plan_reads_each_task_file_once(tmp_path, tiny_model_dir, data_root, monkeypatch):
    from metalora.data import registry

    calls = []
    real = registry.bigbench_examples
    monkeypatch.setattr(registry, "bigbench_examples", lambda root, name: calls.append(name) or real(root, name))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"defaults: {{model: {tiny_model_dir}, tasks: [strategyqa, social_iqa], benchmarks: [mgsm], shots: 10}}\n"
        "grid: {method: [lora], seed: [0, 1, 2], rank: [2, 4]}\n"
    )
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run", "--data-root", str(data_root.path),
                                      "--store", str(tmp_path / "store"), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert f"{sweep}: 6 runs, 0 already done, 6 to run" in result.stderr
    assert sorted(calls) == ["social_iqa", "strategyqa"]  # not once per run


def test_a_sweep_accepts_numbers_as_people_write_them(tmp_path, tiny_model_dir):
    from metalora.runs.runconfig import build_run_config
    from metalora.runs.sweep import load_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"defaults: {{model: {tiny_model_dir}}}\ngrid: {{method: [lora], lr: [1e-4, 2E-4, '3e-4', 0.0004]}}\n")
    lrs = [build_run_config(options).train.lr for options in load_sweep(sweep).runs]
    assert lrs == [1e-4, 2e-4, 3e-4, 4e-4] and all(type(lr) is float for lr in lrs)


def test_a_sweep_goes_on_past_a_failed_run_and_exits_non_zero(tmp_path, tiny_model_dir, data_root):
    """One diverging run must not cost the rest of the sweep (seen on the H200: a NaN in one
    MeTA-LoRA run stopped a worker with 20 runs left); the exit status still says it failed."""
    store, sweep = tmp_path / "store", tmp_path / "two.yaml"
    sweep.write_text(
        "defaults: {model: " + str(tiny_model_dir) + ", method: lora, tasks: [strategyqa], shots: 10,\n"
        "           benchmarks: [mgsm], eval_limit: 1, rank: 2, batch_size: 2, steps: 10}\n"
        "grid: {lr: [1e30, 1e-4]}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["sweep", str(sweep), "--store", str(store), "--data-root", str(data_root.path), "--device", "cpu",
              "--profile", "smoke"],
    )
    assert result.exit_code == 1, result.output
    assert "failed: training diverged: the loss became nan" in result.output
    rows = {row.status: row for row in RunStore(store).rows()}
    assert sorted(rows) == ["done", "failed"]
    assert "training diverged" in rows["failed"].error and (store / rows["done"].run_id / "DONE").is_file()
    failed = rows["failed"].run_id
    assert result.output.splitlines()[-1] == (
        f"1 run failed: {failed}; each reason is above, and 'mlbench show RUN_ID' gives it for {failed}")


def _save_model(folder: Path, seed: int) -> None:
    make_tiny_llama(seed=seed).save_pretrained(folder)
    _byte_tokenizer().save_pretrained(folder)


def test_a_run_whose_weights_change_before_it_trains_leaves_nothing_in_the_store(tmp_path, data_root):
    """Claimed, then refused before its first step: no folder, no index row (it used to stay as a
    failed run that had done nothing)."""
    model = tmp_path / "model"
    _save_model(model, seed=0)
    execution = ExecutionOptions(device="cpu", data_root=str(data_root.path))
    config = build_run_config({"model": str(model), "method": "lora", "tasks": ["strategyqa"], "shots": 10,
                               "benchmarks": ["mgsm"], "eval_limit": 1, "rank": 2, "batch_size": 2,
                               "profile": "smoke"})
    prepared = prepare_run(config, execution)
    _save_model(model, seed=1)  # other weights in the same folder after the plan
    store = RunStore(tmp_path / "store")
    with pytest.raises(MlbenchError, match=f"changed after run {prepared.run_id} was planned"):
        execute_run(prepared, store, execution)
    assert [p.name for p in (tmp_path / "store").iterdir() if p.is_dir()] == []  # no run folder (nor a trash one)
    assert store.rows() == []


def test_a_base_run_whose_evaluation_data_vanished_leaves_nothing_in_the_store(tmp_path, tiny_model_dir, data_root):
    root = tmp_path / "data"
    root.mkdir()
    for entry in data_root.path.iterdir():  # the shared data, but a copy of MGSM that can go missing
        if entry.name == "mgsm":
            shutil.copytree(entry, root / "mgsm")
        else:
            (root / entry.name).symlink_to(entry)
    execution = ExecutionOptions(device="cpu", data_root=str(root))
    prepared = prepare_run(build_run_config({"model": str(tiny_model_dir), "method": "base", "benchmarks": ["mgsm"],
                                             "eval_limit": 1, "profile": "smoke"}), execution)
    (root / "mgsm" / "mgsm_de.tsv").unlink()  # gone between the plan and the evaluation
    store = RunStore(tmp_path / "store")
    with pytest.raises(MlbenchError, match="mgsm_de.tsv"):
        execute_run(prepared, store, execution)
    assert [p.name for p in (tmp_path / "store").iterdir() if p.is_dir()] == []  # no run folder (nor a trash one)
    assert store.rows() == []

