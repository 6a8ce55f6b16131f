"""How target-token losses combine into one training loss, the same rule for every method.

``task`` (default): the mean over each task's target tokens in the batch, then the mean over the
tasks present, so a task with long answers (GSM8K's ~126 tokens) weighs as much as one with
one-token answers. ``token``: the mean over all target tokens of the batch, where long answers
dominate (what plain supervised fine-tuning usually does).

MeTA-LoRA's batches are one task each, where both rules give the task's token mean; across the
tasks of a meta-iteration ``task`` averages the task updates equally and ``token`` weights each by
its target-token count (``task_weights``).
"""

from __future__ import annotations

import torch

from metalora.training.config import LOSS_WEIGHTINGS

IGNORE_INDEX = -100


def group_sums(values: torch.Tensor, groups: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of ``values`` in each group 0 .. count-1, how many values each group has).

    Why not ``index_add``: on a GPU it adds floats with atomics, whose order follows the blocks'
    scheduling, so the same batch's loss could differ in its last bit from one run to the next (seen
    on the H200 in the logged losses; README, "Training steps as CUDA graphs"). Here each group is a
    masked row of a (count, len(values)) matrix and ``torch.sum`` reduces it in an order fixed by the
    shape: the same bits every time. Its gradient is exact: each value lies in one group's row only.
    The matrix is small: groups are a batch's rows or tasks, values its target tokens or rows."""
    members = group_members(groups, count)
    return masked_sums(values, members), members.sum(1)


def group_members(groups: torch.Tensor, count: int) -> torch.Tensor:
    """(count, len(groups)) booleans: row g marks the values of group g."""
    return groups.unsqueeze(0) == torch.arange(count, device=groups.device).unsqueeze(1)


def masked_sums(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Each group's sum of ``values`` (``group_sums``' fixed-order reduction), given ``group_members``."""
    return torch.where(members, values.unsqueeze(0), torch.zeros((), dtype=values.dtype, device=values.device)).sum(1)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token cross-entropy over target tokens, and per-row target counts,
    computed in at least float32."""
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    shifted_labels = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shifted_labels.shape)
    mask = shifted_labels != IGNORE_INDEX
    return (losses * mask).sum(-1), mask.sum(-1)


def task_weights(counts: torch.Tensor, weighting: str) -> torch.Tensor:
    """Weights (summing to 1) of tasks with ``counts`` target tokens each; tasks without any
    target token get none."""
    present = (counts > 0).to(torch.float32)
    if weighting == "task":
        return present / present.sum().clamp(min=1)
    if weighting == "token":
        counts = counts.to(torch.float32)
        return counts / counts.sum().clamp(min=1)
    raise ValueError(f"loss weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {weighting!r}")


def weighted_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor | None = None, weighting: str = "task"
) -> torch.Tensor:
    """The batch's loss under ``weighting``; rows of one ``task_ids`` value form one task (all rows
    one task when ``task_ids`` is None)."""
    row_sums, row_counts = token_losses(logits, labels)
    return combine_row_losses(row_sums, row_counts, task_ids, weighting)


def combine_row_losses(
    row_sums: torch.Tensor,
    row_counts: torch.Tensor,
    task_ids: torch.Tensor | None = None,
    weighting: str = "task",
    groups: torch.Tensor | None = None,
    count: int | None = None,
) -> torch.Tensor:
    """Per-row loss sums and target counts (``token_losses``) -> the batch's loss under ``weighting``.
    ``groups`` (each row's rank among the distinct task ids) and their ``count``, when the caller
    knows them, save finding them on the device (a device-to-host copy)."""
    if groups is None or count is None:
        if task_ids is None:
            task_ids = torch.zeros(row_counts.shape[0], dtype=torch.long, device=row_counts.device)
        _, groups = torch.unique(task_ids, return_inverse=True)
        count = int(groups.max().item()) + 1
    members = group_members(groups, count)  # built once for both sums: a training step is launch-bound on a GPU
    sums, tokens = masked_sums(row_sums, members), masked_sums(row_counts, members)
    weights = task_weights(tokens, weighting).to(sums.dtype)
    return (weights * sums / tokens.clamp(min=1)).sum()
