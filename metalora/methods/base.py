"""The base model without training: the reference row of every comparison."""

from __future__ import annotations

from metalora.training.adapters import Adapter, NoAdapter
from metalora.training.trainer import MethodSpec, Trainer


class BaseModelTrainer(Trainer):
    """No training: the adapter is the base model itself."""

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> Adapter:
        return NoAdapter({}, {})


SPEC = MethodSpec("base", BaseModelTrainer, NoAdapter, "the base model, untrained (reference row)")
