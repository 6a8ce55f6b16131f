"""Host-side cost of evaluating a run: whole ``eval_tasks.harness.evaluate`` calls on a tiny random-
init Llama (SmolLM2's real tokenizer), where the model's arithmetic is small and what is left is
Python: task building, reference rows, tokenization, the batching and decoding loops.

A sweep worker evaluates many runs with one ``TaskCache``; the first call builds the tasks (cold),
the later ones reuse them (warm). This prints the seconds of each call, per benchmark (lm-eval's
part) and the rest of the call (data hashes, reference rows, result assembly), and with
``--profile`` the top functions of a warm call. To compare two code revisions under the same load,
run it from both checkouts alternately::

    PYTHONPATH=. python bench/eval_overhead.py --benchmarks heldout,bbh,bbh_mc,mmlu --limit 1 --calls 3
    PYTHONPATH=/path/to/other/checkout python /path/to/this/bench/eval_overhead.py ...   # same flags

Figures only mean something side by side on one machine at one moment; nothing here is a target.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import subprocess
import time
from pathlib import Path

# The training tasks of the published Table 2 runs: what ``heldout`` evaluates.
TABLE2_TASKS = ("strategyqa", "social_iqa", "logical_fallacy_detection", "vitaminc_fact_verification", "gsm8k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="heldout,bbh,bbh_mc,mmlu")
    parser.add_argument("--limit", type=int, default=1, help="items per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-gen-tokens", type=int, default=None, help="default: each benchmark's own")
    parser.add_argument("--calls", type=int, default=3, help="evaluate calls with one task cache (first: cold)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--profile", action="store_true", help="cProfile the last call, top 30 by cumulative time")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import torch

    from eval_tasks.harness import evaluate
    from eval_tasks.registry import training_task_subtasks
    from eval_tasks.task_cache import TaskCache
    from metalora.data.root import resolve_data_root
    from tests.helpers import smollm2_tokenizer, tiny_llama

    torch.set_num_threads(args.threads)
    tokenizer = smollm2_tokenizer()
    model = tiny_llama(tokenizer)
    root = resolve_data_root(None)
    benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    subtasks = training_task_subtasks(benchmarks, TABLE2_TASKS)
    cache = TaskCache()
    calls = []
    for call in range(args.calls):
        profiler = cProfile.Profile() if args.profile and call == args.calls - 1 else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        result = evaluate(model, tokenizer, benchmarks, data_root=root, limit=args.limit, batch_size=args.batch_size,
                          max_gen_tokens=args.max_gen_tokens, subtasks=subtasks, task_cache=cache)  # fmt: skip
        seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
        timing = result.settings["timing"]
        rest = seconds - sum(figures["seconds"] for figures in timing.values())
        calls.append({"seconds": seconds, "rest_seconds": rest, "per_benchmark": timing,
                      "load_average": os.getloadavg()[0]})  # fmt: skip
        print(f"call {call + 1} ({'cold' if call == 0 else 'warm'}): {seconds:7.2f} s | "
              + " | ".join(f"{name} {figures['seconds']:.2f} s ({figures['items']} items)" for name, figures in timing.items())
              + f" | rest {rest:.2f} s | load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    if args.out:
        import eval_tasks

        # The revision of the code measured (the checkout on PYTHONPATH), not of this script's.
        checkout = Path(eval_tasks.__file__).resolve().parent.parent
        revision = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                                  cwd=checkout).stdout.strip()  # fmt: skip
        report = {"benchmarks": benchmarks, "limit": args.limit, "batch_size": args.batch_size,
                  "code_revision": revision, "calls": calls}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
