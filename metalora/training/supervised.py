"""Plain supervised multi-task training of whatever parameters require grad (LoRA, HydraLoRA, DoRA)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import get_scheduler

from metalora.data.budgets import TaskBudget
from metalora.training.batching import batch_loss, batch_tokens, collate, encode_example
from metalora.training.budget import BudgetPlan, training_cost
from metalora.training.config import TrainConfig
from metalora.training.determinism import deterministic_training
from metalora.training.graphed_decoder import decoder_graphs, graphed_training
from metalora.training.loop import StepCallback, run_steps
from metalora.training.sampling import MixedTaskSampler
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
    budget: BudgetPlan,
    on_step: StepCallback | None = None,
    checkpointer=None,
) -> tuple[list[dict], dict]:
    """AdamW on the trainable parameters for ``budget.updates`` steps; each batch mixes the tasks
    with equal weight (``MixedTaskSampler``) and its loss weighs them by ``config.loss_weighting``.
    Returns the step log and ``cost.json``'s "training" record."""
    encoded = encode_tasks(tokenizer, tasks, config.max_seq_len)
    sampler = MixedTaskSampler([len(items) for items in encoded], seed=config.seed)
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config, budget.updates)
    device = model_device(model)
    graphs = decoder_graphs(model, config.train_cuda_graphs, config.gradient_checkpointing)

    def compute_gradients() -> dict:
        picks = sampler.next_batch(config.batch_size)
        batch = collate(
            [encoded[task][index] for task, index in picks], tokenizer.pad_token_id, device, [t for t, _ in picks]
        )
        loss = batch_loss(model, batch, config.loss_weighting, graphs)
        loss.backward()
        return {"loss": loss.item(), "examples": len(picks), "tokens": batch_tokens(batch)}

    with deterministic_training(config.deterministic_training, device) as deterministic, graphed_training(graphs):
        log = run_steps(
            model=model,
            total_steps=budget.updates,
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            sampler=sampler,
            compute_gradients=compute_gradients,
            on_step=on_step,
            checkpointer=checkpointer,
        )
    cost = training_cost(config.budget_rule, log, sampler.epochs(), parameter_count(params.values()), deterministic)
    if graphs is not None:
        cost["cuda_graphs"] = graphs.summary()
    return log, cost


def parameter_count(params) -> int:
    """Trainable parameters (cost.json), counted from the tensors the optimizer updates."""
    return sum(param.numel() for param in params)
