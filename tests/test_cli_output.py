"""What a person sees: a default run prints progress and a compact summary, third-party chatter goes
to the run's log file (``-v`` shows it), Ctrl-C says what was kept, and a sweep picks its profile
like ``run`` and estimates its duration from recorded timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from metalora.cli import app
from metalora.runs.display import estimate_line, seconds, summary
from metalora.runs.estimate import Rates, estimate, finished_runs

REPO = Path(__file__).resolve().parents[1]
# Lines that only third-party code prints (lm-eval, HFLM, transformers, tqdm, git).
CHATTER = ("Custom kwargs", "--metadata", "`pretrained` model kwarg", "FutureWarning", "warnings.warn",
           "fatal: not a git repository", "Loading weights", "it/s]")


def run_args(model: Path, data: Path, store: Path, *extra: str) -> list[str]:
    return ["run", "--model", str(model), "--data-root", str(data), "--store", str(store), "--device", "cpu",
            "--method", "lora", "--tasks", "strategyqa", "--shots", "10", "--benchmarks", "mgsm,xcopa",
            "--rank", "2", "--batch-size", "2", "--max-seq-len", "256", *extra]


def test_a_default_run_prints_progress_and_a_summary_and_logs_the_chatter(tmp_path, tiny_model_dir, data_root):
    store = tmp_path / "store"
    result = CliRunner().invoke(app, run_args(tiny_model_dir, data_root.path, store))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert not [line for line in lines if any(text in line for text in CHATTER)], result.output
    assert len(lines) < 16, result.output
    (run_id,) = [p.name for p in store.iterdir() if p.is_dir()]
    assert lines[0].startswith("CPU only: the quick profile (1 pass over every budget, 128-token sequences, 1 item per "
                               "evaluated task")
    assert lines[1] == f"run {run_id}: lora, shots 10, seed 0, quick profile"
    assert lines[2:5] == [f"  loading model {tiny_model_dir} on cpu (float32)", lines[3], lines[4]]
    assert lines[3].startswith("  model loaded in ") and lines[4].startswith("  training: 5 steps in ")  # 10 examples, batch 2
    assert lines[5] == "  evaluating on mgsm, xcopa (first 1 item of each task)"
    assert lines[6].startswith("  mgsm: 11 items in ") and lines[6].endswith(" items/s)")
    assert lines[7].startswith("  xcopa: 11 items in ") and lines[7].endswith(" items/s)")
    assert lines[8] == f"run {run_id}: done"
    assert lines[9] == f"  lora, shots 10, seed 0, quick profile (not comparable with the full protocol); model {tiny_model_dir}"
    results = json.loads((store / run_id / "eval" / "results.json").read_text())
    xcopa = next(a for a in results["aggregates"] if a["benchmark"] == "xcopa" and a["name"] == "macro"
                 and a["metric"] == "acc")
    assert lines[11] == (f"  xcopa  acc          {xcopa['value']:.4f} (no standard error: one item per task)"
                         "  (11 items, 11 tasks)")
    assert lines[12].startswith("  time: model load ") and ", total " in lines[12]
    assert lines[13] == (f"  stored in {store / run_id} (third-party output: run.log); details: mlbench show "
                         f"{run_id[:8]}")
    log = (store / run_id / "run.log").read_text()
    assert "Custom kwargs can be passed to `--metadata`" in log
    recorded = json.loads((store / run_id / "config.json").read_text())["differs_from_defaults"]
    assert recorded == {"rank": 2, "batch_size": 2, "max_seq_len": 256}  # one epoch is the quick profile's
    assert "`pretrained` model kwarg is not of type `str`" not in result.output


def test_verbose_shows_the_chatter_and_quiet_runs_send_git_errors_to_the_log(tmp_path, tiny_model_dir, data_root):
    """Real processes (the redirection works on file descriptor 2), started outside any git checkout
    so that lm-eval's stock backend's ``git describe`` fails and prints "fatal: ..."."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    common = ["--eval-backend", "hflm", "--profile", "smoke", "--eval-limit", "1"]
    quiet = subprocess.run([sys.executable, "-m", "metalora.cli", *run_args(tiny_model_dir, data_root.path,
                            tmp_path / "quiet", *common)], cwd=outside, env=env, capture_output=True, text=True, check=False,
                           timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in (quiet.stdout + quiet.stderr).splitlines() if any(t in line for t in CHATTER)]
    (folder,) = [p for p in (tmp_path / "quiet").iterdir() if p.is_dir()]
    log = (folder / "run.log").read_text()
    assert "fatal: not a git repository" in log and "Custom kwargs" in log

    loud = subprocess.run([sys.executable, "-m", "metalora.cli", *run_args(tiny_model_dir, data_root.path,
                           tmp_path / "loud", *common, "-v")], cwd=outside, env=env, capture_output=True, text=True, check=False,
                          timeout=600)
    assert loud.returncode == 0, loud.stderr
    assert "Custom kwargs can be passed to `--metadata`" in loud.stderr
    assert "fatal: not a git repository" in loud.stderr


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, tiny_model_dir, data_root, monkeypatch):
    from metalora.runs.display import RunProgress

    original = RunProgress.on_step

    def interrupt_at_step_3(self, record, total):
        original(self, record, total)
        if record["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunProgress, "on_step", interrupt_at_step_3)
    store = tmp_path / "store"
    args = run_args(tiny_model_dir, data_root.path, store, "--steps", "5", "--checkpoint-every", "2",
                    "--profile", "smoke")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    (run_id,) = [p.name for p in store.iterdir() if p.is_dir()]
    assert result.output.splitlines()[-1] == (
        f"interrupted: run {run_id} kept its training checkpoint at step 2; run the same command again to "
        "resume from there"
    )
    assert "Traceback" not in result.output
    monkeypatch.setattr(RunProgress, "on_step", original)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "  resuming training after step 2" in again.output.splitlines()
    assert f"run {run_id}: done" in again.output.splitlines()


def _finished_run(store: Path, run_id: str, config: dict, total_s: float, training_s: float | None = None,
                  passes: int | None = None) -> None:
    from metalora.runs.store import write_config, write_cost, write_done

    folder = store / run_id
    write_config(folder, run_id, config, {}, None)
    if passes is not None:  # the trainer's section, written before the meter's
        write_cost(folder, {"training": {"budget_rule": "epochs", "outer_updates": 3, "example_passes": passes}})
    training_s = total_s - 11.0 if training_s is None else training_s
    write_cost(folder, {"time": {"model_load_s": 1.0, "training_s": training_s, "eval_s": {"xcopa": 10.0},
                                 "total_s": total_s}})
    write_done(folder, {})


def _sweep(path: Path, model: Path, grid: dict, defaults: dict | None = None) -> Path:
    base = {"model": str(model), "scenario": "multilingual", "tasks": ["xcopa_et"], "benchmarks": ["xcopa"],
            "shots": 10}
    path.write_text(yaml.safe_dump({"defaults": {**base, **(defaults or {})}, "grid": grid}))
    return path


def test_sweep_picks_the_profile_like_run_and_estimates_from_recorded_times(tmp_path, tiny_model_dir, data_root):
    store = tmp_path / "store"
    model = str(tiny_model_dir)
    quick = {"method": "lora", "method_options": {}, "profile": "quick", "model": model, "benchmarks": ["xcopa"],
             "eval_limit": 1}
    _finished_run(store, "a" * 16, quick, 100.0, training_s=6.0, passes=12)  # 0.5 s per pass, rest 94 s
    _finished_run(store, "b" * 16, quick, 140.0, training_s=12.0, passes=12)  # 1 s per pass, rest 128 s
    _finished_run(store, "c" * 16, {**quick, "profile": "full", "eval_limit": None}, 9999.0, passes=12)
    sweep = _sweep(tmp_path / "s.yaml", tiny_model_dir, {"method": ["lora", "hydralora"], "seed": [0, 1, 2]})
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run", "--store", str(store), "--device", "cpu",
                                      "--data-root", str(data_root.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("CPU only: runs that name no profile get the quick profile (1 pass over every budget")
    assert lines[1] == f"{sweep}: 6 runs, 0 already done, 6 to run"
    # lora and hydralora see the 10 xcopa_et examples once in 3 batches of 4 (the quick profile's epoch)
    assert all(line.endswith(", quick profile  epochs: 3 updates, 12 example passes") for line in lines[2:8])
    # Three lora runs of 12 passes at the median rest (111 s) + 12 x the median 0.75 s per pass; no
    # hydralora run has a recorded time.
    assert lines[-1] == ("estimated duration: 6 min 00 s of run time for 3 runs of 6 (training scaled by each run's "
                         "example passes from the finished runs' seconds per pass; evaluation and load from their "
                         "median per method); none recorded for 3 runs (hydralora/quick)")

    smoke = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run", "--store", str(store), "--device", "cpu",
                                     "--data-root", str(data_root.path), "--profile", "smoke"])
    assert smoke.exit_code == 0 and "CPU only" not in smoke.output
    assert smoke.output.splitlines()[-1] == (
        "estimated duration: none recorded for 6 runs (no finished run in this store with the same method, profile, "
        "model, benchmarks and eval_limit has cost.json times: lora/smoke, hydralora/smoke)")


def test_a_sweep_names_the_options_that_runs_of_other_methods_ignore(tmp_path, tiny_model_dir, data_root):
    sweep = _sweep(tmp_path / "s.yaml", tiny_model_dir, {"method": ["lora", "metalora", "hydralora"]},
                   {"inner_steps": 1, "support_size": 2, "query_size": 2, "num_heads": 2, "profile": "smoke", "rank": 2})
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run", "--store", str(tmp_path / "st"),
                                      "--device", "cpu", "--data-root", str(data_root.path)])
    assert result.exit_code == 0, result.output
    assert "CPU only" not in result.output  # every run names its profile
    lines = result.output.splitlines()
    assert [line.split("  ", 2)[2].strip() for line in lines[1:4]] == [  # each run's changes from the defaults
        "lora, shots 10, seed 0, smoke profile  [rank=2]  epochs: 3 updates, 12 example passes",
        # k x n_s + n_q = 4 passes per update
        ("metalora, shots 10, seed 0, inner_steps=1, support_size=2, query_size=2, smoke profile  [rank=2]  "
         "epochs: 3 updates, 12 example passes"),
        "hydralora, shots 10, seed 0, num_heads=2, smoke profile  [rank=2]  epochs: 3 updates, 12 example passes"]
    assert lines[-5:-1] == [
        "inner_steps (metalora only) is ignored by 1 lora run, 1 hydralora run",
        "num_heads (hydralora only) is ignored by 1 lora run, 1 metalora run",
        "query_size (metalora only) is ignored by 1 lora run, 1 hydralora run",
        "support_size (metalora only) is ignored by 1 lora run, 1 hydralora run",
    ]


def test_summary_of_an_old_run_reads_its_recorded_times(tmp_path):
    from metalora.runs.store import read_run

    store = tmp_path / "store"
    _finished_run(store, "d" * 16, {"method": "base", "profile": "full", "model": "m"}, 75.0)
    record = read_run(store / ("d" * 16))
    lines = summary(record, {}, None)
    assert lines[0] == f"run {'d' * 16}: {record.status}"  # no results in this fixture
    assert lines[1] == "  base model, full profile; model m"
    assert lines[2] == "  time: model load 1.0 s, training 1 min 04 s, evaluation 10 s, total 1 min 15 s"
    (finished,) = finished_runs(store)
    assert (finished.key, finished.profile, finished.model, finished.total_s, finished.rest_s) == \
        ("base", "full", "m", 75.0, 11.0)


@pytest.mark.parametrize("value, text", [(0.44, "0.4 s"), (12.4, "12 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_durations_read_as_people_write_them(value, text):
    assert seconds(value) == text


def test_no_estimate_without_runs():
    assert estimate_line(estimate([], Rates({}, {}))) == "nothing to run"


def test_differs_from_defaults_names_every_changed_option_against_the_profile():
    from metalora.runs.runconfig import build_run_config, describe_changes, differs_from_defaults

    def changes(**options) -> str:
        return describe_changes(differs_from_defaults(build_run_config(options)))

    assert changes(method="lora", profile="full") == ""
    assert changes(method="metalora", profile="quick") == ""  # its own quick defaults (n_s = n_q = 2, k = 1)
    assert changes(method="metalora", shots=10, support_size=5, query_size=5, steps=8) == \
        "budget_rule=matched_updates, steps=8, support_size=5, query_size=5"
    assert changes(method="hydralora", num_heads=2, epochs=2, target_modules="gate_proj") == \
        "target_modules=[gate_proj], budget_rule=epochs, epochs=2.0, num_heads=2"
    assert changes(method="lora", profile="smoke", eval_limit=5, seed=3) == "eval_limit=5"  # the seed is no setting
    assert changes(method="base", eval_limit=5) == ""

