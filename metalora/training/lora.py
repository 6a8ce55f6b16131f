"""A fresh peft LoRA on a base model: shared by the LoRA, DoRA and MeTA-LoRA trainers."""

from __future__ import annotations

import torch
from peft import get_peft_model

from metalora.training.adapters import LoraAdapter
from metalora.training.config import TrainConfig
from metalora.training.trainer import seed_everything


def lora_shape(config: TrainConfig) -> dict:
    """The adapter config of a peft LoRA trained with ``config``."""
    return {
        "rank": config.rank,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "target_modules": list(config.target_modules),
    }


def new_lora_model(model: torch.nn.Module, config: TrainConfig, adapter_class: type[LoraAdapter] = LoraAdapter):
    """Wrap ``model`` in a freshly initialised peft LoRA (A random from the seed, B zero; with
    DoRA, the magnitude vector from the base weights' column norms)."""
    seed_everything(config.seed)
    return get_peft_model(model, adapter_class(lora_shape(config), {}).peft_config())
