"""What one training checkpoint costs: file size and save time for a model's LoRA and AdamW state,
and how many saves a run makes under a step-count and under a time schedule.

Builds the run's LoRA (``TrainConfig`` defaults) on the model, takes one AdamW step so the optimizer
holds its two moment tensors per parameter, then saves a checkpoint with a loss log of ``--steps``
records (``FolderCheckpointer.save``: serialised, written atomically and synced) ``--repeat``
times and prints the median. ``--step-s`` (a step's time, e.g. from a run's cost.json) turns that
into saves per run and the share of the training time they take.

    python bench/checkpoint_cost.py --model smollm2-135m --steps 1000 --step-s 0.15
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from metalora.models import load_model
from metalora.training.checkpoint import FolderCheckpointer, TrainState
from metalora.training.config import TrainConfig
from metalora.training.lora import new_lora_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1000, help="the run's optimizer steps (log records saved)")
    parser.add_argument("--step-s", type=float, default=0.15, help="seconds per training step, for the shares")
    parser.add_argument("--every-steps", type=int, default=10, help="the step schedule to compare")
    parser.add_argument("--every-s", type=float, default=60.0, help="the time schedule to compare")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    loaded = load_model(args.model, device=args.device, dtype="float32")
    peft_model = new_lora_model(loaded.model, TrainConfig())
    params = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4)
    for param in params.values():
        param.grad = torch.randn_like(param)
    optimizer.step()
    log = [{"step": step, "loss": 1.0 + 1 / step, "examples": 8, "tokens": 700, "lr": 2e-4}
           for step in range(1, args.steps + 1)]
    state = TrainState(args.steps, params, optimizer.state_dict(), {}, {}, log, {"cpu": torch.get_rng_state()})
    with tempfile.TemporaryDirectory() as folder:
        checkpointer = FolderCheckpointer(folder, every=1)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            checkpointer.save(state)
            times.append(time.perf_counter() - started)
        size = checkpointer.path.stat().st_size
    save_s = statistics.median(times)
    training_s = args.steps * args.step_s
    by_steps = args.steps // args.every_steps
    by_time = int(training_s // args.every_s)
    figures = {
        "model": args.model, "trainable_parameters": sum(p.numel() for p in params.values()),
        "checkpoint_bytes": size, "save_s_median": round(save_s, 4), "steps": args.steps, "step_s": args.step_s,
        "every_steps": {"saves": by_steps, "seconds": round(by_steps * save_s, 1),
                        "share_of_training": round(by_steps * save_s / training_s, 3)},
        "every_s": {"interval_s": args.every_s, "saves": by_time, "seconds": round(by_time * save_s, 1),
                    "share_of_training": round(by_time * save_s / training_s, 3)},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
