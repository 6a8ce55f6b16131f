"""LoRA baseline: one peft LoRA adapter trained with AdamW on the task mixture."""

from __future__ import annotations

from peft import get_peft_model_state_dict

from metalora.training.adapters import LoraAdapter
from metalora.training.lora import lora_shape, new_lora_model
from metalora.training.recompute import activation_checkpointing
from metalora.training.supervised import train_supervised
from metalora.training.trainer import MethodSpec, Trainer, preserve_requires_grad


class LoraTrainer(Trainer):
    adapter_class: type[LoraAdapter] = LoraAdapter

    def fit(self, model, tokenizer, tasks, config, on_step=None, checkpointer=None) -> LoraAdapter:
        with preserve_requires_grad(model):
            peft_model = new_lora_model(model, config, self.adapter_class)
            try:
                with activation_checkpointing(peft_model, config.gradient_checkpointing):
                    log, cost = train_supervised(
                        peft_model, tokenizer, tasks, config, self.plan_budget(config, tasks), on_step, checkpointer
                    )
                adapter = self.adapter_class(lora_shape(config), get_peft_model_state_dict(peft_model))
            finally:
                peft_model.unload()  # give the caller back its base model, untouched
        adapter.training_log, adapter.training_cost = log, cost
        return adapter


SPEC = MethodSpec("lora", LoraTrainer, LoraAdapter, "peft LoRA, AdamW on equal-weight task mixtures")
