"""NVIDIA's Multi-Process Service for the worker processes of one host launch (``--mps``).

Without MPS, processes sharing a GPU take turns: one context's kernels at a time. A worker of a
small model launches thousands of small kernels that each fill a fraction of the GPU, so four
workers saturate it in time while most of its multiprocessors idle. Under MPS their kernels run
side by side. The kernels are the same, but kernels that sum with floating-point atomics can add
in another order: before training ran deterministic kernels, a run's numbers under MPS differed
from its numbers without it. With deterministic training (the default), sweeps under MPS scored
the same as time-sliced ones, run for run, and took less time (measured: README, Scale-out). Runs
record the pipe (``env.json`` ``cuda_mps_pipe``); the report lists a leaderboard block that mixes
runs trained under MPS without deterministic kernels with others (``reports/numerics.py``).

The launcher starts its own control daemon with a private pipe and log directory, so it neither
needs root nor touches a daemon someone else runs, and stops it when the workers have ended. The
daemon sees the launcher's GPUs; under MPS a client's ``CUDA_VISIBLE_DEVICES`` counts within the
daemon's list (NVIDIA's MPS docs, "CUDA_VISIBLE_DEVICES"), which is why workers then get plain
indices (``launch.worker_env``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metalora.errors import MlbenchError

CONTROL = "nvidia-cuda-mps-control"
START_TIMEOUT_S = 10.0


def require_control() -> str:
    """The control program's path, or one line saying what is missing."""
    path = shutil.which(CONTROL)
    if path is None:
        raise MlbenchError(f"--mps needs {CONTROL} on PATH (part of NVIDIA's driver utilities); "
                           "leave out --mps to share GPUs by time slices")
    return path


def mps_environment(folder: Path) -> dict[str, str]:
    """What the daemon and its clients must agree on: where its pipes and logs are."""
    return {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}


@contextmanager
def mps_daemon(report=None) -> Iterator[dict[str, str]]:
    """Start a private MPS control daemon; yield the variables its clients need; stop it after.

    The pipe directory lives under a short temporary path: it holds Unix sockets, whose paths are
    limited to about 100 bytes, which a store's launch folder may exceed."""
    control = require_control()
    folder = Path(tempfile.mkdtemp(prefix="mlbench-mps-"))
    variables = mps_environment(folder)
    for path in variables.values():
        Path(path).mkdir()
    env = dict(os.environ) | variables
    started = subprocess.run([control, "-d"], check=False, env=env, capture_output=True, text=True)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        detail = (started.stderr or started.stdout).strip().splitlines()
        raise MlbenchError(f"--mps: {CONTROL} -d failed ({detail[-1] if detail else f'exit {started.returncode}'}); "
                           "leave out --mps to share GPUs by time slices")
    try:
        _wait_for_pipe(Path(variables["CUDA_MPS_PIPE_DIRECTORY"]))
        if report:
            report(f"MPS control daemon started for the workers (pipes in {variables['CUDA_MPS_PIPE_DIRECTORY']})")
        yield variables
    finally:
        subprocess.run([control], check=False, env=env, input="quit\n", capture_output=True, text=True)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_pipe(pipe: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(pipe.iterdir()):  # the daemon's control pipe appears once it listens
        if time.monotonic() > deadline:
            raise MlbenchError(f"--mps: the MPS control daemon made no control pipe in {pipe} within "
                               f"{START_TIMEOUT_S:.0f} s; leave out --mps to share GPUs by time slices")
        time.sleep(0.05)
