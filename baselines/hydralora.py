"""HydraLoRA baseline (Tian et al., NeurIPS 2024) as a small self-contained layer.

Per adapted linear layer W0 (in -> out): one shared A (in -> r), N zero-initialised heads
B_1..B_N (r -> out) and a bias-free router R (in -> N):

    y = W0 x + sum_i softmax(R x)_i * B_i A dropout(x) * (alpha / r)

The router acts per token on the un-dropped input, is dense (no top-k) and its softmax runs in
float32. It depends on the input, so the adapter cannot be merged and is evaluated live. With
N = 1 it is exactly LoRA with the same A and B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metalora.errors import MlbenchError
from metalora.options import option, require_positive
from metalora.training.adapters import Adapter
from metalora.training.recompute import activation_checkpointing
from metalora.training.supervised import train_supervised
from metalora.training.trainer import MethodSpec, Trainer, preserve_requires_grad, seed_everything

HYDRA_PARAM_MARKERS = ("hydra_A", "hydra_B", "hydra_router")


class HydraLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus an asymmetric multi-head LoRA update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, num_heads: int):
        super().__init__()
        self.base = base
        self.rank, self.num_heads, self.scaling = rank, num_heads, alpha / rank
        # Adapter parameters stay float32 whatever the base dtype (as peft does for LoRA): in bf16
        # an Adam step smaller than about 1/256 of a weight rounds to no change at all.
        factory = {"device": base.weight.device, "dtype": torch.float32}
        self.hydra_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.hydra_B = nn.Parameter(torch.zeros(num_heads, base.out_features, rank, **factory))
        self.hydra_router = nn.Parameter(torch.empty(num_heads, base.in_features, **factory))
        # Same initialisation as nn.Linear / peft's LoRA A: kaiming-uniform with a = sqrt(5).
        nn.init.kaiming_uniform_(self.hydra_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.hydra_router, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        # The adapter branch runs in the adapter's float32, the sum cast back to the base dtype:
        # the same numerics as peft's LoRA, so one head stays exactly LoRA under bf16 too.
        x = x.to(self.hydra_A.dtype)
        gates = torch.softmax(x @ self.hydra_router.t(), dim=-1)  # (..., N), float32
        hidden = self.dropout(x) @ self.hydra_A.t()  # (..., r)
        # sum_i g_i B_i h == [g_1 h, ..., g_N h] @ [B_1; ...; B_N]^T: one matmul for all heads.
        mixed = (gates.unsqueeze(-1) * hidden.unsqueeze(-2)).flatten(-2)  # (..., N * r)
        stacked_b = self.hydra_B.permute(0, 2, 1).reshape(self.num_heads * self.rank, -1)  # (N * r, out)
        return (result + (mixed @ stacked_b) * self.scaling).to(result.dtype)


def inject_hydralora(model: nn.Module, shape: dict) -> list[str]:
    """Replace every target ``nn.Linear`` by a ``HydraLoraLinear``; freeze everything else."""
    targets = set(shape["target_modules"])
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    if not names:
        raise MlbenchError(
            f"none of the target modules {', '.join(sorted(targets))} is a linear layer of this model"
        )
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = HydraLoraLinear(
            getattr(parent, child), shape["rank"], shape["alpha"], shape["dropout"], shape["num_heads"]
        )
        setattr(parent, child, layer)
    return names


def remove_hydralora(model: nn.Module) -> None:
    """Put the original linear layers back (the base weights were never changed)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, HydraLoraLinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.base)


def hydra_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if name.rsplit(".", 1)[-1] in HYDRA_PARAM_MARKERS
    }


class HydraLoraAdapter(Adapter):
    kind = "hydralora"
    mergeable = False

    def attach(self, model):
        training = model.training
        inject_hydralora(model, self.config)
        expected = hydra_state_dict(model)
        if set(expected) != set(self.state):
            missing = sorted(set(expected) - set(self.state))
            raise MlbenchError(
                f"HydraLoRA adapter does not fit this model ({len(missing)} tensors missing, "
                f"e.g. {missing[:1]}); was it trained on another model?"
            )
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, tensor in self.state.items():
                params[name].copy_(tensor)
        return model.train(training)

    def detach(self, attached):
        remove_hydralora(attached)
        return attached


@dataclass(frozen=True)
class HydraOptions:
    num_heads: int = option(4, "hydralora: number of B heads.")

    def validate(self) -> HydraOptions:
        require_positive("num_heads", self.num_heads)
        return self


class HydraLoraTrainer(Trainer):
    options_class = HydraOptions

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> HydraLoraAdapter:
        shape = {
            "rank": config.rank,
            "alpha": config.alpha,
            "dropout": config.dropout,
            "target_modules": list(config.target_modules),
            "num_heads": self.options.num_heads,
        }
        seed_everything(config.seed)
        with preserve_requires_grad(model):
            inject_hydralora(model, shape)
            try:
                with activation_checkpointing(model, config.gradient_checkpointing):
                    log, cost = train_supervised(
                        model, tokenizer, tasks, config, self.plan_budget(config, tasks), on_step, checkpointer
                    )
                adapter = HydraLoraAdapter(shape, hydra_state_dict(model))
            finally:
                remove_hydralora(model)
        adapter.training_log, adapter.training_cost = log, cost
        return adapter


SPEC = MethodSpec(
    "hydralora", HydraLoraTrainer, HydraLoraAdapter, "HydraLoRA: shared A, N routed B heads (evaluated live)"
)
