"""Does a run train the same adapter when other processes share its GPU? With and without
``--deterministic-training``.

For each setting (``off``, then ``on``) it first trains one fit alone (its seconds per update),
then starts ``--processes`` copies of the same fit at once on the same GPU, as sweep workers share
one: the same method, data, seed and updates (dropout on, the run defaults otherwise). Every fit
prints its adapter's SHA-256 (every tensor's bytes, in name order) and its logged losses' hash;
the summary says, per setting, how many distinct adapters the fits trained (1: reproducible) and
the seconds per update alone, with their ratio on / off. ``--smoke-methods`` first trains each of
those methods a few updates with the setting on (at once): a method that reaches an operation without
a deterministic kernel fails there, in one line, and is reported.

GPU machine (one GPU; ``CUDA_VISIBLE_DEVICES`` picks it)::

    PYTHONPATH=/tmp/site:$PWD python3 bench/train_determinism.py --device cuda --processes 4 --steps 100 \\
        --smoke-methods hydralora,dora,metalora,metalora:stacked --out $OUT/train_determinism.json

CPU smoke: ``python bench/train_determinism.py --shape tiny --device cpu --processes 2 --steps 3 --shots 10``
(on a CPU the setting changes nothing, and every fit must agree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metalora.training.determinism import request_cublas_workspace

SETTINGS = ("off", "on")


class _Enough(Exception):
    """Raised from a smoke fit's step callback once it has done its updates."""


def child(args) -> None:
    """One fit; prints one JSON line."""
    import torch
    from train_throughput import STEPS_CONFIGURED, model_and_tokenizer, parse_method

    from metalora.data.budgets import load_budgets
    from metalora.data.root import resolve_data_root
    from metalora.data.scenarios import scenario_tasks
    from metalora.methods import make_trainer
    from metalora.models import pick_device, pick_dtype
    from metalora.training.config import TrainConfig

    device = pick_device(args.device)
    model, tokenizer, _ = model_and_tokenizer(args, pick_dtype(args.dtype, device), device)
    budgets = list(load_budgets(resolve_data_root(args.data_root), scenario_tasks("multitask"), args.shots, seed=0))
    name, inner_loop, _ = parse_method(args.method)
    trainer = make_trainer(name, {"inner_loop": inner_loop} if inner_loop else {})
    # A smoke fit is configured for many updates (no budget rule refuses it) and stopped after --steps.
    steps = STEPS_CONFIGURED if args.smoke else args.steps
    config = TrainConfig(budget_rule="matched_updates", steps=steps, batch_size=args.batch_size, seed=0,
                         deterministic_training=args.setting).validate()  # fmt: skip
    record = {"method": args.method, "setting": args.setting}
    cuda = device.startswith("cuda")
    done = []

    def on_step(*_):
        done.append(1)
        if args.smoke and len(done) >= args.steps:
            raise _Enough

    started = time.perf_counter()
    try:
        adapter = trainer.fit(model, tokenizer, budgets, config, on_step)
    except _Enough:
        print(json.dumps(record | {"updates": len(done), "smoke": "passed"}), flush=True)
        return
    except Exception as error:  # noqa: BLE001  (a fit's failure, whatever it is, is its result)
        print(json.dumps(record | {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}), flush=True)
        return
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    digest = hashlib.sha256()
    for key in sorted(adapter.state):
        digest.update(key.encode() + adapter.state[key].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    losses = [step["loss"] for step in adapter.training_log]
    print(json.dumps(record | {
        "updates": len(losses), "s_per_update": round(wall / len(losses), 5), "adapter_sha256": digest.hexdigest(),
        "losses_sha256": hashlib.sha256(json.dumps(losses).encode()).hexdigest(), "last_loss": losses[-1],
    }), flush=True)  # fmt: skip


def start(args, method: str, setting: str, steps: int, smoke: bool = False) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", "--method", method, "--setting", setting, "--steps", str(steps),
               *(["--smoke"] if smoke else []),
               "--shots", str(args.shots), "--batch-size", str(args.batch_size), "--model", args.model]
    for flag, value in (("--device", args.device), ("--dtype", args.dtype), ("--data-root", args.data_root),
                        ("--shape", args.shape)):
        if value:
            command += [flag, value]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def results(processes: list[subprocess.Popen]) -> list[dict]:
    out = []
    for process in processes:
        stdout, _ = process.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        out.append(json.loads(lines[-1]) if lines else {"error": f"exit code {process.returncode}, no result"})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4, help="fits sharing the GPU at once")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--smoke-methods", default="", help="comma-separated; a few updates each, setting on, alone")
    parser.add_argument("--smoke-steps", type=int, default=4)
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", default=None, help="random-init Llama of this shape (bench/train_throughput.py)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="on", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    request_cublas_workspace()  # before CUDA starts, here and (inherited) in every child
    if args.child:
        child(args)
        return
    smoke_methods = list(filter(None, args.smoke_methods.split(",")))  # at once: each only has to run
    smoke = dict(zip(smoke_methods, results([start(args, m, "on", args.smoke_steps, smoke=True) for m in smoke_methods])))
    settings = {}
    for setting in SETTINGS:
        alone = results([start(args, args.method, setting, args.steps)])[0]
        shared = results([start(args, args.method, setting, args.steps) for _ in range(args.processes)])
        fits = [fit for fit in [alone, *shared] if "error" not in fit]
        settings[setting] = {
            "s_per_update_alone": alone.get("s_per_update"),
            "s_per_update_shared": [fit.get("s_per_update") for fit in shared],
            "fits": len(fits), "distinct_adapters": len({fit["adapter_sha256"] for fit in fits}),
            "distinct_losses": len({fit["losses_sha256"] for fit in fits}),
            "errors": [fit["error"] for fit in [alone, *shared] if "error" in fit],
        }  # fmt: skip
    off, on = (settings[s]["s_per_update_alone"] for s in SETTINGS)
    summary = {"summary": True, "method": args.method, "processes": args.processes, "steps": args.steps,
               "settings": settings, "on_over_off_alone": round(on / off, 3) if on and off else None,
               "smoke": smoke}  # fmt: skip
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
