"""From examples to training batches: tokenization, padding, equal-weight task mixing, loss.

Prompt and target are tokenized separately and concatenated, with any trailing whitespace of the
prompt moved onto the target (lm-eval splits context and continuation the same way), so the loss
covers exactly the target tokens the evaluation will score.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metalora.data.example import Example

IGNORE_INDEX = -100


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


def collate(batch: Sequence[Encoded], pad_token_id: int, device: str | torch.device = "cpu") -> dict:
    """Right-pad a list of encoded examples into tensors."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": labels.to(device),
    }


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, computed in at least float32."""
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    shifted_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def batch_loss(model, batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["labels"])


class MixedTaskSampler:
    """Batches that mix tasks with equal weight, whatever each task's budget size.

    Every slot picks a task uniformly, then takes that task's next example from its own shuffled
    cycle, so small tasks are revisited as often as large ones. The state is plain data so a
    checkpoint can store and restore it.
    """

    def __init__(self, task_sizes: Sequence[int], seed: int):
        self.task_sizes = list(task_sizes)
        self.rng = random.Random(seed)
        self.orders: list[list[int]] = [[] for _ in task_sizes]

    def _next_index(self, task: int) -> int:
        if not self.orders[task]:
            order = list(range(self.task_sizes[task]))
            self.rng.shuffle(order)
            self.orders[task] = order
        return self.orders[task].pop()

    def next_batch(self, batch_size: int) -> list[tuple[int, int]]:
        """``batch_size`` pairs of (task index, example index)."""
        tasks = [self.rng.randrange(len(self.task_sizes)) for _ in range(batch_size)]
        return [(task, self._next_index(task)) for task in tasks]

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "orders": [list(order) for order in self.orders]}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.orders = [list(order) for order in state["orders"]]
