"""Ablations found in the store: settings that differ from the method's default in one axis only.

An axis is a config field (k = inner_steps, n_s = support_size, the MeTA-LoRA variant). A point of
an ablation is a setting whose other ablation keys (see reports.settings) hold the method's most
common value; fields that an axis changes with it by definition (``coupled``: phase II only means
k = 0; n_q usually follows n_s) may differ too. Points share model, scenario, budget and profile.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from reports.settings import Setting, ablation_keys, reference_values


@dataclass(frozen=True)
class AblationSpec:
    key: str
    title: str
    method: str
    field: str
    numeric: bool
    values: tuple[str, ...] = ()  # for a categorical axis: the values it compares, in order
    coupled: tuple[str, ...] = ()


ABLATIONS = (
    AblationSpec("k", "Inner steps k", "metalora", "method_options.inner_steps", True),
    AblationSpec(
        "n_s",
        "Support set size n_s",
        "metalora",
        "method_options.support_size",
        True,
        coupled=("method_options.query_size",),
    ),
    AblationSpec(
        "phases",
        "Phases (both, phase I only, phase II only)",
        "metalora",
        "method_options.variant",
        False,
        values=("first_order", "phase1_only", "phase2_only"),
        coupled=("method_options.inner_steps",),
    ),
    AblationSpec(
        "order",
        "First order, second order, Reptile",
        "metalora",
        "method_options.variant",
        False,
        values=("first_order", "second_order", "reptile"),
    ),
)


@dataclass(frozen=True)
class Ablation:
    spec: AblationSpec
    model: str
    scenario: str | None
    shots: int | str | None
    profile: str
    points: tuple[tuple[object, Setting], ...]  # (axis value, setting), in axis order

    @property
    def slug(self) -> str:
        # A hash, not the model name: names may hold any character, file names may not.
        group = json.dumps([self.model, self.scenario, self.shots, self.profile])
        return f"ablation_{self.spec.key}_{hashlib.sha256(group.encode()).hexdigest()[:10]}"


def find_ablations(settings: Sequence[Setting]) -> list[Ablation]:
    keys = ablation_keys({s.key: s.identity for s in settings})
    found = []
    for spec in ABLATIONS:
        members = [s for s in settings if s.method == spec.method]
        families: dict[tuple, list[Setting]] = defaultdict(list)
        for setting in members:
            families[(setting.model, setting.scenario)].append(setting)
        for family in families.values():
            modes = reference_values(spec.method, [s.identity for s in family], keys)
            fixed = keys - {spec.field, *spec.coupled}
            groups: dict[tuple, list[Setting]] = defaultdict(list)
            for s in family:
                value = _decode(s.identity.get(spec.field))
                if all(s.identity.get(k) == modes[k] for k in fixed) and (
                    not spec.values or value in spec.values
                ):
                    groups[(s.model, s.scenario, json.dumps(s.shots), s.profile)].append(s)
            for group in groups.values():
                points = sorted(
                    ((_decode(s.identity.get(spec.field)), s) for s in group), key=_axis_order(spec)
                )
                if len({json.dumps(value) for value, _ in points}) > 1:
                    first = group[0]
                    found.append(
                        Ablation(spec, first.model, first.scenario, first.shots, first.profile, tuple(points))
                    )
    return found


def _axis_order(spec: AblationSpec):
    if spec.numeric:
        return lambda point: (
            not isinstance(point[0], (int, float)),
            point[0] if isinstance(point[0], (int, float)) else 0,
        )
    return lambda point: spec.values.index(point[0]) if point[0] in spec.values else len(spec.values)


def _decode(value: str | None):
    return None if value is None else json.loads(value)
