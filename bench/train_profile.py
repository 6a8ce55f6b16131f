"""Where a training step's time goes: the host's Python, kernel launches, or the GPU's arithmetic.

Trains one method (``bench/train_throughput.py``'s names: ``lora``, ``hydralora``,
``metalora:stacked``, ``lora+ckpt`` ...) on real 50-shot multitask data three times, each time with a
fresh adapter, and prints one JSON object:

- ``plain``: seconds per step without any profiler (the device synchronized after each step).
- ``torch_profiler``: over ``--profile-steps`` steps, the device's busy time per step (the sum of
  its kernels' and copies' durations), kernels launched per step (host launch calls), and the
  operators with the most host time (self CPU) and the device events with the most device time. Busy time far below the step's wall time means the step is bound by
  the host (Python and launches), not by the GPU.
- ``cprofile``: over the same number of steps, the host seconds per step inside the trainer's
  phases (the forward pass with its loss, the backward pass, the optimizer, batch building, the step
  callback) and the Python functions with the most time of their own. cProfile slows Python down,
  so its absolute figures are high; the shares are what it is for.

GPU machine, after the gpu-bundle's model setup::

    PYTHONPATH=/tmp/site:$PWD python3 bench/train_profile.py --method lora --device cuda --out $OUT/tp.json

CPU smoke: ``python bench/train_profile.py --shape tiny --device cpu --steps 3 --profile-steps 2``.
Figures only mean something on one machine at one moment; nothing here is a target.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules, run as a script

from eval_speed import _revision
from train_throughput import SHAPES, _Enough, model_and_tokenizer, parse_method, train_config

from metalora.data.budgets import load_budgets
from metalora.data.root import resolve_data_root
from metalora.data.scenarios import scenario_tasks
from metalora.methods import make_trainer
from metalora.models import pick_device, pick_dtype
from metalora.provenance import package_versions
from metalora.training.determinism import request_cublas_workspace

# The host calls that launch a kernel (the CUDA runtime's and driver's), as torch.profiler names them.
LAUNCH_CALLS = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"})
# The trainer's phases, found in cProfile's table by (file suffix, function name).
PHASES = {
    "forward_and_loss": [("metalora/training/batching.py", "row_losses")],
    "backward": [("torch/_tensor.py", "backward"), ("torch/autograd/__init__.py", "grad")],
    "optimizer": [("torch/optim/adam.py", "step"), ("torch/optim/adamw.py", "step"), ("torch/optim/sgd.py", "step")],
    "batch_building": [("metalora/training/batching.py", "collate")],
    "step_callback": [("bench/train_profile.py", "on_step")],
}


def train_steps(method: str, model, tokenizer, budgets, args, steps: int, each_step=None) -> list[float]:
    """Train a fresh adapter for ``steps`` steps; seconds of each step (device synchronized)."""
    name, inner_loop, checkpointing = parse_method(method)
    trainer = make_trainer(name, {"inner_loop": inner_loop} if inner_loop else {})
    config = train_config(argparse.Namespace(**{**vars(args), "seq_len": None}), checkpointing)
    times: list[float] = []
    last = [time.perf_counter()]
    cuda = args.device.startswith("cuda")

    def on_step(record, *_):
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        if each_step:
            each_step(len(times))
        if len(times) >= steps:
            raise _Enough

    try:
        trainer.fit(model, tokenizer, budgets, config, on_step)
    except _Enough:
        pass
    return times


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def profile_torch(method, model, tokenizer, budgets, args) -> dict:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    prof = profile(activities=activities)
    started = [0.0]

    def each_step(count: int) -> None:  # profile the steps after the warm-up only
        if count == args.warmup:
            prof.start()
            started[0] = time.perf_counter()

    train_steps(method, model, tokenizer, budgets, args, args.warmup + args.profile_steps, each_step)
    wall = time.perf_counter() - started[0]
    prof.stop()
    steps = args.profile_steps
    events = prof.key_averages()
    # The device's own events (kernels, copies); an operator's device time repeats its kernels', so
    # summing every event would count each kernel twice (as torch's own table total avoids).
    on_device = [event for event in events
                 if event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False)]
    device_time = sum(event.self_device_time_total for event in on_device)  # microseconds
    kernels = sum(event.count for event in on_device)
    launches = sum(event.count for event in events if event.key in LAUNCH_CALLS)
    by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    by_device = sorted(on_device, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    return {
        "steps": steps,
        "wall_s_per_step": round(wall / steps, 4),
        "device_busy_s_per_step": round(device_time / 1e6 / steps, 4),
        "device_busy_fraction": round(device_time / 1e6 / wall, 3) if wall else None,
        "device_events_per_step": round(kernels / steps, 1),
        "kernel_launches_per_step": round(launches / steps, 1),
        "top_host_ops": [{"op": e.key, "calls_per_step": round(e.count / steps, 1),
                          "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3)} for e in by_cpu],
        "top_device_events": [{"op": e.key, "calls_per_step": round(e.count / steps, 1),
                            "device_ms_per_step": round(getattr(e, "self_device_time_total", 0.0) / 1e3 / steps, 3)}
                           for e in by_device],
    }


def profile_python(method, model, tokenizer, budgets, args) -> dict:
    profiler = cProfile.Profile()

    def each_step(count: int) -> None:
        if count == args.warmup:
            profiler.enable()

    train_steps(method, model, tokenizer, budgets, args, args.warmup + args.profile_steps, each_step)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    steps = args.profile_steps
    phases = {}
    for phase, functions in PHASES.items():
        total = 0.0
        for (file, _line, function), (_, _, _, cumulative, _) in stats.items():
            if any(file.endswith(suffix) and function == name for suffix, name in functions):
                total += cumulative
        phases[phase] = round(total / steps, 4)
    own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:30]
    return {
        "steps": steps,
        "phase_s_per_step": phases,
        "top_own_time": [{"function": f"{Path(file).name}:{line}({function})", "calls_per_step": round(calls / steps, 1),
                          "own_ms_per_step": round(tottime * 1e3 / steps, 3)}
                         for (file, line, function), (calls, _, tottime, _, _) in own],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-init Llama of this shape instead of the weights")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the plain pass")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps of every pass")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    request_cublas_workspace()  # before CUDA starts: training is deterministic by default (cuBLAS needs it)
    args.device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, args.device)
    model, tokenizer, described = model_and_tokenizer(args, dtype, args.device)
    budgets = list(load_budgets(resolve_data_root(args.data_root), scenario_tasks("multitask"), args.shots, seed=0))

    plain = train_steps(args.method, model, tokenizer, budgets, args, args.warmup + args.steps)[args.warmup:]
    result = {
        "setup": {"model": described, "method": args.method, "device": args.device, "dtype": dtype,
                  "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                  "batch_size": args.batch_size, "shots": args.shots, "revision": _revision(),
                  "versions": package_versions(("torch", "transformers", "peft"))},
        "plain": {"steps": len(plain), "median_s_per_step": round(median(plain), 4),
                  "mean_s_per_step": round(sum(plain) / len(plain), 4)},
        "torch_profiler": profile_torch(args.method, model, tokenizer, budgets, args),
        "cprofile": profile_python(args.method, model, tokenizer, budgets, args),
    }
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
