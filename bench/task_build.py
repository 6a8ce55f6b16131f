"""Building a benchmark's lm-eval tasks cold, with lm-eval compiling its prompt templates for every
document and with each template compiled once (``eval_tasks/templates.py``), side by side.

For every benchmark it builds the tasks both ways, alternately, ``--rounds`` times (the median is
printed), and checks that every request is the same: its arguments (context, continuation or
generation settings), document id and index. This is what a lone ``mlbench run``, or a sweep
worker's first run, spends before its first model call; nothing here runs a model.

    python bench/task_build.py --benchmarks heldout,bbh,bbh_mc,mmlu --out bench/results/task_build_cpu.json

Figures only mean something side by side on one machine at one moment; nothing here is a target.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules, run as a script

from eval_overhead import TABLE2_TASKS
from eval_speed import _revision

from eval_tasks.harness import EvalOptions
from eval_tasks.registry import get_benchmark, training_task_subtasks
from eval_tasks.task_cache import TaskCache, build_tasks
from metalora.data.root import resolve_data_root
from metalora.provenance import package_versions


def requests_of(loaded: dict) -> list[tuple]:
    """Every request of the built tasks, as plain values, in order."""
    return [(name, request.doc_id, request.idx, request.request_type, repr(request.arguments))
            for name, task in loaded["tasks"].items() for request in task.instances]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="heldout,bbh,bbh_mc,mmlu")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import lm_eval.evaluator  # noqa: F401  (imports out of the timing)

    root = resolve_data_root(args.data_root)
    names = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    subtasks = training_task_subtasks(names, TABLE2_TASKS)
    manager = TaskCache().manager(root)
    figures = {}
    for name in names:
        spec = get_benchmark(name)
        tasks = [spec.task_name(subtask) for subtask in subtasks.get(name, spec.subtasks)]
        gen_kwargs = EvalOptions().gen_kwargs(spec)  # as evaluate gives them, by default
        seconds: dict[str, list[float]] = {"per_document": [], "once": []}
        built = {}
        for _ in range(args.rounds):
            for label, once in (("per_document", False), ("once", True)):
                started = time.perf_counter()
                loaded = build_tasks(manager, tasks, args.limit, gen_kwargs, templates_once=once)
                seconds[label].append(time.perf_counter() - started)
                built[label] = requests_of(loaded)
        identical = built["per_document"] == built["once"]
        before, after = statistics.median(seconds["per_document"]), statistics.median(seconds["once"])
        figures[name] = {"requests": len(built["once"]), "seconds_per_document": before, "seconds_once": after,
                         "speedup": before / after, "requests_identical": identical}
        print(f"{name:>8}: {len(built['once'])} requests | templates compiled per document {before:6.1f} s | "
              f"once {after:6.1f} s | x{before / after:.2f} | requests identical: {'yes' if identical else 'NO'}",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps({"figures": figures, "limit": args.limit, "rounds": args.rounds,
                                        "load_average": os.getloadavg(), "code_revision": _revision(),
                                        "versions": package_versions(("lm_eval", "jinja2"))}, indent=2) + "\n")


if __name__ == "__main__":
    main()
