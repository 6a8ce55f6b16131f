"""From examples to training batches: tokenization, padding, the loss and what a batch counts.

Prompt and target are tokenized separately and concatenated, with any trailing whitespace of the
prompt moved onto the target (lm-eval splits context and continuation the same way), so the loss
covers exactly the target tokens the evaluation will score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metalora.data.example import Example
from metalora.training.weighting import IGNORE_INDEX, combine_row_losses, token_losses


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def split_trailing_space(prompt: str, target: str) -> tuple[str, str]:
    stripped = prompt.rstrip()
    return stripped, prompt[len(stripped) :] + target


def encode_example(tokenizer, example: Example, max_seq_len: int) -> Encoded:
    """Token ids and labels (-100 on the prompt); the prompt is cut from the left if too long."""
    prompt, target = split_trailing_space(example.prompt, example.target)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target_ids = target_ids + [tokenizer.eos_token_id]
    target_ids = target_ids[:max_seq_len]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(target_ids) - max_seq_len) :]
    return Encoded(
        input_ids=tuple(prompt_ids + target_ids),
        labels=tuple([IGNORE_INDEX] * len(prompt_ids) + target_ids),
    )


def collate(
    batch: Sequence[Encoded],
    pad_token_id: int,
    device: str | torch.device = "cpu",
    task_ids: Sequence[int] | None = None,
) -> dict:
    """Right-pad a list of encoded examples into tensors; ``task_ids`` (one per example; default:
    all one task) say which task each row belongs to, for the loss weighting."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
    tasks = torch.tensor(list(task_ids) if task_ids is not None else [0] * len(batch), dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": labels.to(device),
        "task_ids": tasks.to(device),
    }


def merge_batches(first: dict, second: dict) -> dict:
    """Two collated batches as one, right-padded to the longer width (pads: id 0, mask 0, label
    -100; under causal attention right pads change no real token's logits)."""
    width = max(first["input_ids"].shape[1], second["input_ids"].shape[1])
    fill = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}

    def padded(key: str, batch: dict) -> torch.Tensor:
        tensor = batch[key]
        if key not in fill:
            return tensor
        return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=fill[key])

    return {key: torch.cat([padded(key, first), padded(key, second)]) for key in first}


def batch_tokens(batch: dict) -> int:
    """Tokens one pass over the batch processes (prompts and targets, no padding)."""
    return int(batch["attention_mask"].sum().item())


def target_tokens(batch: dict) -> int:
    """Target tokens the loss covers (the first token is never a target: nothing predicts it)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum().item())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, computed in at least float32."""
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    shifted_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def batch_loss(model, batch: dict, weighting: str = "task") -> torch.Tensor:
    """The batch's loss under ``weighting`` (``metalora.training.weighting``): by default the mean
    over each task's target tokens, then over the tasks of the batch. One task: the token mean."""
    return combine_row_losses(*row_losses(model, batch), batch.get("task_ids"), weighting)


def row_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token cross-entropy over target tokens, and per-row target counts."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_losses(logits, batch["labels"])
