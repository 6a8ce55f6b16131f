"""Time a sweep's plan: what ``mlbench sweep FILE --dry-run`` does before it prints (every run built,
validated, its data read and hashed). Prints runs, total seconds and seconds per run.

Usage: MLBENCH_DATA_DIR=../shared/data python bench/sweep_plan.py [configs/table2.yaml ...]
"""

from __future__ import annotations

import sys
import time

from metalora.runs.runconfig import ExecutionOptions
from metalora.runs.sweep import load_sweep, prepare_sweep


def main(paths: list[str]) -> None:
    for path in paths or ["configs/table2.yaml"]:
        started = time.perf_counter()
        sweep = load_sweep(path)
        plan = prepare_sweep(sweep, ExecutionOptions(device="cpu"))
        seconds = time.perf_counter() - started
        print(f"{path}: {len(sweep.runs)} runs ({len(plan)} distinct) planned in {seconds:.2f} s, "
              f"{seconds / len(sweep.runs):.3f} s per run")


if __name__ == "__main__":
    main(sys.argv[1:])
