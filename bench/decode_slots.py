"""Stock-shaped generation with lm-eval's chunks decoding one at a time against several at a time.

``--eval-decode-slots K`` (``eval_tasks/greedy.py``, "Chunks decoding together") lets up to K of
HFLM's 64-row generation chunks share one set of decoding buffers, each chunk in its own rows and
columns, prefilled alone and fed and ended as alone. Whether every text stays what the chunk gives
alone depends on the GPU's kernels computing each row the same whatever the other rows of the batch
(matrix products whose rows do not interact, attention over masked extra columns that adds exactly
zero): a measurement, not a guarantee. This script makes it, side by side in one process: every
generative benchmark's requests generated with each ``--slots`` setting (CUDA graphs on, as runs
use them), in the order given and then again in reverse, and prints per setting items/s, peak
memory and how many texts are identical to the first setting's.

    python bench/decode_slots.py --benchmarks bbh,heldout --limit 4 --slots 1,3 --device cpu   # smoke (eager buffers)

GPU machine::

    PYTHONPATH=/tmp/site:$PWD python3 bench/decode_slots.py --model smollm2-135m --data-root /tmp/mlbench/data \\
        --benchmarks bbh,heldout --slots 1,4,8 --device cuda --dtype bfloat16 --out $OUT/decode_slots.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module, run as a script

from eval_speed import BenchSetup, _revision, add_setup_arguments

from eval_tasks.fastlm import FastLM
from eval_tasks.step_graphs import StepGraphs
from eval_tasks.task_cache import TaskCache
from metalora.provenance import package_versions


def generate(model, tokenizer, requests, batch_size: int, slots: int, device: str) -> tuple[list[str], float, int | None, str]:
    lm = FastLM(model, tokenizer, batch_size, stock_shapes=True, cuda_graphs=True, decode_slots=slots)
    if not device.startswith("cuda"):  # the same buffers, stepped eagerly (what the tests compare on a CPU)
        lm.step_graphs = StepGraphs(lm._forward, capture=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    texts = lm.generate_until(requests)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return texts, seconds, peak, lm.decode_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "bbh,heldout")
    parser.add_argument("--slots", default="1,4", help="settings to compare; the first is the reference")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-gen-tokens", type=int, default=None, help="default: each benchmark's own")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = [int(value) for value in args.slots.split(",")]

    setup = BenchSetup.load(args)
    model, tokenizer, device = setup.loaded.model, setup.loaded.tokenizer, setup.loaded.device
    model.eval()
    cache = TaskCache()
    report = {"code_revision": _revision(), "model": args.model, "device": device, "dtype": setup.loaded.dtype,
              "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None, "limit": args.limit,
              "batch_size": args.batch_size, "versions": package_versions(("torch", "transformers", "lm_eval")),
              "benchmarks": {}}
    for spec in setup.specs:
        if not spec.generative:
            continue
        requests = [r for r in setup.requests(spec, cache, args) if r.request_type == "generate_until"]
        runs: dict[int, list] = {slots: [] for slots in settings}
        for order in (settings, list(reversed(settings))):
            for slots in order:
                runs[slots].append(generate(model, tokenizer, requests, args.batch_size, slots, device))
        reference = runs[settings[0]][0][0]
        # Tokens of the answers as lm-eval keeps them (cut at the stop strings): at least what was decoded.
        entry = {"items": len(requests), "generated_tokens": sum(
            len(ids) for ids in tokenizer(reference, add_special_tokens=False)["input_ids"])}
        for slots in settings:
            texts = [run[0] for run in runs[slots]]
            seconds = [run[1] for run in runs[slots]]
            identical = min(sum(a == b for a, b in zip(reference, found, strict=True)) for found in texts)
            entry[str(slots)] = {"seconds": seconds, "items_per_s": len(requests) / min(seconds),
                                 "peak_bytes": max((run[2] or 0) for run in runs[slots]) or None,
                                 "decode_steps": runs[slots][0][3], "identical_to_first": identical,
                                 "repeat_identical": texts[0] == texts[1]}
            base = entry[str(settings[0])]["items_per_s"]
            print(f"{spec.name}: {len(requests)} items, slots {slots}: {entry[str(slots)]['items_per_s']:.1f} items/s "
                  f"(x{entry[str(slots)]['items_per_s'] / base:.2f}), best of {', '.join(f'{s:.1f}' for s in seconds)} s, "
                  f"peak {(entry[str(slots)]['peak_bytes'] or 0) / 2**30:.1f} GiB, identical to slots {settings[0]}: "
                  f"{identical}/{len(requests)}, both passes the same: {entry[str(slots)]['repeat_identical']}", flush=True)
        report["benchmarks"][spec.name] = entry
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
