"""The one trainer interface and the method registry.

``make_trainer("metalora", {"inner_steps": 5})`` builds a trainer with validated options;
``trainer.fit(model, tokenizer, tasks, config)`` returns an ``Adapter``. A new method is one module
with a ``Trainer`` subclass and one line in ``METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

import torch

from metalora.adapters import Adapter, NoAdapter, import_reference
from metalora.checkpoint import FolderCheckpointer
from metalora.config import NoOptions, TrainConfig, options_from_dict
from metalora.data.budgets import TaskBudget
from metalora.errors import MlbenchError
from metalora.loop import StepCallback

METHODS: Mapping[str, str] = MappingProxyType(
    {
        "base": "metalora.trainer:BaseModelTrainer",
        "lora": "baselines.lora:LoraTrainer",
        "hydralora": "baselines.hydralora:HydraLoraTrainer",
        "metalora": "metalora.meta:MetaLoraTrainer",
    }
)


class Trainer(ABC):
    """Trains one adapter on a mixture of task budgets."""

    name: ClassVar[str]
    options_class: ClassVar[type] = NoOptions

    def __init__(self, options=None):
        self.options = options if options is not None else self.options_class()

    def validate(self, config: TrainConfig, tasks: Sequence[TaskBudget]) -> None:
        """Refuse combinations the method cannot train on, before any work."""
        config.validate()
        self.options.validate(config=config, tasks=tasks)

    @abstractmethod
    def fit(
        self,
        model: torch.nn.Module,
        tokenizer,
        tasks: Sequence[TaskBudget],
        config: TrainConfig,
        on_step: StepCallback | None = None,
        checkpointer: FolderCheckpointer | None = None,
    ) -> Adapter:
        """Train and return the adapter; ``model`` is left as it was given. With a
        ``checkpointer``, training resumes from its latest checkpoint and saves new ones."""


class BaseModelTrainer(Trainer):
    """No training: the base model is the reference row."""

    name = "base"

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> Adapter:
        return NoAdapter({}, {})


def make_trainer(method: str, options: dict | None = None) -> Trainer:
    if method not in METHODS:
        raise MlbenchError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    trainer_class = import_reference(METHODS[method])
    return trainer_class(options_from_dict(trainer_class.options_class, options, what=f"method {method}"))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def seed_everything(seed: int) -> None:
    """Adapter initialisation and dropout draw from torch's generators; seed them per fit."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class preserve_requires_grad:
    """Context manager: adapter injection freezes the base weights; give the caller its flags back."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = {name: param.requires_grad for name, param in self.model.named_parameters()}
        return self.model

    def __exit__(self, *exc):
        for name, param in self.model.named_parameters():
            if name in self.flags:
                param.requires_grad_(self.flags[name])
        return False
