"""Wall time of a whole ``make`` target as a user runs it (``make reproduce-table2``), to its end.

Runs ``make TARGET`` in the repository with a fresh store and site (``STORE=``/``SITE=`` under a
temporary folder unless ``--workdir`` is given) and records the exit code, the wall seconds, the
machine (CPU count, GPU names, load average at start and end: a shared machine runs slower), the
code revision, and a summary of the store it produced: per run its method, shots, profile and
``cost.json`` phases (model load, training, evaluation, total), and per method the median run wall
time. Extra make variables pass through (``--var SWEEP_FLAGS=...``). With ``--deadline S`` a target
still running after S seconds gets Ctrl-C (SIGINT to its process group: finished runs are kept) and
the record says how many runs finished by then. README's "Wall times" figures:

    python bench/make_walltime.py reproduce-table2 --out bench/results/reproduce_table2_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from metalora.provenance import code_revision
from metalora.runs.estimate import finished_runs
from metalora.runs.store import CONFIG_FILE, COST_FILE, DONE_FILE

REPO = Path(__file__).resolve().parents[1]


def revision() -> str:
    """The code's commit, as a run records it (a git archive on a machine without git included)."""
    return code_revision()[0]


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=False)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def run_record(folder: Path) -> dict:
    """One run folder's setting (method, shots, variant, profile, seed), whether it finished, and
    what its cost.json recorded (phase times, peak memory; None where there is none yet)."""
    config = json.loads((folder / CONFIG_FILE).read_text()).get("config", {})
    cost_path = folder / COST_FILE
    cost = json.loads(cost_path.read_text()) if cost_path.exists() else {}
    time_record = cost.get("time", {})
    return {"run_id": folder.name, "method": config.get("method"), "shots": config.get("shots"),
            "variant": (config.get("method_options") or {}).get("variant"), "profile": config.get("profile"),
            "seed": (config.get("train") or {}).get("seed"), "finished": (folder / DONE_FILE).exists(),
            "model_load_s": time_record.get("model_load_s"), "training_s": time_record.get("training_s"),
            "eval_s": time_record.get("eval_s"), "total_s": time_record.get("total_s"),
            "peak_bytes": cost.get("memory", {}).get("peak_bytes")}


def store_summary(store: Path) -> dict:
    """Per run (folder with a config.json) its setting and recorded phases; per method the median
    wall time of its finished runs (``metalora.runs.estimate.finished_runs``, what a sweep's dry run
    estimates from)."""
    runs = [run_record(config_path.parent) for config_path in sorted(store.glob(f"*/{CONFIG_FILE}"))]
    by_method: dict[str, list[float]] = {}
    for finished in finished_runs(store):
        by_method.setdefault(finished.method, []).append(finished.total_s)
    return {"runs": runs, "finished": sum(run["finished"] for run in runs),
            "median_total_s_by_method": {method: round(statistics.median(walls), 1) for method, walls in by_method.items()}}


def stop(process: subprocess.Popen, grace_s: float = 120.0) -> None:
    """Ctrl-C to the target's process group (runs keep what they finished); SIGTERM if it is still there after ``grace_s``."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()


def main() -> None:
    # A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and an ignored signal stays
    # ignored across exec: the target would never see the Ctrl-C. A handler here is reset to the
    # default in the children, so they can be interrupted.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="The make target, e.g. reproduce-table2.")
    parser.add_argument("--var", action="append", default=[], help="A make variable NAME=VALUE (repeatable).")
    parser.add_argument("--workdir", type=Path, help="Where the store and site go (default: a temporary folder, removed).")
    parser.add_argument("--deadline", type=float, help="Interrupt the target after this many seconds.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        store, site = workdir / "runs", workdir / "site"
        command = ["make", args.target, f"STORE={store}", f"SITE={site}", *args.var]
        result = {"command": " ".join(command), "revision": revision(),
                  "machine": {"cpus": os.cpu_count(), "gpus": gpu_names(), "platform": platform.platform(),
                              "load_average_start": os.getloadavg()}}
        started = time.perf_counter()
        with open(workdir / "make.log", "w") if args.workdir else open(os.devnull, "w") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            result["interrupted_at_deadline"] = False
            try:
                process.wait(timeout=args.deadline)
            except subprocess.TimeoutExpired:
                result["interrupted_at_deadline"] = True
                result["deadline_s"] = args.deadline
                stop(process)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        result["exit_code"] = process.returncode
        result["machine"]["load_average_end"] = os.getloadavg()
        result["store"] = store_summary(store)
        result["report_built"] = (site / "index.html").exists()
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
