"""Running a sweep on more than one process: worker processes on this host (one per GPU), or jobs
on a SLURM cluster through submitit.

Every worker, wherever it runs, is the same command: ``mlbench sweep CONFIG --only ID,ID,...``,
which prepares the sweep and executes the listed runs in one process (so the runner keeps its
model and built tasks across them). Workers never coordinate with each other directly: each run
is claimed in the store before it trains (``RunStore.claim``), a finished run has its ``DONE``, so
two workers, two launchers or a launcher and a plain ``mlbench sweep`` never train one run twice.

- ``host``: ``--workers N`` processes on this machine; ``--gpus N`` is N workers, worker i seeing
  only GPU i (``CUDA_VISIBLE_DEVICES``), or N x K with ``--workers-per-gpu K`` (worker i on GPU
  i mod N): a run of a small model leaves a GPU mostly idle (its time goes to Python and kernel
  launches), so several processes on one GPU overlap their overheads. Worker i takes every M-th
  run that is not done (M workers), then helps with the others' runs from the end of their lists,
  so the workers rarely meet. ``--mps`` runs them under a private MPS daemon (``metalora.runs.mps``),
  so that workers sharing a GPU run their kernels side by side instead of taking turns.
- ``slurm``: the runs that are not done, in chunks of ``--runs-per-job``, as one submitit job
  array (partition, time limit, GPUs per job, array parallelism); a job with several GPUs runs
  host workers inside it.
- ``local``: the same submission through submitit's local executor: the cluster path, run on this
  machine (how CI exercises it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.estimate import Planned
from metalora.runs.mps import mps_daemon, require_control
from metalora.runs.progress import SweepProgress
from metalora.runs.runconfig import ExecutionOptions
from metalora.runs.store import RunStore

LAUNCHERS = ("host", "slurm", "local")
LAUNCH_FOLDER = ".launch"  # under the store; dot folders are not run folders for the report
Report = Callable[[str], None]


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "host"
    workers: int | None = None  # worker processes on this host (default 1, or --gpus)
    gpus: int | None = None  # one worker per GPU on this host
    partition: str | None = None
    time_min: int = 240  # a job's time limit
    gpus_per_job: int = 1
    array_parallelism: int = 16  # jobs of the array running at once
    runs_per_job: int = 1
    workers_per_gpu: int = 1  # worker processes sharing each GPU (host; and inside each cluster job)
    mps: bool = False  # host workers run under a private MPS daemon (metalora/runs/mps.py)

    def validate(self) -> LaunchOptions:
        if self.launcher not in LAUNCHERS:
            raise MlbenchError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        for name in ("workers", "gpus", "time_min", "gpus_per_job", "array_parallelism", "runs_per_job",
                     "workers_per_gpu"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                flag = "--" + name.replace("_", "-")
                raise MlbenchError(f"{flag} must be a positive whole number, got {value!r}")
        if self.gpus is not None and self.workers is not None and self.workers != self.gpus:
            raise MlbenchError(f"--gpus {self.gpus} starts one worker per GPU; leave out --workers {self.workers}")
        if self.launcher == "host" and self.workers_per_gpu != 1 and self.gpus is None:
            raise MlbenchError(f"--workers-per-gpu {self.workers_per_gpu} needs --gpus N (the GPUs to share); "
                               "without GPUs use --workers N")
        if self.launcher == "host":
            cluster_only = [f"--{f.name.replace('_', '-')}" for f in fields(self)
                            if f.name in ("partition", "time_min", "gpus_per_job", "array_parallelism", "runs_per_job")
                            and getattr(self, f.name) != f.default]
            if cluster_only:
                raise MlbenchError(f"{', '.join(cluster_only)}: for the cluster launchers only (--launcher slurm or local)")
        elif self.workers is not None or self.gpus is not None:
            raise MlbenchError("--workers and --gpus are for this host; with a cluster launcher use --gpus-per-job")
        if self.launcher == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
            raise MlbenchError("--launcher slurm needs SLURM's sbatch and srun on this machine (run it on a login "
                               "node); --launcher local runs the same jobs here")
        if self.mps:
            self._check_mps()
        if self.gpus is not None and self.gpus > (count := available_gpus()):
            raise MlbenchError(f"--gpus {self.gpus}: this host has {count} CUDA GPU(s); "
                               "use --workers N for worker processes without GPUs")
        return self

    def _check_mps(self) -> None:
        if self.launcher == "host" and self.gpus is None:
            raise MlbenchError("--mps lets the workers of --gpus N share a GPU's multiprocessors; give --gpus N")
        if self.launcher != "host" and self.gpus_per_job == 1 and self.workers_per_gpu == 1:
            raise MlbenchError("--mps is for jobs with several workers (--gpus-per-job N or --workers-per-gpu K); "
                               "a job of one worker has nothing to share")
        if self.launcher != "slurm":  # on SLURM the jobs' nodes have it, not necessarily the login node
            require_control()

    @property
    def worker_count(self) -> int:
        return self.gpus * self.workers_per_gpu if self.gpus else self.workers or 1

    def worker_gpu(self, index: int) -> int | None:
        """The GPU worker ``index`` sees (round robin, so the first N workers take one GPU each)."""
        return index % self.gpus if self.gpus else None


def assignments(run_ids: Sequence[str], workers: int) -> list[list[str]]:
    """Each worker's order: its own share (every N-th run), then the others' shares from their ends."""
    shares = [list(run_ids[i::workers]) for i in range(workers)]
    return [shares[i] + [run_id for j in range(1, workers) for run_id in reversed(shares[(i + j) % workers])]
            for i in range(workers)]


def longest_first(plan: Sequence, states: Mapping[str, str]) -> list[str]:
    """The runs not done, those with the most training first (example passes under the budget rule).

    Every run evaluates the same benchmarks, so training is what differs: starting the full-data and
    100-per-task runs first (longest processing time first) keeps a sweep from ending with one
    worker training a big run while the others wait. Ties, evaluation-only runs and the base model
    (no training) keep the sweep file's order, after the trained runs.
    """
    def passes(prepared) -> int:
        return prepared.budget.passes if states[prepared.run_id] == "to run" and prepared.budget else 0

    pending = [prepared for prepared in plan if states[prepared.run_id] != "done"]
    return [prepared.run_id for prepared in sorted(pending, key=passes, reverse=True)]


def chunks(run_ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(run_ids[start:start + size]) for start in range(0, len(run_ids), size)]


def execution_args(execution: ExecutionOptions) -> list[str]:
    """The execution flags that reproduce ``execution`` in a worker (paths made absolute)."""
    args = []
    for field in fields(execution):
        value = getattr(execution, field.name)
        if value is None:
            continue
        if field.name == "data_root" and not str(value).startswith(("hf://", "hub:")):
            value = Path(value).expanduser().resolve()
        args += ["--" + field.name.replace("_", "-"), str(value)]
    return args


def worker_command(config: Path, store: Path, profile: str | None, execution: ExecutionOptions) -> list[str]:
    """``mlbench sweep`` for a worker, without ``--only`` (each worker adds its runs)."""
    command = [sys.executable, "-m", "metalora.cli", "sweep", str(Path(config).resolve()),
               "--store", str(Path(store).resolve()), *execution_args(execution)]
    return command + (["--profile", profile] if profile else [])


def visible_gpu(gpu: int, launcher_visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of the worker on this launcher's ``gpu``-th GPU: the launcher's
    own list, if it was given one (``CUDA_VISIBLE_DEVICES=2,3 mlbench sweep --gpus 2`` runs on GPUs
    2 and 3, not 0 and 1), else the GPU's index."""
    entries = [entry.strip() for entry in (launcher_visible or "").split(",") if entry.strip()]
    if not entries:
        return str(gpu)
    if gpu >= len(entries):
        raise MlbenchError(
            f"--gpus asks for GPU {gpu + 1} but CUDA_VISIBLE_DEVICES={launcher_visible} shows {len(entries)}; "
            f"ask for at most {len(entries)} GPUs or widen CUDA_VISIBLE_DEVICES"
        )
    return entries[gpu]


def worker_env(gpu: int | None, threads: int | None, mps: Mapping[str, str] | None = None) -> dict[str, str]:
    """A worker's environment: this code first on the path (so workers run exactly the launcher's
    code, installed or not), its GPU, and its share of the CPU threads. Under an MPS daemon
    (``mps``: its variables) the GPU is an index within the daemon's GPUs, which are the launcher's."""
    env = dict(os.environ) | dict(mps or {})
    code = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([code, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["TQDM_DISABLE"] = "1"  # workers write to log files
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu) if mps else visible_gpu(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def available_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_folder(store: RunStore, sweep_name: str) -> Path:
    folder = store.root / LAUNCH_FOLDER / f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_host_workers(
    command: Sequence[str], run_ids: Sequence[str], store: RunStore, options: LaunchOptions, folder: Path,
    report: Report, poll_s: float = 1.0, planned: Mapping[str, Planned] | None = None,
) -> None:
    """Start one worker process per share of ``run_ids``, print progress as runs finish, wait
    (``planned``: the runs' plans, for the ETA, ``metalora.runs.progress``)."""
    with mps_daemon(report) if options.mps else nullcontext() as mps:
        _run_host_workers(command, run_ids, store, options, folder, report, poll_s, mps, planned)


def _run_host_workers(command, run_ids, store, options, folder, report, poll_s, mps, planned) -> None:
    workers = min(options.worker_count, len(run_ids))
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = []
    try:
        for index, share in enumerate(assignments(list(run_ids), workers)):
            log = folder / f"worker-{index}.log"
            gpu = options.worker_gpu(index)
            with open(log, "w", encoding="utf-8") as stream:
                process = subprocess.Popen([*command, "--only", ",".join(share)], stdout=stream,
                                           stderr=subprocess.STDOUT, env=worker_env(gpu, threads, mps))
            processes.append((index, process, log))
            report(f"worker {index}{f' (GPU {gpu})' if gpu is not None else ''}: pid {process.pid}, "
                   f"{len(run_ids[index::workers])} runs of its own, log {log}")
        _follow(processes, SweepProgress(store, run_ids, planned), report, poll_s)
    except BaseException as error:
        # A Ctrl-C at the terminal reaches the workers too (one process group): give them a moment to
        # record their interrupted runs themselves; an error here stops them at once.
        _stop_workers([process for _, process, _ in processes], WORKER_GRACE_S if isinstance(error, KeyboardInterrupt) else 0)
        raise
    failed = [(index, process.returncode, log) for index, process, log in processes if process.returncode]
    if failed:
        index, code, log = failed[0]
        raise MlbenchError(f"{len(failed)} of {workers} workers failed; worker {index} exited with {code}: "
                           f"{_last_line(log)} (log: {log})")


WORKER_GRACE_S = 15.0


def _stop_workers(processes: Sequence[subprocess.Popen], grace_s: float) -> None:
    """Wait up to ``grace_s`` for the workers to end on their own, then terminate the rest and reap them."""
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait()


def _follow(processes, progress: SweepProgress, report: Report, poll_s: float) -> None:
    while True:
        running = any(process.poll() is None for _, process, _ in processes)
        if line := progress.poll():
            report(line)
        if not running:
            return
        time.sleep(poll_s)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def make_executor(options: LaunchOptions, folder: Path, name: str):
    """submitit's AutoExecutor for the launcher, with the job array's parameters."""
    import submitit

    cluster = "local" if options.launcher == "local" else "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    # The local executor would hand out GPUs this machine may not have.
    gpus = options.gpus_per_job if cluster == "slurm" or available_gpus() else 0
    parameters = {"name": name, "timeout_min": options.time_min, "gpus_per_node": gpus, "tasks_per_node": 1,
                  "nodes": 1}
    if cluster == "slurm":
        parameters |= {"slurm_array_parallelism": options.array_parallelism}
        if options.partition:
            parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def job_command(command: Sequence[str], options: LaunchOptions) -> list[str]:
    """What one cluster job runs, before its run ids: the worker command, itself launching host
    workers when the job has several GPUs or shares its GPU among several workers."""
    shared = options.workers_per_gpu > 1
    return [*command, *(["--gpus", str(options.gpus_per_job)] if options.gpus_per_job > 1 or shared else []),
            *(["--workers-per-gpu", str(options.workers_per_gpu)] if shared else []),
            *(["--mps"] if options.mps else []), "--only"]


def submit_jobs(
    command: Sequence[str], run_ids: Sequence[str], store: RunStore, options: LaunchOptions, folder: Path,
    report: Report, wait: bool = True, poll_s: float = 5.0, planned: Mapping[str, Planned] | None = None,
) -> list:
    """Submit the runs as a submitit job array; with ``wait``, follow them until they end
    (``planned``: the runs' plans, for the ETA)."""
    import submitit

    executor = make_executor(options, folder / "submitit", f"mlbench-{folder.name.split('-')[0]}")
    cluster = executor.cluster
    function = submitit.helpers.CommandFunction(job_command(command, options), cwd=os.getcwd(),
                                                env=worker_env(None, None))
    groups = chunks(list(run_ids), options.runs_per_job)
    jobs = executor.map_array(function, [",".join(group) for group in groups])
    report(f"submitted {len(jobs)} {cluster} job(s) for {len(run_ids)} runs"
           + (f": {jobs[0].job_id.split('_')[0]}" if jobs else "") + f"; logs under {folder / 'submitit'}")
    if not wait:
        return jobs
    progress = SweepProgress(store, run_ids, planned)
    while True:
        finished = all(job.done() for job in jobs)
        if line := progress.poll():
            report(line)
        if finished:
            break
        time.sleep(poll_s)
    failed = []
    for job in jobs:
        try:
            job.result()
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as error:
            failed.append((job, error))
    if failed:
        job, error = failed[0]
        message = str(error).strip().splitlines()
        raise MlbenchError(f"{len(failed)} of {len(jobs)} jobs failed; job {job.job_id}: "
                           f"{message[-1] if message else type(error).__name__} (logs: {job.paths.stdout.parent})")
    return jobs
