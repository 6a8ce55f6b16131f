"""Where a run's evaluation time goes: each benchmark (and each training task of ``heldout``) timed
alone through ``eval_tasks.harness.evaluate``, as a run evaluates, with the GPU's busy fraction.

Per unit and batch size it prints the items, the seconds of a warm call (tasks already built, as in
a sweep worker), items/s, the process's CPU seconds over the same span, and, on a GPU, the mean of
``nvidia-smi``'s utilization samples (the fraction of time a kernel was running) taken every 100 ms
during the call. A unit near 100% is bound by the GPU's arithmetic; one far below is bound by the
host (Python, tokenization, lm-eval's bookkeeping) or by kernel launches. ``--profile UNIT`` also
prints the top functions of that unit's warm call by cumulative time and by their own time.

GPU machine, after the gpu-bundle's model setup::

    PYTHONPATH=/tmp/site:$PWD python3 bench/eval_profile.py --model smollm2-135m \\
        --benchmarks heldout,bbh,bbh_mc,mmlu --batch-sizes 64,256 --device cuda --dtype bfloat16 --out $OUT/p.json

CPU smoke: ``python bench/eval_profile.py --benchmarks mmlu --limit 2 --batch-sizes 8 --device cpu``.
Figures only mean something on one machine at one moment; nothing here is a target.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import platform
import pstats
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules, run as a script

from eval_overhead import TABLE2_TASKS
from eval_speed import _revision, add_setup_arguments

from eval_tasks.harness import evaluate
from eval_tasks.registry import get_benchmark
from eval_tasks.task_cache import TaskCache
from metalora.data.root import resolve_data_root
from metalora.models import load_model


class UtilizationSampler:
    """Samples ``nvidia-smi``'s GPU utilization every 100 ms in a child process while active."""

    def __init__(self, device: str):
        self.enabled = device.startswith("cuda")
        self.samples: list[float] = []
        self._process = None
        self._reader = None

    def __enter__(self):
        if not self.enabled:
            return self
        index = torch.cuda.current_device()
        try:
            self._process = subprocess.Popen(
                ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        except OSError:
            return self
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._reader.join(timeout=2)

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def units(benchmarks: list[str]) -> list[tuple[str, str, dict]]:
    """(label, benchmark, subtasks): heldout split into its training tasks, the rest whole."""
    out = []
    for name in benchmarks:
        if get_benchmark(name).follows_training_tasks:
            out += [(f"{name}:{task}", name, {name: (task,)}) for task in TABLE2_TASKS]
        else:
            out.append((name, name, {}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "heldout,bbh,bbh_mc,mmlu")
    parser.add_argument("--batch-sizes", default="64", help="comma-separated")
    parser.add_argument("--decode-rows", type=int, default=None, help="rows generating together (default: the batch size)")
    parser.add_argument("--profile", default=None, help="a unit label whose warm call is cProfiled")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    root = resolve_data_root(args.data_root)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = loaded.device
    batch_sizes = [int(value) for value in args.batch_sizes.split(",")]
    cache = TaskCache()
    rows = []
    for label, benchmark, subtasks in units([name.strip() for name in args.benchmarks.split(",") if name.strip()]):
        def call(batch_size: int, label=label, benchmark=benchmark, subtasks=subtasks):
            return evaluate(model, tokenizer, [benchmark], data_root=root, limit=args.limit,
                            batch_size=batch_size, subtasks=subtasks, task_cache=cache,
                            decode_rows=args.decode_rows)  # fmt: skip

        call(batch_sizes[0])  # cold: builds the tasks and tokenizes, as a worker's first run does
        for batch_size in batch_sizes:
            profiler = cProfile.Profile() if args.profile == label else None
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            with UtilizationSampler(device) as sampler:
                cpu_started, started = time.process_time(), time.perf_counter()
                if profiler:
                    profiler.enable()
                result = call(batch_size)
                if profiler:
                    profiler.disable()
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
            items = result.settings["timing"][benchmark]["items"]
            row = {"unit": label, "batch_size": batch_size, "items": items, "seconds": round(seconds, 2),
                   "items_per_s": round(items / seconds, 1), "process_cpu_s": round(cpu_seconds, 2),
                   "gpu_util_mean": sampler.mean(), "gpu_util_samples": len(sampler.samples)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)  # where the host's own time goes
    total = {size: round(sum(r["seconds"] for r in rows if r["batch_size"] == size), 1) for size in batch_sizes}
    print(json.dumps({"total_seconds_by_batch_size": total}))
    if args.out:
        report = {"model": args.model, "device": device, "dtype": loaded.dtype,
                  "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                  "host": platform.node(), "limit": args.limit, "decode_rows": args.decode_rows, "code_revision": _revision(), "rows": rows,
                  "total_seconds_by_batch_size": total}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
