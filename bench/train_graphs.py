"""Training with the decoder's passes as CUDA graphs against training without, side by side.

For each method (``lora``, ``hydralora``, ``dora``), trains a fresh adapter for ``--steps`` updates
of real multitask data (``--shots`` per task, batch 8, dropout on, the run defaults otherwise) twice
in one process from the same seed: ``train_cuda_graphs=off`` and ``auto``, in alternating order
over ``--repeat`` rounds. Prints one JSON line per fit and a summary with, per method:

- seconds per update (the fit's wall time over its updates, the device synchronized at the end),
  the ratio off / auto (medians over the rounds), and the peak memory of each;
- how many batch shapes were graphed and how many decoder passes replayed a graph;
- whether the two fits are the same run: every adapter tensor and every step's loss bit for bit
  (``adapters_identical``, ``losses_identical``), and the largest differences. With ``--repeat 2``
  or more, the same comparison between two fits without graphs (``eager_vs_eager``): a fit must
  reproduce itself before a difference can be put down to the graphs (before the loss summed its
  rows without ``index_add``'s atomics, the logged losses of two eager fits differed in their last bit).

GPU machine, after the gpu-bundle's model setup::

    PYTHONPATH=/tmp/site:$PWD python3 bench/train_graphs.py --device cuda --out $OUT/train_graphs.json

CPU smoke (no graphs on a CPU: both fits run eagerly, and must be identical):
``python bench/train_graphs.py --shape tiny --device cpu --shots 10 --steps 8``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_speed import _revision
from train_throughput import model_and_tokenizer

from metalora.data.budgets import load_budgets
from metalora.data.root import resolve_data_root
from metalora.data.scenarios import scenario_tasks
from metalora.methods import make_trainer
from metalora.models import pick_device, pick_dtype
from metalora.provenance import package_versions
from metalora.training import graphed_decoder
from metalora.training.config import TrainConfig
from metalora.training.determinism import request_cublas_workspace


def fit_once(method: str, setting: str, model, tokenizer, budgets, args) -> tuple[dict, dict]:
    config = TrainConfig(budget_rule="matched_updates", steps=args.steps, batch_size=args.batch_size,
                         seed=args.seed, train_cuda_graphs=setting).validate()  # fmt: skip
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    adapter = make_trainer(method).fit(model, tokenizer, budgets, config)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    record = {
        "method": method, "train_cuda_graphs": setting, "updates": len(adapter.training_log),
        "wall_s": round(wall, 3), "s_per_update": round(wall / len(adapter.training_log), 5),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "cuda_graphs": adapter.training_cost.get("cuda_graphs"),
    }  # fmt: skip
    return record, {"losses": [step["loss"] for step in adapter.training_log], "state": adapter.state}


def difference(a: dict, b: dict) -> dict:
    losses = max((abs(x - y) for x, y in zip(a["losses"], b["losses"])), default=0.0)
    tensors = max(float((a["state"][name].float() - b["state"][name].float()).abs().max()) for name in a["state"])
    adapters = all(torch.equal(a["state"][name], b["state"][name]) for name in a["state"])
    return {"adapters_identical": adapters, "losses_identical": a["losses"] == b["losses"],
            "max_loss_difference": losses, "max_weight_difference": tensors}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", default=None, help="random-init Llama of this shape (bench/train_throughput.py)")
    parser.add_argument("--methods", default="lora,hydralora")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the order of off/auto alternates")
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--warmup-passes", type=int, default=None,
                        help="eager passes before each capture (default: graphed_decoder.WARMUP_PASSES)")
    parser.add_argument("--out", default=None, help="also write the summary here")
    args = parser.parse_args()
    request_cublas_workspace()  # before CUDA starts: training is deterministic by default (cuBLAS needs it)
    if args.warmup_passes is not None:
        graphed_decoder.WARMUP_PASSES = args.warmup_passes
    args.device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, args.device)
    model, tokenizer, described = model_and_tokenizer(args, dtype, args.device)
    budgets = list(load_budgets(resolve_data_root(args.data_root), scenario_tasks("multitask"), args.shots, seed=0))
    setup = {"model": described, "device": args.device, "dtype": dtype, "steps": args.steps, "shots": args.shots,
             "batch_size": args.batch_size, "repeat": args.repeat, "revision": _revision(),
             "warmup_passes": graphed_decoder.WARMUP_PASSES,
             "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
             "versions": package_versions(("torch", "transformers", "peft"))}  # fmt: skip
    print(json.dumps({"setup": setup}), flush=True)
    methods = {}
    for method in args.methods.split(","):
        fits = {"off": [], "auto": []}
        outcome = {}
        for round_ in range(args.repeat):
            for setting in ("off", "auto") if round_ % 2 == 0 else ("auto", "off"):
                record, result = fit_once(method, setting, model, tokenizer, budgets, args)
                print(json.dumps(record), flush=True)
                fits[setting].append(record)
                outcome.setdefault(setting, result)
                if setting == "off" and round_ > 0:
                    outcome.setdefault("off again", result)
        median = {s: statistics.median(r["s_per_update"] for r in fits[s]) for s in fits}
        methods[method] = {
            "s_per_update": median, "speedup": round(median["off"] / median["auto"], 3),
            "peak_memory_gib": {s: fits[s][0]["peak_memory_gib"] for s in fits},
            "cuda_graphs": fits["auto"][0]["cuda_graphs"], **difference(outcome["off"], outcome["auto"]),
        }  # fmt: skip
        if "off again" in outcome:
            methods[method]["eager_vs_eager"] = difference(outcome["off"], outcome["off again"])
    summary = {"summary": True, "setup": setup, "methods": methods}
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
