"""DoRA baseline (Liu et al., ICML 2024): weight-decomposed low-rank adaptation.

Each adapted weight is split into a magnitude vector m and a direction: W' = m * (W0 + s B A) /
||W0 + s B A||_c (column norms). peft implements it (``LoraConfig(use_dora=True)``); training is
the LoRA baseline's (AdamW on equal-weight task mixtures), with m trained alongside A and B. The
adapter merges into the base weights like LoRA.
"""

from __future__ import annotations

from types import MappingProxyType

from baselines.lora import LoraTrainer
from metalora.training.adapters import LoraAdapter
from metalora.training.trainer import MethodSpec


class DoraAdapter(LoraAdapter):
    kind = "dora"
    peft_options = MappingProxyType({"use_dora": True})


class DoraTrainer(LoraTrainer):
    adapter_class = DoraAdapter


SPEC = MethodSpec("dora", DoraTrainer, DoraAdapter, "DoRA: LoRA with a learned magnitude per output (peft use_dora)")
