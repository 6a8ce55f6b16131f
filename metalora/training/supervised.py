"""Plain supervised multi-task training of whatever parameters require grad (LoRA, HydraLoRA)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import get_scheduler

from metalora.data.budgets import TaskBudget
from metalora.training.batching import MixedTaskSampler, batch_loss, collate, encode_example
from metalora.training.config import TrainConfig
from metalora.training.loop import StepCallback, run_steps
from metalora.training.trainer import model_device


def encode_tasks(tokenizer, tasks: Sequence[TaskBudget], max_seq_len: int):
    return [[encode_example(tokenizer, example, max_seq_len) for example in task.examples] for task in tasks]


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    return get_scheduler(
        config.lr_schedule, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps
    )


def train_supervised(
    model: torch.nn.Module,
    tokenizer,
    tasks: Sequence[TaskBudget],
    config: TrainConfig,
    on_step: StepCallback | None = None,
    checkpointer=None,
) -> list[dict]:
    """AdamW on the trainable parameters; each batch mixes the tasks with equal weight."""
    encoded = encode_tasks(tokenizer, tasks, config.max_seq_len)
    sampler = MixedTaskSampler([len(items) for items in encoded], seed=config.seed)
    total_steps = config.total_steps(sum(len(items) for items in encoded), config.batch_size)
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config, total_steps)
    device = model_device(model)

    def compute_gradients() -> dict:
        picks = sampler.next_batch(config.batch_size)
        batch = collate([encoded[task][index] for task, index in picks], tokenizer.pad_token_id, device)
        loss = batch_loss(model, batch)
        loss.backward()
        return {"loss": loss.item()}

    return run_steps(
        model=model,
        total_steps=total_steps,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        compute_gradients=compute_gradients,
        on_step=on_step,
        checkpointer=checkpointer,
    )
