"""Group runs into settings: one setting is every run with the same configuration except the seed.

A leaderboard row is a setting, so seeds are averaged and nothing else is. The key follows
``RunConfig.identity``: the base model ignores every training field. ``benchmarks`` is left out too,
since it decides which numbers exist, not what they are.

Ablations are told apart by a label. An "ablation key" is a config field that takes more than one
value among settings of the same model, scenario, method, data budget and profile (for example
``method_options.inner_steps`` when k = 1, 3 and 5 were run at 50 examples per task). A setting's
label lists its ablation keys whose value differs from the most common one among that method's
settings, so the default configuration gets an empty label at every budget.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from metalora.runs.profiles import PROFILES
from reports.load import Run

BASE = "base"
# What RunConfig.identity drops for the base model: it is never trained.
BASE_IGNORED = ("train", "method_options", "shots", "full_cap", "tasks", "held_out_languages", "scenario")
IGNORED = ("train.seed", "benchmarks")
SHOWN = ("model", "scenario", "method", "shots", "profile")  # own leaderboard columns, never in labels


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys to canonical JSON values, so any two configs compare field by field."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value, sort_keys=True)
    return flat


def identity(config: dict) -> dict[str, str]:
    drop = BASE_IGNORED if config.get("method") == BASE else ()
    flat = flatten({key: value for key, value in config.items() if key not in drop})
    return {key: value for key, value in flat.items() if key not in IGNORED}


def shots_order(shots) -> tuple:
    """None (the base model) first, then numbers ascending, then "full"."""
    if shots is None:
        return (0, 0)
    if isinstance(shots, (int, float)):
        return (1, shots)
    return (2, 0)


def method_order(method: str) -> tuple:
    """The base model first, then the methods by name. The report reads no method table: that
    would import torch, and a new method needs no change here."""
    return (0, "") if method == BASE else (1, method)


@dataclass(frozen=True)
class Setting:
    key: str  # short hash of the identity, stable across builds (file names, anchors)
    identity: dict[str, str]
    runs: tuple[Run, ...]
    label: str  # what distinguishes an ablation; "" for the default configuration

    @property
    def config(self) -> dict:
        return self.runs[0].config

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def model(self) -> str:
        return self.runs[0].model

    @property
    def scenario(self) -> str | None:
        return None if self.method == BASE else self.config.get("scenario")

    @property
    def shots(self) -> int | str | None:
        return None if self.method == BASE else self.config.get("shots")

    @property
    def profile(self) -> str:
        return self.runs[0].profile

    @property
    def comparable(self) -> bool:
        """Whether the profile's numbers may be set beside the paper's (smoke and quick may not)."""
        profile = PROFILES.get(self.profile)
        return bool(profile and profile.comparable)

    @property
    def seeds(self) -> tuple:
        return tuple(run.seed for run in self.runs)

    @property
    def name(self) -> str:
        """One line naming the setting, for plot legends and paired comparisons."""
        parts = [self.method]
        if self.shots is not None:
            parts.append(f"{self.shots}/task")
        if self.label:
            parts.append(f"[{self.label}]")
        return " ".join(parts)

    def sort_key(self) -> tuple:
        return (
            self.model,
            self.scenario or "",
            method_order(self.method),
            shots_order(self.shots),
            self.profile,
            self.label,
        )


def group_settings(runs: Iterable[Run]) -> list[Setting]:
    groups: dict[str, list[Run]] = defaultdict(list)
    identities: dict[str, dict[str, str]] = {}
    for run in runs:
        ident = identity(run.config)
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        groups[key].append(run)
        identities[key] = ident
    labels = _labels(identities)
    settings = [
        Setting(
            key,
            identities[key],
            tuple(sorted(members, key=lambda r: (r.seed is None, r.seed or 0))),
            labels[key],
        )
        for key, members in groups.items()
    ]
    return sorted(settings, key=Setting.sort_key)


def _bucket(ident: dict[str, str], keys: Sequence[str]) -> tuple:
    return tuple(ident.get(key) for key in keys)


def ablation_keys(identities: dict[str, dict[str, str]]) -> set[str]:
    all_keys = {key for ident in identities.values() for key in ident} - set(SHOWN)
    values: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for ident in identities.values():
        for key in all_keys:  # a missing key counts as a value of its own ("unset")
            values[_bucket(ident, SHOWN)][key].add(ident.get(key))
    return {key for bucket in values.values() for key, seen in bucket.items() if len(seen) > 1}


def modal_values(identities: Sequence[dict[str, str]], keys: Iterable[str]) -> dict[str, str | None]:
    """The most common value of each key (ties broken by the value's text, so builds are stable)."""
    modes = {}
    for key in keys:
        counts = Counter(ident.get(key) for ident in identities)
        modes[key] = min(counts, key=lambda value: (-counts[value], str(value)))
    return modes


def _labels(identities: dict[str, dict[str, str]]) -> dict[str, str]:
    keys = sorted(ablation_keys(identities))
    families: dict[tuple, list[str]] = defaultdict(list)
    for setting_key, ident in identities.items():
        families[_bucket(ident, ("model", "scenario", "method"))].append(setting_key)
    labels = {}
    for members in families.values():
        modes = modal_values([identities[m] for m in members], keys)
        for member in members:
            ident = identities[member]
            labels[member] = ", ".join(
                f"{_short(key)}={_plain(ident.get(key))}" for key in keys if ident.get(key) != modes[key]
            )
    return labels


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _plain(value: str | None) -> str:
    if value is None:
        return "unset"
    decoded = json.loads(value)
    return decoded if isinstance(decoded, str) else value
