"""LoRA baseline: one peft LoRA adapter trained with AdamW on the task mixture."""

from __future__ import annotations

from peft import get_peft_model, get_peft_model_state_dict

from metalora.adapters import LoraAdapter
from metalora.supervised import train_supervised
from metalora.trainer import Trainer, preserve_requires_grad, seed_everything


def lora_shape(config) -> dict:
    return {
        "rank": config.rank,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "target_modules": list(config.target_modules),
    }


def new_lora_model(model, config):
    """Wrap ``model`` in a freshly initialised peft LoRA (A random from the seed, B zero)."""
    seed_everything(config.seed)
    return get_peft_model(model, LoraAdapter(lora_shape(config), {}).peft_config())


class LoraTrainer(Trainer):
    name = "lora"

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> LoraAdapter:
        self.validate(config, tasks)
        with preserve_requires_grad(model):
            peft_model = new_lora_model(model, config)
            try:
                log = train_supervised(peft_model, tokenizer, tasks, config, on_step, checkpointer)
                adapter = LoraAdapter(lora_shape(config), get_peft_model_state_dict(peft_model))
            finally:
                peft_model.unload()  # give the caller back its base model, untouched
        adapter.training_log = log
        return adapter
