"""Evaluation batch size: FastLM's items/s at several batch sizes, side by side in one process.

The run's evaluation backend (FastLM) answers the very same requests (built once from the
project's lm-eval tasks) at each ``--batch-sizes`` value on one loaded model, in turns, and this
prints per benchmark and batch size the items (documents) per second, the speed-up over the first
batch size, the peak device memory, and how far the answers are from the first batch size's: the
largest |difference| of a request's log-likelihood and how often each item's predicted option
agrees (multiple choice), or how often greedy generations are identical. In float32 they agree to
float rounding; in bfloat16 a different batch composition changes rounding, which can flip
near-ties: that is the price of a bigger batch, measured here beside its speed.

A run's evaluation batch size is an execution option (``--eval-batch-size``), recorded in its
``eval/results.json``; this script is how the default for a GPU was chosen (README). With
``--decode-rows 64,256`` it compares instead how many rows generate together (``--eval-decode-rows``)
at the first batch size, on the generative requests only.

    python bench/eval_batch.py --benchmarks mmlu,bbh --limit 1 --batch-sizes 1,8 --device cpu   # CPU smoke

GPU machine (after the gpu-bundle's model setup), one command::

    PYTHONPATH=/tmp/site:$PWD python3 bench/eval_batch.py \\
        --model /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf --data-root /tmp/mlbench/data \\
        --benchmarks mmlu,bbh_mc,bbh,heldout --limit 40 --batch-sizes 8,64,256 --device cuda \\
        --dtype bfloat16 --out $OUT/eval_batch.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module, run as a script

from eval_speed import BenchSetup, _describe, _items, _revision, _timed, add_setup_arguments, agreement

from eval_tasks.fastlm import FastLM
from eval_tasks.task_cache import TaskCache
from metalora.provenance import package_versions


def compare_batch_sizes(name: str, requests, make_fast, batch_sizes: list[int], device: str,
                        what: str = "batch") -> dict:
    """FastLM at each batch size (or, with ``what="decode rows"``, each number of rows generating
    together: ``make_fast`` reads its argument as that) on ``requests`` (a fresh FastLM each, so none
    reuses another's tokenization memo); agreement is measured against the first value's answers."""
    method = "loglikelihood" if requests[0].request_type == "loglikelihood" else "generate_until"
    kwargs = {"disable_tqdm": True}
    getattr(make_fast(batch_sizes[0]), method)(requests[:2], **kwargs)  # warm-up: kernels, allocator
    items = _items(requests)
    figures: dict = {"kind": method, "items": items, "requests": len(requests), "by_batch_size": {}}
    reference = None
    for batch_size in batch_sizes:
        fast = make_fast(batch_size)
        answers, seconds, peak = _timed(device, lambda fast=fast: getattr(fast, method)(requests, **kwargs))
        row = {"seconds": seconds, "items_per_s": items / seconds, "peak_bytes": peak}
        if reference is None:
            reference = (answers, seconds)
        else:
            row["speedup"] = reference[1] / seconds
            row |= agreement(method, requests, reference[0], answers)
        figures["by_batch_size"][str(batch_size)] = row
        versus = f" | x{row['speedup']:.2f} | vs {what} {batch_sizes[0]}: {_describe(row)}" if "speedup" in row else ""
        memory = f" | peak {peak / 2**30:.1f} GiB" if peak else ""
        print(f"{name:>10} {what} {batch_size:4d}: {items:6d} items in {seconds:7.2f} s | "
              f"{items / seconds:9.2f} items/s{memory}{versus}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "mmlu,bbh_mc,bbh,heldout")
    parser.add_argument("--batch-sizes", default="8,64,256", help="comma-separated; the first is the reference")
    parser.add_argument("--decode-rows", default=None,
                        help="comma-separated rows generating together (the first is the reference), at the first "
                             "batch size; only generative requests are measured")
    parser.add_argument("--max-gen-tokens", type=int, default=None, help="default: each benchmark's own")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's per-task build bars
    logging.disable(logging.WARNING)  # lm-eval's per-task notices
    batch_sizes = [int(value) for value in args.batch_sizes.split(",") if value.strip()]
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error("--batch-sizes must list positive whole numbers, e.g. 8,64,256")

    bench = BenchSetup.load(args)
    loaded, load_s = bench.loaded, bench.load_s
    model, tokenizer, device = loaded.model.eval(), loaded.tokenizer, loaded.device
    print(f"model {args.model} on {device} ({loaded.dtype}), loaded in {load_s:.1f} s; batch sizes {batch_sizes}")

    decode_rows = [int(value) for value in args.decode_rows.split(",") if value.strip()] if args.decode_rows else None
    if decode_rows is not None:
        what, values = "decode rows", decode_rows

        def make_fast(rows: int) -> FastLM:
            return FastLM(model, tokenizer, batch_sizes[0], decode_rows=rows)
    else:
        what, values = "batch", batch_sizes

        def make_fast(batch_size: int) -> FastLM:
            return FastLM(model, tokenizer, batch_size)

    cache = TaskCache()
    results = {}
    for spec in bench.specs:
        requests = bench.requests(spec, cache, args)
        by_kind: dict[str, list] = {}
        for request in requests:  # heldout mixes multiple-choice and generative tasks
            by_kind.setdefault(request.request_type, []).append(request)
        for kind, group in by_kind.items():
            if decode_rows is not None and kind != "generate_until":
                continue
            label = spec.name if len(by_kind) == 1 else f"{spec.name}:{kind}"
            results[label] = compare_batch_sizes(label, group, make_fast, values, device, what)

    totals = {str(b): sum(f["by_batch_size"][str(b)]["seconds"] for f in results.values()) for b in values}
    items = sum(figures["items"] for figures in results.values())
    base = totals[str(values[0])]
    print(f"all benchmarks, items/s by {what}: " + ", ".join(
        f"{b}: {items / totals[str(b)]:.1f} (x{base / totals[str(b)]:.2f})" for b in values))
    report = {
        "model": args.model, "model_source": loaded.source.to_dict(), "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "dtype": loaded.dtype, "batch_sizes": batch_sizes, "decode_rows": decode_rows, "limit": args.limit, "max_gen_tokens": args.max_gen_tokens,
        "load_average": os.getloadavg(), "load_s": load_s, "benchmarks": results,
        "total": {"items": items, "seconds_by_batch_size": totals},
        "code_revision": _revision(),
        "versions": package_versions(("lm_eval", "transformers", "torch", "tokenizers")),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
