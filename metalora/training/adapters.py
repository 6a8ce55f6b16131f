"""Adapter artifacts: what a trainer returns, what is saved, and what evaluation attaches.

Saved as a folder: ``adapter.safetensors`` (tensors only, never pickles) and ``adapter.json`` (kind
and shape config). ``load_adapter`` takes the kind -> class mapping (the method table's
``adapter_kinds()``), so loading never guesses and this layer needs no knowledge of the methods.

LoRA-family adapters (LoRA, MeTA-LoRA, DoRA) are peft LoRA adapters, so ``export_peft`` also writes
them in peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``, the files
``PeftModel.save_pretrained`` writes), for ``PeftModel.from_pretrained`` and lm-eval's
``--model_args pretrained=BASE,peft=FOLDER``. HydraLoRA's router has no peft counterpart.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save

from metalora.errors import MlbenchError
from metalora.files import atomic_folder, write_atomic

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT_VERSION = 1
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what peft's save_pretrained writes


def no_peft_format(kind: str) -> MlbenchError:
    return MlbenchError(
        f"a {kind} adapter has no peft format (peft has no counterpart of its layers); "
        "it is kept in mlbench's own format in the run's adapter/ folder"
    )


class Adapter(ABC):
    """Trained parameters plus the config needed to put them back on a base model."""

    kind: str = ""
    mergeable: bool = False
    peft_format: bool = False  # whether export_peft writes a peft adapter

    def __init__(self, config: dict, state: dict[str, torch.Tensor]):
        self.config = dict(config)
        self.state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
        self.training_log: list[dict] = []  # one record per optimizer step, filled by the trainer
        self.training_cost: dict | None = None  # cost.json's "training" record, filled by the trainer

    @abstractmethod
    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return ``model`` with the adapter live (the base module is modified in place), in the
        train/eval mode ``model`` was in: newly built adapter layers (their dropout) follow it."""

    @abstractmethod
    def detach(self, attached: torch.nn.Module) -> torch.nn.Module:
        """Undo ``attach``: take the adapter layers out of what ``attach`` returned and return the
        base model with its own modules (its weights were never changed), so a worker can attach
        the next run's adapter to the same loaded model."""

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold the adapter into the base weights, for faster inference."""
        raise MlbenchError(f"a {self.kind} adapter cannot be merged into the base weights; evaluate it live")

    def export_peft(self, folder: str | os.PathLike, base_model: str, model_identity: str = "") -> Path:
        """Write the adapter in peft's format (LoRA family only)."""
        raise no_peft_format(self.kind)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically: a reader never sees weights without their config or half a file."""
        folder = Path(folder)
        header = {"kind": self.kind, "format_version": FORMAT_VERSION, "config": self.config}
        # Serialised in memory and written by Python, so a full disk is an OSError (one line), and
        # the folder appears as a whole: never weights without their config.
        weights = save(self.state, metadata={"kind": self.kind})
        with atomic_folder(folder) as temp:
            write_atomic(temp / ADAPTER_WEIGHTS, weights)
            write_atomic(temp / ADAPTER_CONFIG, json.dumps(header, indent=2, sort_keys=True))
        return folder


class NoAdapter(Adapter):
    """The base model itself: the reference row of every comparison."""

    kind = "none"
    mergeable = True

    def attach(self, model):
        return model

    def detach(self, attached):
        return attached

    def merge(self, model):
        return model


class LoraAdapter(Adapter):
    """An ordinary peft LoRA adapter (LoRA and MeTA-LoRA both produce one)."""

    kind = "lora"
    mergeable = True
    peft_format = True
    peft_options: ClassVar[Mapping[str, object]] = {}  # extra LoraConfig arguments of a subclass

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.config["rank"],
            lora_alpha=self.config["alpha"],
            lora_dropout=self.config["dropout"],
            target_modules=list(self.config["target_modules"]),
            bias="none",
            task_type="CAUSAL_LM",
            **self.peft_options,
        )

    def attach(self, model):
        from peft import get_peft_model, set_peft_model_state_dict

        training = model.training
        peft_model = get_peft_model(model, self.peft_config())
        result = set_peft_model_state_dict(peft_model, self.state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise MlbenchError(
                f"adapter does not fit this model: {len(unexpected)} unexpected tensors, e.g. {unexpected[0]}"
            )
        return peft_model.train(training)

    def detach(self, attached):
        return attached.unload()  # the adapter layers out, nothing merged into the base

    def merge(self, model):
        return self.attach(model).merge_and_unload()

    def export_peft(self, folder: str | os.PathLike, base_model: str, model_identity: str = "") -> Path:
        """``adapter_config.json`` (``base_model_name_or_path`` = ``base_model``, a name or folder
        ``from_pretrained`` loads) and ``adapter_model.safetensors``, whose metadata also names the
        weights' hash (``model_identity``); the state dict's keys are already peft's saved keys
        (``get_peft_model_state_dict``). Written as a whole folder."""
        import tempfile

        config = self.peft_config()
        config.base_model_name_or_path = base_model
        config.inference_mode = True
        metadata = {"format": "pt", "mlbench_kind": self.kind, "mlbench_model_identity": model_identity}
        weights = save(self.state, metadata=metadata)
        with atomic_folder(folder) as temp, tempfile.TemporaryDirectory() as scratch:
            config.save_pretrained(scratch)  # peft's own serialisation of its config
            write_atomic(temp / PEFT_FILES[0], (Path(scratch) / PEFT_FILES[0]).read_bytes())
            write_atomic(temp / PEFT_FILES[1], weights)
        return Path(folder)


def load_adapter(folder: str | os.PathLike, kinds: Mapping[str, type[Adapter]]) -> Adapter:
    """Load a saved adapter as the class its ``kind`` names in ``kinds``."""
    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise MlbenchError(f"{folder} is not an adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        header = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise MlbenchError(f"malformed {config_path} at line {error.lineno}: {error.msg}") from None
    kind = header.get("kind")
    if kind not in kinds:
        raise MlbenchError(f"{config_path} names adapter kind {kind!r}; known kinds: {', '.join(kinds)}")
    return kinds[kind](header["config"], load_file(str(weights_path)))
