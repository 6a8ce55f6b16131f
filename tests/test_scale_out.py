"""Sweeps over several worker processes and through submitit, on a tiny local model (CPU): every run
done exactly once, none trained twice, the same results as one worker."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from metalora.cli import app
from metalora.errors import MlbenchError
from metalora.runs.launch import LaunchOptions, assignments, chunks, job_command, make_executor, worker_env
from metalora.runs.progress import Progress
from metalora.runs.store import RunStore
from tests.test_store_sweep import write_sweep


def cli(*args):
    return CliRunner().invoke(app, list(args))


def test_each_worker_takes_its_share_then_the_others_from_their_ends():
    assert assignments(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e", "d", "b"], ["b", "d", "e", "c", "a"]]
    assert assignments(["a", "b", "c"], 3) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert chunks(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_launched_sweeps_start_the_runs_with_the_most_training_first():
    from types import SimpleNamespace

    from metalora.runs.launch import longest_first

    def run(run_id, passes):
        return SimpleNamespace(run_id=run_id, budget=SimpleNamespace(passes=passes) if passes is not None else None)

    plan = [run("base", None), run("lora10", 1600), run("lora100", 16000), run("done", 20000),
            run("hydra10", 1600), run("evalonly", 20000), run("full", 20000)]
    states = {"base": "to run", "lora10": "to run", "lora100": "to run", "done": "done", "hydra10": "to run",
              "evalonly": "eval only", "full": "to run"}
    # most passes first; ties (and the untrained) in the file's order; done runs left out
    assert longest_first(plan, states) == ["full", "lora100", "lora10", "hydra10", "base", "evalonly"]


def test_workers_per_gpu_share_the_gpus_round_robin():
    shared = LaunchOptions(gpus=2, workers_per_gpu=3)
    assert shared.worker_count == 6
    assert [shared.worker_gpu(index) for index in range(6)] == [0, 1, 0, 1, 0, 1]
    assert LaunchOptions(gpus=4).worker_count == 4 and LaunchOptions(workers=3).worker_count == 3
    assert LaunchOptions(workers=3).worker_gpu(1) is None  # CPU workers see no GPU
    # A cluster job runs the worker command itself, with host workers when it has more than one.
    worker = ["python", "-m", "metalora.cli", "sweep", "grid.yaml"]
    assert job_command(worker, LaunchOptions("local")) == [*worker, "--only"]
    assert job_command(worker, LaunchOptions("local", gpus_per_job=2)) == [*worker, "--gpus", "2", "--only"]
    assert job_command(worker, LaunchOptions("local", workers_per_gpu=3)) == [
        *worker, "--gpus", "1", "--workers-per-gpu", "3", "--only"]


def test_workers_see_the_launchers_own_gpus(monkeypatch):
    # CUDA_VISIBLE_DEVICES=2,3 mlbench sweep --gpus 2 (or a SLURM job given GPUs 3 and 5): the
    # workers run on those GPUs, not on the host's first two.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert [worker_env(gpu, None)["CUDA_VISIBLE_DEVICES"] for gpu in (0, 1)] == ["2", "3"]
    with pytest.raises(MlbenchError, match="CUDA_VISIBLE_DEVICES=2, 3 shows 2"):
        worker_env(2, None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    assert worker_env(1, None)["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_env(1, None)["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(None, 2)  # CPU workers: no GPU named


def test_progress_line_and_eta():
    progress = Progress(total=10, done=4, running=2, failed=0, finished_now=2, elapsed_s=60.0)
    assert progress.left == 4 and progress.eta_s == 180.0  # 6 runs not done, one every 30 s
    assert progress.line() == "progress: 4/10 done, 2 running, 4 left, ETA 3m 00s"
    waiting = Progress(total=3, done=1, running=1, failed=1, finished_now=0, elapsed_s=5.0)
    assert waiting.line() == "progress: 1/3 done, 1 running, 0 left, 1 failed, ETA unknown until a run finishes"
    assert Progress(3, 3, 0, 0, 3, 7300.0).line() == "progress: 3/3 done, 0 running, 0 left, ETA 0s"
    assert Progress(4, 1, 1, 0, 1, 3000.0).line().endswith("ETA 2h 30m")


def test_the_eta_weighs_runs_by_their_estimated_cost(tmp_path):
    """A run of 9,000 example passes finishing first is not a third of three runs' work: with the
    runs' plans the ETA counts the seconds the cost model estimates for each (made again from the
    store's finished runs as runs finish), and counts runs while some run has no estimate."""
    from metalora.runs.progress import SweepProgress
    from tests.test_runs_estimate import config, finish, planned

    # Measured before the sweep: LoRA 0.01 s per pass, 100 s for the rest of a run.
    finish(tmp_path, "a" * 16, config("lora", shots=25), 10.0, 110.0, 1000)
    store = RunStore(tmp_path)
    plan = {"b" * 16: planned("lora", 9000), "c" * 16: planned("lora", 1000), "d" * 16: planned("lora", 1000)}
    progress = SweepProgress(store, list(plan), plan)
    before = progress.read()
    assert (before.left_cost_s, before.finished_cost_s, before.eta_s) == (410.0, 0.0, None)
    finish(tmp_path, "b" * 16, config("lora", shots=100), 90.0, 190.0, 9000)  # the long one, at the same rates
    after = progress.read()
    assert (after.done, after.finished_now, after.left_cost_s, after.finished_cost_s) == (1, 1, 220.0, 190.0)
    # 95 s of wall time for 190 estimated seconds: 110 s for the 220 left (counting runs: 190 s).
    assert Progress(3, 1, 0, 0, 1, 95.0, left_cost_s=220.0, finished_cost_s=190.0).eta_s == 110.0
    assert Progress(3, 1, 0, 0, 1, 95.0).eta_s == 190.0
    # A method with no finished run of its own has no seconds per pass: the ETA counts runs.
    mixed = {**plan, "e" * 16: planned("hydralora", 1000)}
    assert SweepProgress(store, list(mixed), mixed).read().left_cost_s is None


@pytest.mark.parametrize("flags, message", [
    (["--gpus", "2", "--workers", "3"], "--gpus 2 starts one worker per GPU; leave out --workers 3"),
    (["--gpus", "1"], "--gpus 1: this host has 0 CUDA GPU(s); use --workers N for worker processes without GPUs"),
    (["--workers", "0"], "--workers must be a positive whole number, got 0"),
    (["--partition", "gpu"], "--partition: for the cluster launchers only (--launcher slurm or local)"),
    (["--launcher", "pbs"], "--launcher must be one of host, slurm, local, got 'pbs'"),
    (["--launcher", "slurm", "--workers", "2"], "--workers and --gpus are for this host"),
    (["--workers-per-gpu", "2"], "--workers-per-gpu 2 needs --gpus N (the GPUs to share); without GPUs use --workers N"),
    (["--workers-per-gpu", "0"], "--workers-per-gpu must be a positive whole number, got 0"),
    (["--launcher", "slurm"], "--launcher slurm needs SLURM's sbatch and srun on this machine"),
])
def test_bad_launch_options_are_one_line_before_any_work(tmp_path, tiny_model_dir, flags, message):
    if flags == ["--gpus", "1"] and torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    if flags == ["--launcher", "slurm"] and shutil.which("srun"):
        pytest.skip("this host has SLURM")
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora"]})
    result = cli("sweep", str(sweep), "--store", str(tmp_path / "store"), *flags)
    assert result.exit_code == 2 and result.stderr.startswith("mlbench: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "store").exists()


def test_slurm_job_array_parameters(tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    bin_dir = tmp_path / "bin"  # what a login node has on its PATH; never run here
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    options = LaunchOptions("slurm", partition="gpu", time_min=90, gpus_per_job=2, array_parallelism=3).validate()
    executor = make_executor(options, tmp_path, "mlbench-table2")
    assert executor.cluster == "slurm"
    sbatch = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path, map_count=5,
                                 **executor._executor.parameters)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --job-name=mlbench-table2", "#SBATCH --ntasks-per-node=1", "#SBATCH --array=0-4%3"):
        assert line in sbatch.splitlines()


def _done_lines(text: str) -> list[str]:
    """Run ids whose header line ("[i/n] run ID: ...") is followed by its "  done in ..." line."""
    return re.findall(r"run ([0-9a-f]{16}): [^\n]*\n(?:  (?!done)[^\n]*\n)*  done", text)


def test_two_workers_run_every_run_once_with_one_workers_results(tmp_path, tiny_model_dir, data_root):
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora", "metalora"]},
                        runs=[{"method": "base"}])
    common = ["--data-root", str(data_root.path), "--device", "cpu"]
    parallel = tmp_path / "parallel"
    result = cli("sweep", str(sweep), "--store", str(parallel), "--workers", "2", *common)
    assert result.exit_code == 0, result.output
    assert "progress: 3/3 done, 0 running, 0 left, ETA 0s" in result.output
    assert "finished: 3 of 3 runs done now, 0 were already done" in result.output
    rows = RunStore(parallel).rows()
    assert len(rows) == 3 and all(row.status == "done" for row in rows)
    logs = sorted((parallel / ".launch").glob("grid-*/worker-*.log"))
    assert len(logs) == 2
    texts = [log.read_text() for log in logs]
    done = [run_id for text in texts for run_id in _done_lines(text)]
    assert sorted(done) == sorted(row.run_id for row in rows)  # each run finished once, by one worker
    # (Which worker ran which run depends on timing: a worker that starts late may find every run
    # taken. The shares themselves are test_each_worker_takes_its_share_then_the_others_from_their_ends.)
    for text in texts:
        assert "resuming training" not in text and "reusing the trained adapter" not in text

    single = tmp_path / "single"
    result = cli("sweep", str(sweep), "--store", str(single), *common)
    assert result.exit_code == 0, result.output
    assert "progress: 3/3 done" in result.output
    assert sorted(r.run_id for r in RunStore(single).rows()) == sorted(r.run_id for r in rows)
    for row in rows:
        a, b = parallel / row.run_id, single / row.run_id
        assert json.loads((a / "eval/results.json").read_text())["aggregates"] == \
            json.loads((b / "eval/results.json").read_text())["aggregates"]
        if row.method != "base":
            adapter_a = load_file(a / "adapter/adapter.safetensors")
            adapter_b = load_file(b / "adapter/adapter.safetensors")
            assert adapter_a.keys() == adapter_b.keys()
            assert all(torch.equal(adapter_a[k], adapter_b[k]) for k in adapter_a)

    again = cli("sweep", str(sweep), "--store", str(parallel), "--workers", "2", *common)
    assert again.exit_code == 0 and "3 already done, 0 to run" in again.output and "nothing to run" in again.output


def test_ctrl_c_in_a_multi_worker_sweep_says_what_was_kept_and_how_to_resume(tmp_path, tiny_model_dir, data_root,
                                                                          monkeypatch):
    from metalora.runs import launch

    def interrupted(command, run_ids, store, options, folder, report, **kwargs):  # as if Ctrl-C reached the supervisor
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "run_host_workers", interrupted)
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora"], "seed": [0, 1]})
    result = cli("sweep", str(sweep), "--store", str(tmp_path / "store"), "--workers", "2",
                 "--data-root", str(data_root.path), "--device", "cpu")
    assert result.exit_code == 130
    assert ("interrupted: 0 of 2 runs finished and are kept; the others resume from their last checkpoint when "
            "you run the same command again") in result.output
    assert "nothing was written" not in result.output


def test_workers_get_a_grace_period_to_end_on_their_own_then_are_terminated():
    import subprocess
    import sys

    from metalora.runs.launch import _stop_workers

    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _stop_workers([quick, stuck], grace_s=2)
    assert quick.returncode == 0  # it finished by itself within the grace period
    assert stuck.returncode == -15  # SIGTERM after the grace period
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _stop_workers([busy], grace_s=0)  # an error in the supervisor: no grace
    assert busy.returncode == -15


def test_submitit_local_executor_runs_the_runs_in_the_store(tmp_path, tiny_model_dir, data_root):
    sweep = write_sweep(tmp_path / "grid.yaml", tiny_model_dir, {"method": ["lora"], "seed": [0, 1]})
    store = tmp_path / "store"
    result = cli("sweep", str(sweep), "--store", str(store), "--launcher", "local", "--time-min", "30",
                 "--data-root", str(data_root.path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "submitted 2 local job(s) for 2 runs" in result.output
    assert "progress: 2/2 done" in result.output
    rows = RunStore(store).rows()
    assert len(rows) == 2 and all(row.status == "done" for row in rows)
    job_logs = list(Path(store / ".launch").glob("grid-*/submitit/*_log.err"))  # the worker's stderr
    assert len(job_logs) == 2
    done = [run_id for log in job_logs for run_id in _done_lines(log.read_text())]
    assert sorted(done) == sorted(row.run_id for row in rows)
    for row in rows:
        assert (store / row.run_id / "DONE").is_file() and (store / row.run_id / "cost.json").is_file()

    again = cli("sweep", str(sweep), "--store", str(store), "--launcher", "local",
                "--data-root", str(data_root.path), "--device", "cpu")
    assert again.exit_code == 0 and "nothing to run" in again.output  # only runs not done are submitted


FAKE_MPS_CONTROL = """#!/bin/sh
# Stands in for nvidia-cuda-mps-control: -d starts (a control pipe appears), "quit" on stdin stops.
log="$(dirname "$0")/calls.log"
if [ "$1" = "-d" ]; then
  [ -n "$FAIL" ] && { echo "cannot start: no GPU for MPS" >&2; exit 1; }
  echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$log"; touch "$CUDA_MPS_PIPE_DIRECTORY/control"
else
  echo "$(cat) $CUDA_MPS_PIPE_DIRECTORY" >> "$log"
fi
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    control = folder / "nvidia-cuda-mps-control"
    control.write_text(FAKE_MPS_CONTROL)
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder / "calls.log"


def test_mps_workers_share_a_private_daemon_that_is_stopped_after_them(tmp_path, fake_mps, monkeypatch):
    import sys

    from metalora.runs.launch import run_host_workers

    # Two workers that write down the MPS pipe and the GPU they were given, then end.
    seen = tmp_path / "seen"
    seen.mkdir()
    script = ("import os, sys; open(os.path.join(sys.argv[1], sys.argv[3]), 'w').write("
              "os.environ['CUDA_MPS_PIPE_DIRECTORY'] + ' ' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'))")
    worker = [sys.executable, "-c", script, str(seen)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the daemon sees GPUs 2 and 3; workers count within them
    options = LaunchOptions(gpus=2, mps=True)  # built without validate(): this machine has no GPU
    lines = []
    run_host_workers(worker, ["0123456789abcdef", "fedcba9876543210"], RunStore(tmp_path / "store"), options, tmp_path, lines.append,
                     poll_s=0.05)
    calls = fake_mps.read_text().splitlines()
    assert len(calls) == 2 and calls[0].startswith("start ") and calls[1].startswith("quit ")
    pipe = calls[0].split()[1]
    assert calls[1].split()[1] == pipe  # stopped through the same private pipe it was started with
    assert sorted(path.read_text() for path in seen.iterdir()) == [f"{pipe} 0", f"{pipe} 1"]
    assert not Path(pipe).exists()  # its folder is removed
    assert any(line.startswith("MPS control daemon started") for line in lines)


def test_mps_options_are_checked_before_any_work(fake_mps, monkeypatch):
    with pytest.raises(MlbenchError, match="give --gpus N"):
        LaunchOptions(mps=True).validate()
    with pytest.raises(MlbenchError, match="a job of one worker has nothing to share"):
        LaunchOptions("local", mps=True).validate()
    worker = ["python", "-m", "metalora.cli", "sweep", "grid.yaml"]
    assert job_command(worker, LaunchOptions("local", gpus_per_job=2, mps=True)) == [
        *worker, "--gpus", "2", "--mps", "--only"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MlbenchError, match="needs nvidia-cuda-mps-control on PATH"):
        LaunchOptions("local", gpus_per_job=2, mps=True).validate()


def test_an_mps_daemon_that_fails_to_start_is_one_line(fake_mps, monkeypatch):
    from metalora.runs.mps import mps_daemon

    monkeypatch.setenv("FAIL", "1")
    failed = r"nvidia-cuda-mps-control -d failed \(cannot start: no GPU for MPS\)"
    with pytest.raises(MlbenchError, match=failed), mps_daemon():
        pass
