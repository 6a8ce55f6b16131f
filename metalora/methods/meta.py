"""MeTA-LoRA: a first-order, MAML-style two-stage trainer of one shared LoRA adapter.

Each meta-iteration samples n tasks. Phase I: per task, copy the shared adapter theta and take k
SGD steps at rate alpha on a support set. Phase II: the query-set gradient at the adapted weights,
averaged over tasks, updates theta through the outer optimizer at rate beta (``TrainConfig.lr``).
The result is one ordinary LoRA adapter; task adapters are scratch state.

Variants answer the paper's open questions (method.md): exact second-order MAML (gradients flow
through the inner loop), Reptile (theta moves toward the adapted weights), phase I only (the same
update as Reptile: adaptation without a query-set meta-gradient) and phase II only (no inner loop:
plain multi-task steps). Every variant draws the same examples per iteration (n tasks x (n_s +
n_q)), uses all of them and updates theta through the same outer optimizer, so an ablation changes
one thing: Reptile and phase I only take their (k + 1)-th inner step on the query set, phase II
only takes its one gradient on support and query sets together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import torch
from peft import get_peft_model_state_dict
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from metalora.errors import MlbenchError
from metalora.options import option, require_choice, require_positive
from metalora.training.adapters import LoraAdapter
from metalora.training.batching import (
    IGNORE_INDEX,
    batch_loss,
    batch_tokens,
    collate,
    lm_loss,
    merge_batches,
    row_losses,
    target_tokens,
    to_device,
)
from metalora.training.budget import UpdateShape, training_cost
from metalora.training.determinism import deterministic_training
from metalora.training.loop import run_steps
from metalora.training.lora import lora_shape, new_lora_model
from metalora.training.packing import pack_task_batches
from metalora.training.recompute import activation_checkpointing, swapped_parameters
from metalora.training.sampling import EpisodeSampler
from metalora.training.stacked_lora import stacked_adapters, stacked_copies
from metalora.training.supervised import encode_tasks, make_scheduler, parameter_count
from metalora.training.trainer import MethodSpec, Trainer, model_device, preserve_requires_grad
from metalora.training.weighting import task_weights

Params = dict[str, torch.Tensor]


def params_loss(model: torch.nn.Module, params: Params, batch: dict) -> torch.Tensor:
    """The loss of ``model`` with ``params`` swapped in for its adapter parameters."""
    return batch_loss(lambda **inputs: functional_call(model, params, args=(), kwargs=inputs), batch)


def loss_and_grads(
    model: torch.nn.Module, params: Params, batch: dict, *, create_graph: bool = False
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The loss with ``params`` in place of the adapter parameters, and its gradient with respect
    to them. The parameters stay swapped in through the backward pass, so a checkpointed layer
    recomputes its forward with them (``metalora/training/recompute.py``); otherwise the same
    arithmetic as ``params_loss`` followed by ``torch.autograd.grad``."""
    with swapped_parameters(model, params):
        loss = batch_loss(model, batch)
        return loss, torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)


def adapt(
    model: torch.nn.Module, theta: Params, support: dict, steps: int, lr: float, *, create_graph: bool
) -> tuple[Params, list[torch.Tensor]]:
    """Phase I: ``steps`` plain SGD steps on the support set, starting from ``theta``.

    With ``create_graph`` the steps stay differentiable with respect to ``theta`` (second order);
    without it each step's result is a fresh leaf, so nothing backpropagates through the loop.
    """
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grads(model, theta, support, create_graph=create_graph)
        losses.append(loss.detach())  # read on the host once per meta-iteration, not per step
        theta = {name: value - lr * grad for (name, value), grad in zip(theta.items(), grads)}
        if not create_graph:
            theta = {name: value.detach().requires_grad_() for name, value in theta.items()}
    return theta, losses


def detached_copy(shared: Params) -> Params:
    return {name: value.detach().clone().requires_grad_() for name, value in shared.items()}


@dataclass(frozen=True)
class TaskStep:
    """One task's contribution to the shared update: a direction the outer optimizer follows as
    if it were a gradient, and the losses seen (scalar tensors, read on the host once per
    meta-iteration)."""

    direction: Params
    support_losses: list[torch.Tensor]
    query_loss: torch.Tensor | None


def first_order_step(model, shared, support, query, steps, lr) -> TaskStep:
    theta, support_losses = adapt(model, detached_copy(shared), support, steps, lr, create_graph=False)
    loss, grads = loss_and_grads(model, theta, query)
    return TaskStep(dict(zip(theta, grads)), support_losses, loss.detach())


def second_order_step(model, shared, support, query, steps, lr) -> TaskStep:
    # Fused attention kernels have no double backward; the math kernel is exact and has one.
    with sdpa_kernel(SDPBackend.MATH):
        start = {name: value for name, value in shared.items()}  # the live parameters: keep the graph
        theta, support_losses = adapt(model, start, support, steps, lr, create_graph=True)
        loss = params_loss(model, theta, query)
        grads = torch.autograd.grad(loss, list(shared.values()))
    return TaskStep(dict(zip(shared, grads)), support_losses, loss.detach())


def reptile_step(model, shared, support, query, steps, lr) -> TaskStep:
    theta, support_losses = adapt(model, detached_copy(shared), support, steps, lr, create_graph=False)
    # The query set is the (k + 1)-th inner step, so Reptile uses the examples first-order uses.
    theta, query_losses = adapt(model, theta, query, 1, lr, create_graph=False)
    # theta <- theta - beta * (theta - theta_i) is theta + beta * (theta_i - theta): Reptile's move.
    direction = {name: (shared[name].detach() - theta[name].detach()) for name in shared}
    return TaskStep(direction, support_losses, query_losses[0])


def multitask_step(model, shared, support, query, steps, lr) -> TaskStep:
    """No inner loop: the gradient at theta of the loss on support and query sets together."""
    theta = detached_copy(shared)
    loss, grads = loss_and_grads(model, theta, merge_batches(support, query))
    return TaskStep(dict(zip(theta, grads)), [], loss.detach())


def weighted_task_sum(weights: torch.Tensor, per_task: torch.Tensor) -> torch.Tensor:
    """(tasks, ...) -> the sum over tasks weighted by ``weights`` (tasks,): how the all-tasks-at-once
    inner loops combine the tasks' directions."""
    return (weights.to(per_task.dtype).view(-1, *[1] * (per_task.dim() - 1)) * per_task).sum(0)


def stack_batches(batches: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tasks, batch, length) input ids and labels, right-padded to one length across tasks."""
    length = max(batch["input_ids"].shape[1] for batch in batches)

    def pad(tensor, value):
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]), value=value)

    ids = torch.stack([pad(batch["input_ids"], 0) for batch in batches])
    labels = torch.stack([pad(batch["labels"], IGNORE_INDEX) for batch in batches])
    return ids, labels


def batched_task_steps(model, shared: Params, episode, variant: Variant, steps: int, lr: float, weights: torch.Tensor):
    """Every task's inner loop at once: task adapters stacked on a leading dimension and one
    vmapped forward/backward per inner step, instead of one small pass per task. Same maths as
    the sequential steps (tests compare them); ``weights`` combine the tasks' directions.

    The attention mask is left out on purpose: batches are right-padded, so under causal attention
    no real token sees a pad token and the loss (labels -100 on pads) is unchanged, while the mask
    would need data-dependent checks that vmap cannot trace.
    """
    from torch.func import grad_and_value, vmap

    def loss_of(params, ids, labels):
        logits = functional_call(model, params, args=(), kwargs={"input_ids": ids}).logits
        return lm_loss(logits, labels)

    combine = partial(weighted_task_sum, weights)
    per_task = vmap(grad_and_value(loss_of), randomness="different")
    count = len(episode)
    theta = {name: value.detach().unsqueeze(0).expand(count, *value.shape).clone() for name, value in shared.items()}
    if not variant.inner_loop:
        ids, labels = stack_batches([merge_batches(support, query) for support, query in episode])
        grads, losses = per_task(theta, ids, labels)
        return {name: combine(grads[name]) for name in shared}, None, losses
    support_ids, support_labels = stack_batches([support for support, _ in episode])
    first_losses = None
    for _ in range(steps):
        grads, losses = per_task(theta, support_ids, support_labels)
        first_losses = losses if first_losses is None else first_losses
        theta = {name: value - lr * grads[name] for name, value in theta.items()}
    support_losses = first_losses
    query_ids, query_labels = stack_batches([query for _, query in episode])
    grads, losses = per_task(theta, query_ids, query_labels)
    if variant.outer == "query_gradient":
        return {name: combine(grads[name]) for name in shared}, support_losses, losses
    theta = {name: value - lr * grads[name] for name, value in theta.items()}  # the query step
    direction = {name: combine(shared[name].detach().unsqueeze(0) - theta[name]) for name in shared}
    return direction, support_losses, losses


def stacked_losses_and_grads(
    model: torch.nn.Module, params: Params, batch: dict, tasks: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Each task's loss (its mean over its own target tokens, as ``batch_loss`` gives for its rows
    alone) with task t's rows computed by adapter copy t of ``params`` ((tasks, *shape) tensors),
    and the gradient of their sum: its slice t is task t's own gradient, one forward/backward."""
    with stacked_adapters(model, params, tasks):
        sums, counts = row_losses(model, batch)
        losses = sums.view(tasks, -1).sum(1) / counts.view(tasks, -1).sum(1).clamp(min=1)
        return losses.detach(), torch.autograd.grad(losses.sum(), list(params.values()))


def stacked_task_steps(model, shared: Params, episode, variant: Variant, steps: int, lr: float, weights: torch.Tensor):
    """Every task's inner loop at once in ordinary passes over all tasks' rows, each task's rows
    through its own adapter copy (``metalora.training.stacked_lora``): per inner step one forward
    and one backward for all tasks, instead of one small pass per task. Same maths as the
    sequential steps (tests compare them); ``weights`` combine the tasks' directions. Returns the
    direction and the first support losses and query losses as (tasks,) tensors (or None)."""
    count, combine = len(episode), partial(weighted_task_sum, weights)
    theta = stacked_copies(shared, count)
    if not variant.inner_loop:
        batch = pack_task_batches([merge_batches(support, query) for support, query in episode])
        losses, grads = stacked_losses_and_grads(model, theta, batch, count)
        return {name: combine(grad) for name, grad in zip(theta, grads)}, None, losses
    support_batch = pack_task_batches([support for support, _ in episode])
    first_losses = None
    for _ in range(steps):
        losses, grads = stacked_losses_and_grads(model, theta, support_batch, count)
        first_losses = losses if first_losses is None else first_losses
        theta = {name: (value - lr * grad).detach().requires_grad_() for (name, value), grad in zip(theta.items(), grads)}
    query_losses, grads = stacked_losses_and_grads(model, theta, pack_task_batches([q for _, q in episode]), count)
    if variant.outer == "query_gradient":
        return {name: combine(grad) for name, grad in zip(theta, grads)}, first_losses, query_losses
    theta = {name: (value - lr * grad).detach() for (name, value), grad in zip(theta.items(), grads)}  # the query step
    direction = {name: combine(shared[name].detach().unsqueeze(0) - theta[name]) for name in shared}
    return direction, first_losses, query_losses


@dataclass(frozen=True)
class Variant:
    """How a meta-iteration turns tasks into an update of the shared adapter."""

    task_step: Callable[..., TaskStep]
    description: str
    inner_loop: bool = True  # False: phase II only (no inner steps; support and query trained together)
    # "query_gradient": the update is the query-set gradient at the adapted weights (its weight
    # under token weighting: the query's target tokens); "adapted_weights": theta moves toward the
    # weights adapted on support and query (weight: all the task's target tokens)
    outer: str = "query_gradient"
    batchable: bool = True  # can run with inner_loop="batched" or "stacked" (all tasks at once)

    def passes(self, inner_steps: int, support: int, query: int) -> int:
        """Example (or token) passes of one task visit with ``support`` and ``query`` examples (or
        tokens): k over the support set and one over the query set, or one over both."""
        return inner_steps * support + query if self.inner_loop else support + query

    def weight_tokens(self, support: dict, query: dict) -> int:
        """The target tokens behind the task's update, for ``loss_weighting=token``."""
        if self.inner_loop and self.outer == "query_gradient":
            return target_tokens(query)
        return target_tokens(support) + target_tokens(query)


VARIANTS: Mapping[str, Variant] = MappingProxyType(
    {
        "first_order": Variant(first_order_step, "first-order MAML (the paper's setting)"),
        "second_order": Variant(second_order_step, "exact MAML, backprop through the inner loop", batchable=False),
        "reptile": Variant(
            reptile_step,
            "Reptile: k support steps and one query step, theta moves toward the adapted weights",
            outer="adapted_weights",
        ),
        "phase1_only": Variant(
            reptile_step,
            "phase I only: adaptation without a query meta-gradient (the same update as reptile)",
            outer="adapted_weights",
        ),
        "phase2_only": Variant(
            multitask_step, "phase II only: no inner loop, multi-task steps on support + query sets", inner_loop=False
        ),
    }
)
OUTER_OPTIMIZERS = ("adamw", "sgd")
INNER_LOOPS = ("sequential", "batched", "stacked")


@dataclass(frozen=True)
class MetaOptions:
    inner_steps: int = option(3, "metalora: k inner SGD steps per task.")
    support_size: int = option(8, "metalora: n_s support examples per task.")
    query_size: int = option(8, "metalora: n_q query examples per task.")
    inner_lr: float = option(1e-2, "metalora: inner SGD rate alpha (the outer rate beta is --lr).")
    tasks_per_iteration: int | None = option(None, "metalora: tasks per meta-iteration (default: all).")
    variant: str = option("first_order", "metalora: " + " | ".join(VARIANTS) + ".")
    outer_optimizer: str = option("adamw", "metalora: " + " | ".join(OUTER_OPTIMIZERS) + ".")
    # "sequential" runs the tasks' inner loops one task after another; "batched" and "stacked"
    # run all tasks' inner steps at once (faster on a GPU, where small passes are overhead-bound):
    # "batched" as one vmapped pass per step, "stacked" as one ordinary pass over all tasks' rows
    # with per-task adapter copies applied by batched matmuls (no vmap; checkpointing works).
    inner_loop: str = option(
        "sequential",
        "metalora: " + " | ".join(INNER_LOOPS) + " (batched: one vmapped pass for all tasks; stacked: one "
        "ordinary pass for all tasks, each task's rows through its own adapter copy).",
    )

    @property
    def effective_inner_steps(self) -> int:
        return self.inner_steps if VARIANTS[self.variant].inner_loop else 0

    def update_shape(self, num_tasks: int) -> UpdateShape:
        """One meta-iteration: n distinct task visits, each drawing n_s + n_q examples and passing
        them as its variant does (``metalora.training.budget``)."""
        tasks = self.tasks_per_iteration or num_tasks
        per_task = VARIANTS[self.variant].passes(self.effective_inner_steps, self.support_size, self.query_size)
        return UpdateShape(tasks * per_task, tasks, self.support_size + self.query_size, distinct=True)

    def validate(self) -> MetaOptions:
        if self.variant not in VARIANTS:
            raise MlbenchError(f"unknown MeTA-LoRA variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        require_choice("outer_optimizer", self.outer_optimizer, OUTER_OPTIMIZERS)
        require_choice("inner_loop", self.inner_loop, INNER_LOOPS)
        if self.inner_loop != "sequential" and not VARIANTS[self.variant].batchable:
            raise MlbenchError(f"variant {self.variant} runs only with inner_loop=sequential")
        if not isinstance(self.inner_steps, int) or isinstance(self.inner_steps, bool) or self.inner_steps < 0:
            raise MlbenchError(f"inner_steps must be a non-negative integer, got {self.inner_steps!r}")
        if self.inner_steps == 0 and VARIANTS[self.variant].inner_loop:
            raise MlbenchError(
                f"inner_steps=0 would leave variant {self.variant}'s support sets unused; "
                "use at least 1, or variant phase2_only for training without an inner loop"
            )
        require_positive("support_size", self.support_size)
        require_positive("query_size", self.query_size)
        require_positive("inner_lr", self.inner_lr, integer=False)
        if self.tasks_per_iteration is not None:
            require_positive("tasks_per_iteration", self.tasks_per_iteration)
        return self

    def check_train(self, train) -> None:
        """What these options cannot combine with the shared training options (``TrainConfig``)."""
        if not train.gradient_checkpointing:
            return
        if self.inner_loop == "batched":
            raise MlbenchError(
                "gradient_checkpointing does not work with inner_loop=batched (PyTorch cannot recompute "
                "activations inside vmap); use inner_loop=sequential or leave checkpointing off"
            )
        if self.variant == "second_order":
            raise MlbenchError(
                "gradient_checkpointing does not work with variant=second_order (its gradient flows back "
                "through every inner step, which recomputation would redo with other weights); use "
                "first_order or leave checkpointing off"
            )

    def check_budgets(self, tasks: Sequence) -> None:
        """Each meta-iteration draws n tasks, each with disjoint support and query sets."""
        if self.tasks_per_iteration is not None and self.tasks_per_iteration > len(tasks):
            raise MlbenchError(
                f"tasks_per_iteration is {self.tasks_per_iteration} but only {len(tasks)} tasks are trained; "
                f"use at most {len(tasks)}"
            )
        needed = self.support_size + self.query_size
        for task in tasks:
            if len(task.examples) < needed:
                raise MlbenchError(
                    f"support_size + query_size = {needed} is larger than task {task.name}'s budget of "
                    f"{len(task.examples)} examples; lower them or raise --shots"
                )


def meta_update_direction(
    model: torch.nn.Module,
    shared: Params,
    episode: Sequence[tuple[dict, dict]],
    options: MetaOptions,
    weighting: str = "task",
) -> tuple[Params, dict]:
    """Phases I and II for one meta-iteration: the tasks' directions combined by ``weighting``
    (``task``: their mean; ``token``: weighted by the target tokens behind each). A task's own
    batches are one task each, where both weightings give its token mean."""
    variant = VARIANTS[options.variant]
    tokens = torch.tensor([variant.weight_tokens(support, query) for support, query in episode])
    weights = task_weights(tokens, weighting)
    steps = options.effective_inner_steps
    if options.inner_loop in ("batched", "stacked"):
        steps_of = batched_task_steps if options.inner_loop == "batched" else stacked_task_steps
        direction, support, query = steps_of(
            model, shared, episode, variant, steps, options.inner_lr, to_device(weights, model_device(model))
        )
        support, query = _losses_to_host(support, query)
    else:
        results = [variant.task_step(model, shared, s, q, steps, options.inner_lr) for s, q in episode]
        direction = {
            # w: a 0-dim host tensor, read on the host by the multiplication (no device wait)
            name: sum(w * result.direction[name] for w, result in zip(weights, results)) for name in shared
        }
        support = [result.support_losses[0] for result in results if result.support_losses]
        query = [result.query_loss for result in results if result.query_loss is not None]
        support, query = _losses_to_host(*(torch.stack(losses) if losses else None for losses in (support, query)))
    return direction, {"support_loss": _mean_or_none(support), "query_loss": _mean_or_none(query)}


def episode_consumption(episode: Sequence[tuple[dict, dict]], options: MetaOptions) -> dict:
    """Example passes and tokens one meta-iteration processes (``metalora.training.budget``
    defines a pass): k passes over each support set and one over its query set, or one over both."""
    variant, steps = VARIANTS[options.variant], options.effective_inner_steps
    return {
        "examples": sum(variant.passes(steps, len(s["input_ids"]), len(q["input_ids"])) for s, q in episode),
        "tokens": sum(variant.passes(steps, batch_tokens(s), batch_tokens(q)) for s, q in episode),
    }


def _losses_to_host(*losses: torch.Tensor | None) -> list[list[float] | None]:
    """(tasks,) loss tensors as lists of floats, in one device-to-host copy: the meta-iteration's
    only wait for the device (the token counts behind the weights come from the host)."""
    present = [value.reshape(-1) for value in losses if value is not None]
    flat = torch.cat(present).tolist() if present else []
    result, start = [], 0
    for value in losses:
        if value is None:
            result.append(None)
        else:
            result.append(flat[start : start + value.numel()])
            start += value.numel()
    return result


def _mean_or_none(values: Sequence[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def make_outer_optimizer(params: list[torch.Tensor], options: MetaOptions, lr: float, weight_decay: float):
    """The same outer optimizer for every variant, so an ablation of variants changes nothing else."""
    if options.outer_optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class MetaLoraTrainer(Trainer):
    options_class = MetaOptions

    def update_shape(self, config, num_tasks: int) -> UpdateShape:
        return self.options.update_shape(num_tasks)

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> LoraAdapter:
        options = self.options
        options.check_train(config)  # also when called directly, not through a run config
        options.check_budgets(tasks)  # also for direct use: the sampler needs n_s + n_q <= each budget
        budget = self.plan_budget(config, tasks)
        encoded = encode_tasks(tokenizer, tasks, config.max_seq_len)
        sampler = EpisodeSampler(
            [len(items) for items in encoded], options.tasks_per_iteration, options.support_size,
            options.query_size, seed=config.seed,
        )
        with preserve_requires_grad(model):
            peft_model = new_lora_model(model, config)
            try:
                shared = {name: param for name, param in peft_model.named_parameters() if param.requires_grad}
                with (activation_checkpointing(peft_model, config.gradient_checkpointing),
                      deterministic_training(config.deterministic_training, model_device(peft_model)) as deterministic):
                    log = self._meta_train(
                        peft_model, shared, tokenizer, encoded, sampler, config, budget.updates, on_step, checkpointer
                    )
                adapter = LoraAdapter(lora_shape(config), get_peft_model_state_dict(peft_model))
            finally:
                peft_model.unload()
        adapter.training_log = log
        adapter.training_cost = training_cost(
            config.budget_rule, log, sampler.epochs(), parameter_count(shared.values()), deterministic
        )
        return adapter

    def _meta_train(self, peft_model, shared, tokenizer, encoded, sampler, config, total_steps, on_step, checkpointer):
        optimizer = make_outer_optimizer(list(shared.values()), self.options, config.lr, config.weight_decay)
        scheduler = make_scheduler(optimizer, config, total_steps)
        device, pad = model_device(peft_model), tokenizer.pad_token_id

        def compute_gradients() -> dict:
            episode = [
                (
                    collate([encoded[task][index] for index in support], pad, device),
                    collate([encoded[task][index] for index in query], pad, device),
                )
                for task, support, query in sampler.next_episode()
            ]
            direction, stats = meta_update_direction(peft_model, shared, episode, self.options, config.loss_weighting)
            for name, param in shared.items():
                param.grad = direction[name].to(param.dtype)
            loss = stats["query_loss"] if stats["query_loss"] is not None else stats["support_loss"]
            return {"loss": loss, **stats, **episode_consumption(episode, self.options)}

        return run_steps(
            model=peft_model,
            total_steps=total_steps,
            params=shared,
            optimizer=optimizer,
            scheduler=scheduler,
            sampler=sampler,
            compute_gradients=compute_gradients,
            on_step=on_step,
            checkpointer=checkpointer,
        )


# On CPU the quick and smoke profiles train on tiny support/query sets with one inner step.
_CPU_DEFAULTS = MappingProxyType({"support_size": 2, "query_size": 2, "inner_steps": 1})
SPEC = MethodSpec(
    "metalora",
    MetaLoraTrainer,
    LoraAdapter,
    "MeTA-LoRA: first-order MAML-style two-stage training of one shared LoRA adapter",
    profile_defaults=MappingProxyType({"quick": _CPU_DEFAULTS, "smoke": _CPU_DEFAULTS}),
)
