"""The same sweep on 1 GPU and on N GPUs of this host, side by side: wall time, runs per hour,
speed-up, and how busy the workers were (sum of the runs' ``total_s`` over wall x workers).
``--workers-per-gpu 1,4`` also compares worker processes sharing each GPU (every GPU count with
every sharing count): on one GPU, whether overlapping several runs' host overheads pays.

Each setting runs in a fresh store (under --work), so nothing is shared between them; the runs are
the sweep's plan, those whose dry-run line matches --match (a regular expression, e.g. ``'shots 10,
seed [0-3],'``) if given, the first --runs of them if given. ``--eval-limit N`` evaluates N items
per task: the script writes a copy of the config with ``eval_limit: N`` among its defaults into
--work (the runs get their own ids) and sweeps that, so a GPU session can afford the comparison
with the runs' full training. Prints one line per setting and, with --out, writes the figures as
JSON.

Usage (GPU host):
  MLBENCH_DATA_DIR=../shared/data python bench/sweep_scale.py configs/table2.yaml --gpus 1,4 \
      --runs 16 --work /tmp/sweep-scale --out bench/results/sweep_scale.json [-- extra sweep flags]
  python bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu 1,4 --runs 8   # one GPU
  python bench/sweep_scale.py configs/table2.yaml --gpus 1,2 --workers-per-gpu 4 \
      --match 'shots 10, seed [0-3],' --eval-limit 50 --out bench/results/sweep_scale.json   # 2 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from make_walltime import gpu_names, revision, run_record

from metalora.runs.store import DONE_FILE

REPO = Path(__file__).resolve().parents[1]


def mlbench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "metalora.cli", *args], cwd=REPO, env=env, text=True, check=False,
                          capture_output=True)


RUN_LINE = re.compile(r"^([0-9a-f]{16})\s")  # a dry run's run lines start with the run id; its header does not


def plan_ids(config: str, store: Path, extra: list[str], match: str | None) -> list[str]:
    listed = mlbench("sweep", config, "--dry-run", "--store", str(store), *extra)
    if listed.returncode:
        sys.exit(listed.stderr)
    pattern = re.compile(match) if match else None
    return [found.group(1) for line in listed.stdout.splitlines()
            if (found := RUN_LINE.match(line)) and (pattern is None or pattern.search(line))]


def limited_config(config: str, eval_limit: int, work: Path) -> str:
    """A copy of the sweep file with ``eval_limit`` among its defaults, written under ``work``."""
    document = yaml.safe_load(Path(config).read_text())
    document.setdefault("defaults", {})["eval_limit"] = eval_limit
    copy = work / f"{Path(config).stem}-eval-limit-{eval_limit}.yaml"
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--gpus", default="1,4", help="GPU counts to compare, e.g. 1,2,4")
    parser.add_argument("--workers-per-gpu", default="1", help="worker processes per GPU to compare, e.g. 1,4")
    parser.add_argument("--cpu-workers", action="store_true",
                        help="compare --workers counts instead (CPU worker processes: checks the script)")
    parser.add_argument("--match", default=None, help="only the runs whose dry-run line matches this regex")
    parser.add_argument("--runs", type=int, default=None, help="only the first N runs of the plan (after --match)")
    parser.add_argument("--mps", action="store_true", help="launch the workers with --mps (an MPS daemon of their own)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate N items per task (a config copy)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlbench-sweep-scale"))
    parser.add_argument("--out", type=Path, default=None)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # flags passed to every mlbench sweep
    options = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    options.extra = extra

    options.work.mkdir(parents=True, exist_ok=True)
    config = options.config if options.eval_limit is None else limited_config(options.config, options.eval_limit,
                                                                               options.work)
    figures = []
    flag = "--workers" if options.cpu_workers else "--gpus"
    sharing = [1] if options.cpu_workers else [int(n) for n in options.workers_per_gpu.split(",")]
    for gpus, per_gpu in [(g, k) for g in (int(n) for n in options.gpus.split(",")) for k in sharing]:
        store = options.work / f"gpus-{gpus}-x{per_gpu}-{time.strftime('%H%M%S')}"
        ids = plan_ids(config, store, options.extra, options.match)[: options.runs]
        if not ids:
            sys.exit(f"no run of {config} matches --match {options.match!r}")
        shared = (["--workers-per-gpu", str(per_gpu)] if per_gpu > 1 else []) + (["--mps"] if options.mps else [])
        started = time.perf_counter()
        result = mlbench("sweep", config, "--store", str(store), flag, str(gpus), *shared,
                         "--only", ",".join(ids), *options.extra)
        wall = time.perf_counter() - started
        if result.returncode:
            sys.exit(f"{flag} {gpus} {' '.join(shared)} failed:\n{result.stderr[-4000:]}")
        costs = {run_id: run_record(store / run_id) for run_id in ids if (store / run_id / DONE_FILE).is_file()}
        busy_s = sum(record["total_s"] for record in costs.values())  # = device_s on a GPU
        figure = {"gpus": gpus, "workers_per_gpu": per_gpu, "mps": options.mps, "runs": len(ids), "done": len(costs),
                  "wall_s": round(wall, 1), "runs_per_hour": round(len(costs) * 3600 / wall, 2),
                  "busy": round(busy_s / (wall * gpus * per_gpu), 3), "run_costs": costs}
        figures.append(figure)
        base = figures[0]
        speedup = figure["runs_per_hour"] / base["runs_per_hour"] if base["runs_per_hour"] else float("nan")
        label = f"{flag} {gpus}" + (f" x{per_gpu} workers" if per_gpu > 1 else "") + (" under MPS" if options.mps else "")
        print(f"{label}: {figure['done']}/{figure['runs']} runs in {wall:.0f} s, "
              f"{figure['runs_per_hour']} runs/h, x{speedup:.2f} vs the first setting, "
              f"workers busy with runs {figure['busy']:.0%} of the wall time")
    if options.out:
        options.out.write_text(json.dumps({"config": options.config, "match": options.match,
                                           "eval_limit": options.eval_limit, "extra": options.extra,
                                           "code_revision": revision(), "gpus": gpu_names(),
                                           "load_average": os.getloadavg(), "figures": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
