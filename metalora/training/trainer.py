"""The one trainer interface, and the spec a method module exports.

``Trainer(options).fit(model, tokenizer, tasks, config)`` returns an ``Adapter``. A method module
(``baselines/lora.py``, ``metalora/methods/meta.py`` ...) exports one ``MethodSpec``: its trainer
class, whose ``options_class`` is the method's options dataclass, the adapter class it saves, and
the profile defaults of its own options. The table of methods (``metalora/methods``) lists the
specs; everything else (CLI flags, sweep keys, validation, help, adapter loading) is read from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import torch

from metalora.data.budgets import TaskBudget
from metalora.options import NoOptions, options_from_dict
from metalora.training.adapters import Adapter
from metalora.training.budget import BudgetPlan, UpdateShape
from metalora.training.checkpoint import FolderCheckpointer
from metalora.training.config import TrainConfig
from metalora.training.loop import StepCallback


class Trainer(ABC):
    """Trains one adapter on a mixture of task budgets. Options arrive validated (the run config
    validated them, and the budgets, before any model was loaded)."""

    options_class: ClassVar[type] = NoOptions

    def __init__(self, options=None):
        self.options = options if options is not None else self.options_class()

    def update_shape(self, config: TrainConfig, num_tasks: int) -> UpdateShape:
        """What one update consumes (``metalora.training.budget``); supervised methods: one batch
        of ``batch_size`` examples, each slot one task visit."""
        return UpdateShape.supervised(config.batch_size)

    def plan_budget(self, config: TrainConfig, tasks: Sequence[TaskBudget], method: str = "this method") -> BudgetPlan:
        """The run's number of updates under ``config.budget_rule``; refuses (MlbenchError) a
        budget that would leave any example of ``tasks`` unseen."""
        sizes = [len(task.examples) for task in tasks]
        return config.plan_budget(self.update_shape(config, len(tasks)), sizes, method)

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


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of mlbench needs to know about one method."""

    name: str
    trainer: type[Trainer]
    adapter: type[Adapter]  # the class its adapters load as (by ``adapter.kind``)
    description: str
    # profile name -> defaults for this method's own options (e.g. MeTA-LoRA's small sets on CPU)
    profile_defaults: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def options(self) -> type:
        return self.trainer.options_class

    @property
    def trains(self) -> bool:
        return self.name != "base"

    def make_options(self, values: Mapping | None = None):
        """Plain values -> the method's validated options (unknown keys refused by name)."""
        return options_from_dict(self.options, values, what=f"method {self.name}").validate()

    def make_trainer(self, values: Mapping | None = None) -> Trainer:
        return self.trainer(self.make_options(values))

    def plan_budget(self, options, config: TrainConfig, budgets: Sequence[TaskBudget]) -> BudgetPlan | None:
        """The run's budget plan from validated options, before any model is loaded; None for a
        method that does not train."""
        if not self.trains:
            return None
        return self.trainer(options).plan_budget(config, budgets, self.name)


def check_budgets(options, budgets: Sequence[TaskBudget]) -> None:
    """The options' checks that need the drawn budgets (e.g. support + query sets must fit)."""
    check = getattr(options, "check_budgets", None)
    if check is not None:
        check(budgets)


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
