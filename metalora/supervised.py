"""Plain supervised multi-task training of whatever parameters require grad (LoRA, HydraLoRA)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import get_scheduler

from metalora.batching import MixedTaskSampler, batch_loss, collate, encode_example
from metalora.config import TrainConfig
from metalora.data.budgets import TaskBudget
from metalora.trainer import StepCallback, model_device


def encode_tasks(tokenizer, tasks: Sequence[TaskBudget], max_seq_len: int):
    return [[encode_example(tokenizer, example, max_seq_len) for example in task.examples] for task in tasks]


def make_optimizer(params, config: TrainConfig, total_steps: int):
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_schedule, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps
    )
    return optimizer, scheduler


def train_supervised(
    model: torch.nn.Module,
    tokenizer,
    tasks: Sequence[TaskBudget],
    config: TrainConfig,
    on_step: StepCallback | None = None,
) -> list[dict]:
    """AdamW on the trainable parameters; each batch mixes the tasks with equal weight."""
    encoded = encode_tasks(tokenizer, tasks, config.max_seq_len)
    sampler = MixedTaskSampler([len(items) for items in encoded], seed=config.seed)
    total_steps = config.total_steps(sum(len(items) for items in encoded), config.batch_size)
    params = [param for param in model.parameters() if param.requires_grad]
    optimizer, scheduler = make_optimizer(params, config, total_steps)
    device = model_device(model)
    log: list[dict] = []
    model.train()
    for step in range(1, total_steps + 1):
        picks = sampler.next_batch(config.batch_size)
        batch = collate([encoded[task][index] for task, index in picks], tokenizer.pad_token_id, device)
        loss = batch_loss(model, batch)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}
        log.append(record)
        if on_step:
            on_step(record)
    model.eval()
    return log
