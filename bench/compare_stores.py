"""Do the same runs in two stores have the same scores? For checking that an execution setting
(MPS, workers per GPU, a GPU kind, a library version) leaves a sweep's numbers as they were.

For every run id found in both stores (folders holding ``eval/results.json``) it compares every
task's metrics and every aggregate, and prints per run whether they are identical, how many
metric values differ and the largest difference, then a summary line.

    python bench/compare_stores.py STORE_A STORE_B
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def scores(store: Path) -> dict[str, dict[str, float]]:
    """run id -> {"task/metric" or "aggregate/...": value} for every run with results."""
    found = {}
    for results in sorted(store.glob("**/eval/results.json")):
        data = json.loads(results.read_text())
        values = {}
        for task in data["tasks"]:
            for metric, value in task["metrics"].items():
                values[f"{task['benchmark']}/{task['task']}/{metric}"] = value
        for index, aggregate in enumerate(data.get("aggregates", [])):
            for key, value in aggregate.items():
                if isinstance(value, float):
                    values[f"aggregate[{index}]/{key}"] = value
        found[results.parent.parent.name] = values
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    first, second = scores(args.first), scores(args.second)
    shared = sorted(set(first) & set(second))
    identical = 0
    for run_id in shared:
        a, b = first[run_id], second[run_id]
        keys = sorted(set(a) | set(b))
        differing = [key for key in keys if a.get(key) != b.get(key)]
        largest = max((abs(a[key] - b[key]) for key in differing if key in a and key in b), default=0.0)
        identical += not differing
        print(f"{run_id}: {len(keys)} values, " + ("identical" if not differing else
              f"{len(differing)} differ, largest difference {largest:.4g} (e.g. {differing[0]}: "
              f"{a.get(differing[0])} against {b.get(differing[0])})"))
    print(f"{identical} of {len(shared)} runs identical in every score "
          f"({len(first) - len(shared)} and {len(second) - len(shared)} runs found in one store only)")


if __name__ == "__main__":
    main()
