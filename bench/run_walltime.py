"""Wall time of ``mlbench run`` as a user runs it: one fresh process per method, a fresh store.

Prints one JSON object (and writes it with ``--out``): per method the command, its exit code, its
wall seconds and the phase durations the run printed (model load, training, evaluation), plus the
machine (CPU count, load average at start and end: a shared machine runs slower). The default is
the CPU quick profile on the default model, the README's "Wall times" figures:

    python bench/run_walltime.py --out bench/results/run_walltime_cpu_quick.json
    python bench/run_walltime.py --methods lora --extra=--profile --extra=full   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = {"model_load_s": r"model load ([^,]+)", "training_s": r"training ([^,]+)",
          "eval_s": r"evaluation ([^,]+)", "total_s": r"total (.+)$"}


def parse_seconds(text: str) -> float:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min`` (metalora.runs.display.seconds) back to seconds."""
    total = 0.0
    for amount, unit in re.findall(r"([\d.]+) (h|min|s)\b", text):
        total += float(amount) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def _recorded_cost(store: Path, method: str) -> dict | None:
    """The cost.json (phase times, items/s per benchmark, peak memory) of the store's newest run of
    ``method``, as the run recorded it."""
    costs = [config.with_name("cost.json") for config in store.glob("*/config.json")
             if json.loads(config.read_text()).get("config", {}).get("method") == method]  # fmt: skip
    costs = [cost for cost in costs if cost.is_file()]
    return json.loads(max(costs, key=lambda cost: cost.stat().st_mtime).read_text()) if costs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="base,lora,metalora,hydralora")
    parser.add_argument("--extra", action="append", default=[], help="More mlbench run flags (repeatable).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "load_average_start": os.getloadavg()}, "runs": {}}
    with tempfile.TemporaryDirectory() as store:
        for method in args.methods.split(","):
            arguments = ["run", "--method", method, *args.extra]
            command = [sys.executable, "-m", "metalora.cli", *arguments, "--store", store]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
            times = next((line for line in done.stderr.splitlines() if line.startswith("  time: ")), "")
            phases = {key: parse_seconds(m.group(1)) for key, pattern in PHASES.items() if (m := re.search(pattern, times))}
            results["runs"][method] = {"command": " ".join(["mlbench", *arguments]), "exit_code": done.returncode,
                                       "wall_s": round(wall, 1), "printed": phases,
                                       "output_lines": len((done.stdout + done.stderr).splitlines()),
                                       "cost": _recorded_cost(Path(store), method)}
            print(json.dumps({method: results["runs"][method]}), flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
