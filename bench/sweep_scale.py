"""The same sweep on 1 GPU and on N GPUs of this host, side by side: wall time, runs per hour,
speed-up, and how busy the workers were (sum of the runs' ``total_s`` over wall x workers).
``--workers-per-gpu 1,4`` also compares worker processes sharing each GPU (every GPU count with
every sharing count): on one GPU, whether overlapping several runs' host overheads pays.

Each setting runs in a fresh store (under --work), so nothing is shared between them; the runs are
the first --runs of the sweep's plan (all by default). Prints one line per setting and, with --out,
writes the figures as JSON.

Usage (GPU host):
  MLBENCH_DATA_DIR=../shared/data python bench/sweep_scale.py configs/table2.yaml --gpus 1,4 \
      --runs 16 --work /tmp/sweep-scale --out bench/results/sweep_scale.json [-- extra sweep flags]
  python bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu 1,4 --runs 8   # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mlbench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "metalora.cli", *args], cwd=REPO, env=env, text=True, check=False,
                          capture_output=True)


def plan_ids(config: str, store: Path, extra: list[str]) -> list[str]:
    listed = mlbench("sweep", config, "--dry-run", "--store", str(store), *extra)
    if listed.returncode:
        sys.exit(listed.stderr)
    return [line.split()[0] for line in listed.stdout.splitlines() if len(line.split()) > 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--gpus", default="1,4", help="GPU counts to compare, e.g. 1,2,4")
    parser.add_argument("--workers-per-gpu", default="1", help="worker processes per GPU to compare, e.g. 1,4")
    parser.add_argument("--cpu-workers", action="store_true",
                        help="compare --workers counts instead (CPU worker processes: checks the script)")
    parser.add_argument("--runs", type=int, default=None, help="only the first N runs of the plan")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlbench-sweep-scale"))
    parser.add_argument("--out", type=Path, default=None)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # flags passed to every mlbench sweep
    options = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    options.extra = extra

    figures = []
    flag = "--workers" if options.cpu_workers else "--gpus"
    sharing = [1] if options.cpu_workers else [int(n) for n in options.workers_per_gpu.split(",")]
    for gpus, per_gpu in [(g, k) for g in (int(n) for n in options.gpus.split(",")) for k in sharing]:
        store = options.work / f"gpus-{gpus}-x{per_gpu}-{time.strftime('%H%M%S')}"
        ids = plan_ids(options.config, store, options.extra)[: options.runs]
        shared = ["--workers-per-gpu", str(per_gpu)] if per_gpu > 1 else []
        started = time.perf_counter()
        result = mlbench("sweep", options.config, "--store", str(store), flag, str(gpus), *shared,
                         "--only", ",".join(ids), *options.extra)
        wall = time.perf_counter() - started
        if result.returncode:
            sys.exit(f"{flag} {gpus} {' '.join(shared)} failed:\n{result.stderr[-4000:]}")
        costs = [json.loads((store / run_id / "cost.json").read_text()) for run_id in ids
                 if (store / run_id / "DONE").is_file()]
        busy_s = sum(cost["time"]["total_s"] for cost in costs)  # = device_s on a GPU
        figure = {"gpus": gpus, "workers_per_gpu": per_gpu, "runs": len(ids), "done": len(costs),
                  "wall_s": round(wall, 1), "runs_per_hour": round(len(costs) * 3600 / wall, 2),
                  "busy": round(busy_s / (wall * gpus * per_gpu), 3)}
        figures.append(figure)
        base = figures[0]
        speedup = figure["runs_per_hour"] / base["runs_per_hour"] if base["runs_per_hour"] else float("nan")
        label = f"{flag} {gpus}" + (f" x{per_gpu} workers" if per_gpu > 1 else "")
        print(f"{label}: {figure['done']}/{figure['runs']} runs in {wall:.0f} s, "
              f"{figure['runs_per_hour']} runs/h, x{speedup:.2f} vs the first setting, "
              f"workers busy with runs {figure['busy']:.0%} of the wall time")
    if options.out:
        options.out.write_text(json.dumps({"config": options.config, "extra": options.extra, "figures": figures},
                                          indent=2) + "\n")


if __name__ == "__main__":
    main()
