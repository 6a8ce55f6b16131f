"""The table of methods: one line per method, each importing that method module's ``SPEC``.

This is the top of the training stack: the method modules (``baselines/*``, ``metalora/methods/*``)
import the training mechanics below them (``metalora/training``) and never this table; the run
layer (``metalora/runs``) and the CLI read the table. Everything method-specific that the rest of
mlbench needs (CLI flags, sweep keys, validation, help text, adapter kinds, profile defaults) comes
from these specs, so a new method is one module plus one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from baselines.dora import SPEC as DORA
from baselines.hydralora import SPEC as HYDRALORA
from baselines.lora import SPEC as LORA
from metalora.errors import MlbenchError
from metalora.methods.base import SPEC as BASE
from metalora.methods.meta import SPEC as METALORA
from metalora.training.adapters import Adapter, NoAdapter
from metalora.training.trainer import MethodSpec, Trainer

METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in (
    BASE,
    LORA,
    HYDRALORA,
    METALORA,
    DORA,
)})


def method_name(name: str) -> str:
    """The table's name for what a person typed: case, hyphens and underscores do not matter
    (``MeTA-LoRA``, ``METALORA`` and ``metalora`` are one method)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in METHODS:
        raise MlbenchError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return key


def get_method(name: str) -> MethodSpec:
    return METHODS[method_name(name)]


def make_trainer(method: str, options: Mapping | None = None) -> Trainer:
    """A trainer with validated options, e.g. ``make_trainer("metalora", {"inner_steps": 5})``."""
    return get_method(method).make_trainer(options)


def adapter_kinds() -> Mapping[str, type[Adapter]]:
    """Saved adapter kind -> its class, for ``load_adapter``."""
    kinds = {NoAdapter.kind: NoAdapter}
    for spec in METHODS.values():
        kinds.setdefault(spec.adapter.kind, spec.adapter)
    return MappingProxyType(kinds)
