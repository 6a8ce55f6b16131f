"""The step loop every trainer shares: optimizer and schedule stepping, the loss log, and
checkpoint save/resume. A method supplies only ``compute_gradients``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metalora.errors import MlbenchError
from metalora.training.checkpoint import FolderCheckpointer, capture_training, restore_training

StepCallback = Callable[[dict], None]


def run_steps(
    *,
    model: torch.nn.Module,
    total_steps: int,
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    sampler,
    compute_gradients: Callable[[], dict],
    on_step: StepCallback | None = None,
    checkpointer: FolderCheckpointer | None = None,
) -> list[dict]:
    """Run steps ``1..total_steps`` (or continue after a checkpoint's step) with ``model`` in
    training mode (dropout on), leaving it in eval mode.

    ``compute_gradients`` fills ``param.grad`` for every parameter and returns the step's stats
    (at least ``loss``); it draws its batches from ``sampler``, whose state is checkpointed.
    """
    model.train()
    try:
        return _loop(total_steps, params, optimizer, scheduler, sampler, compute_gradients, on_step, checkpointer)
    finally:
        model.eval()


def _loop(total_steps, params, optimizer, scheduler, sampler, compute_gradients, on_step, checkpointer) -> list[dict]:
    log: list[dict] = []
    first = 1
    state = checkpointer.load() if checkpointer else None
    if state is not None:
        restore_training(state, params, optimizer, scheduler, sampler)
        log, first = list(state.log), state.step + 1
    for step in range(first, total_steps + 1):
        stats = compute_gradients()
        _require_finite_loss(stats, step, scheduler)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step, **stats, "lr": scheduler.get_last_lr()[0]}
        log.append(record)
        if on_step:
            on_step(record)
        if checkpointer and checkpointer.due(step, total_steps):
            checkpointer.save(capture_training(step, params, optimizer, scheduler, sampler, log))
    broken = [name for name, param in params.items() if not bool(torch.isfinite(param).all())]
    if broken:
        raise TrainingDiverged(
            f"training diverged: after step {total_steps} parameter {broken[0]} holds inf or nan; "
            "the run is not evaluated; lower --lr (or --inner-lr)"
        )
    return log


class TrainingDiverged(MlbenchError):
    """The loss or the weights stopped being finite: whatever would be evaluated is meaningless."""


def _require_finite_loss(stats: dict, step: int, scheduler) -> None:
    # Checked before the optimizer step, so no non-finite update is applied or checkpointed.
    loss = stats.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        raise TrainingDiverged(
            f"training diverged: the loss became {float(loss)} at step {step} (learning rate "
            f"{scheduler.get_last_lr()[0]:g}); the run is not evaluated; lower --lr (or --inner-lr)"
        )
