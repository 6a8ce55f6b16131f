"""Typed, validated configuration shared by every training method.

Method-specific options live in each method's own dataclass (``options_class`` on the trainer);
this module holds what all methods share. ``validate()`` refuses bad values with one line that
says what is allowed, before any model or data is touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from metalora.errors import MlbenchError

LR_SCHEDULES = ("constant", "linear", "cosine")


def require_positive(name: str, value: float, *, integer: bool = True) -> None:
    kind = "integer" if integer else "number"
    if (integer and (not isinstance(value, int) or isinstance(value, bool))) or not value > 0:
        raise MlbenchError(f"{name} must be a positive {kind}, got {value!r}")


def require_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise MlbenchError(f"{name} must be between {low} and {high}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Options every method shares. ``lr`` is the (outer) optimizer's rate: beta for MeTA-LoRA."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    # MLP projections, as in HydraLoRA's scripts and the MeTA-LoRA lab's related code (method.md).
    target_modules: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    steps: int | None = 100
    epochs: float | None = None
    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 8
    max_seq_len: int = 512
    seed: int = 0

    def validate(self) -> TrainConfig:
        require_positive("rank", self.rank)
        require_positive("alpha", self.alpha, integer=False)
        require_range("dropout", self.dropout, 0.0, 0.99)
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise MlbenchError("target_modules must list at least one module name, e.g. gate_proj,up_proj,down_proj")
        if (self.steps is None) == (self.epochs is None):
            raise MlbenchError(f"set exactly one of steps or epochs, got steps={self.steps!r} epochs={self.epochs!r}")
        if self.steps is not None:
            require_positive("steps", self.steps)
        if self.epochs is not None:
            require_positive("epochs", self.epochs, integer=False)
        require_positive("lr", self.lr, integer=False)
        require_range("weight_decay", self.weight_decay, 0.0, 1.0)
        if self.lr_schedule not in LR_SCHEDULES:
            raise MlbenchError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise MlbenchError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        require_positive("batch_size", self.batch_size)
        require_positive("max_seq_len", self.max_seq_len)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise MlbenchError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self

    def total_steps(self, examples_per_epoch: int, examples_per_step: int) -> int:
        """Optimizer steps: ``steps`` as given, or enough to see every example ``epochs`` times."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * examples_per_epoch / examples_per_step))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def options_from_dict(options_class: type, values: dict | None, *, what: str):
    """Build a method's options dataclass, refusing unknown keys by name."""
    values = dict(values or {})
    known = {f.name for f in fields(options_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MlbenchError(
            f"unknown option(s) {', '.join(unknown)} for {what}; allowed: {', '.join(sorted(known)) or 'none'}"
        )
    return options_class(**values)


def config_from_dict(values: dict | None) -> TrainConfig:
    values = dict(values or {})
    if "target_modules" in values and isinstance(values["target_modules"], (list, str)):
        modules = values["target_modules"]
        values["target_modules"] = tuple(modules.split(",") if isinstance(modules, str) else modules)
    return options_from_dict(TrainConfig, values, what="training").validate()


@dataclass(frozen=True)
class NoOptions:
    """For methods without options of their own."""

    def validate(self, **_context) -> NoOptions:
        return self

    def to_dict(self) -> dict:
        return {}


__all__ = ["NoOptions", "TrainConfig", "config_from_dict", "field", "options_from_dict"]
