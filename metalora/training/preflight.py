"""Checks that need the model's shape or its tokenizer, made before a run is claimed.

``build_run_config`` and ``prepare_run`` check everything that needs only the options and the data.
Two things also need the model: whether ``target_modules`` name layers it has, and whether
``max_seq_len`` leaves any prompt to learn from. The first is checked from the model's
``config.json`` alone (the model built on the meta device: no weights read) where the model is a
local folder, and in any case right after loading; the second needs the tokenizer, so it is checked
right after loading. Both happen before the run is claimed, so a refusal leaves no run behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from metalora.data.budgets import TaskBudget
from metalora.errors import MlbenchError
from metalora.training.batching import IGNORE_INDEX, encode_example


def linear_module_names(model: torch.nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def config_linear_names(folder: str | Path) -> set[str] | None:
    """The linear layers a local model folder's ``config.json`` describes, without its weights;
    None where that cannot be told without loading (no config, an unknown architecture)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return None
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - anything unusual is checked after loading instead
        return None
    return linear_module_names(model)


def folder_tokenizer(folder: str | Path):
    """A local model folder's tokenizer, prepared as for training; None where it has none."""
    try:
        from transformers import AutoTokenizer

        from metalora.models import prepare_tokenizer

        tokenizer = AutoTokenizer.from_pretrained(Path(folder), trust_remote_code=False)
    except Exception:  # noqa: BLE001 - a folder without a usable tokenizer is checked after loading
        return None
    prepare_tokenizer(tokenizer)
    return tokenizer


def check_target_modules(names: Iterable[str], targets: Sequence[str], model: str) -> None:
    """Every target must name linear layers (as peft matches them: the name or its last parts)."""
    names = set(names)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        available = sorted({name.rsplit(".", 1)[-1] for name in names} - {"lm_head"})
        raise MlbenchError(
            f"target_modules {', '.join(missing)} match no linear layer of model {model}; "
            f"its layers are named {', '.join(available)}"
        )


def check_sequence_length(tokenizer, budgets: Sequence[TaskBudget], max_seq_len: int) -> None:
    """Refuse a ``max_seq_len`` that cuts away the whole prompt of every example of a task: what
    would be trained is the target with nothing to condition on (at 1, not even a target token)."""
    for budget in budgets:
        if not budget.examples or any(_keeps_prompt(tokenizer, e, max_seq_len) for e in budget.examples):
            continue
        # The shortest length that keeps one prompt token of some example: its target + 1.
        needed = min(_target_tokens(tokenizer, e) + 1 for e in budget.examples)
        raise MlbenchError(
            f"max_seq_len {max_seq_len} cuts every example of task {budget.name} down to its target "
            f"alone (nothing to learn from); use at least {needed}"
        )


def _target_tokens(tokenizer, example) -> int:
    encoded = encode_example(tokenizer, example, 1 << 30)
    return sum(label != IGNORE_INDEX for label in encoded.labels)


def _keeps_prompt(tokenizer, example, max_seq_len: int) -> bool:
    encoded = encode_example(tokenizer, example, max_seq_len)
    target = sum(label != IGNORE_INDEX for label in encoded.labels)
    return target > 0 and len(encoded.labels) > target
