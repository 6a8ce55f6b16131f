"""What a setting changed from the protocol's defaults, for the leaderboard's "Differs from defaults".

A run records them itself: config.json's ``differs_from_defaults`` (``runconfig.differs_from_defaults``,
computed where the method table is at hand), which also names the method's own options
(``inner_steps=5``). For runs recorded before it existed they are recomputed here, as follows.
The defaults are the shared training options (``TrainConfig``'s field defaults) and the run-level
evaluation and budget options (``full_cap``, ``eval_limit``, ``max_gen_tokens``), each overridden by
the run's profile (quick and smoke train one pass over every budget, shorter sequences, one item
per task). A setting lists every such option whose value differs, e.g. ``budget_rule=matched_updates,
steps=100``, whatever its siblings do. The budget knobs of rules a run does not use are None in
its config (``resolve_budget_options``) and are not listed.
Method options (k, n_s, ...) are defined next to each method's trainer, which the report does not
import (it would import torch): for those older runs they are named only where they differ among a
method's settings (the settings' ``label``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict

from metalora.data.budgets import DEFAULT_FULL_CAP
from metalora.runs.profiles import PROFILES
from metalora.training.budget import KNOB_RULES, resolve_budget_options
from metalora.training.config import TrainConfig

RUN_LEVEL = {"full_cap": DEFAULT_FULL_CAP, "eval_limit": None, "max_gen_tokens": None}


def _canonical(value) -> object:
    return json.loads(json.dumps(value))  # tuples as lists, as config.json stores them


def protocol_defaults(profile: str) -> dict[str, object]:
    """Dotted config key -> the protocol's default under ``profile``."""
    overrides = dict(PROFILES[profile].defaults) if profile in PROFILES else {}
    # the profile's budget rule and its one knob, the other knobs None, as build_run_config resolves them
    overrides |= resolve_budget_options({}, overrides)
    train = asdict(TrainConfig())
    defaults = {f"train.{key}": overrides.get(key, value) for key, value in train.items() if key != "seed"}
    defaults |= {key: overrides.get(key, value) for key, value in RUN_LEVEL.items()}
    return {key: _canonical(value) for key, value in defaults.items()}


def _plain(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(item) for item in value) + "]"
    return str(value)


def non_defaults(identity: Mapping[str, str], profile: str) -> str:
    """``key=value`` for every option of the flattened identity that differs from its default."""
    defaults = protocol_defaults(profile)
    changed = []
    for key, default in defaults.items():
        if key in identity:  # a run from before an option existed does not list it
            value = json.loads(identity[key])
            if value is None and key.rsplit(".", 1)[-1] in KNOB_RULES:
                continue  # the knob of a budget rule this run does not use
            if value != default:
                changed.append(f"{key.rsplit('.', 1)[-1]}={_plain(value)}")
    return ", ".join(changed)


def _order(key: str) -> tuple:
    """Shared training options in TrainConfig's order, then the method's own by name, then the
    run-level ones: the order ``non_defaults`` lists them in (config.json stores keys sorted)."""
    train = list(asdict(TrainConfig()))
    if key in train:
        return (0, train.index(key), key)
    if key in RUN_LEVEL:
        return (2, list(RUN_LEVEL).index(key), key)
    return (1, 0, key)


def recorded_changes(recorded: Mapping[str, object]) -> str:
    """config.json's ``differs_from_defaults`` as ``key=value, ...``, written as ``non_defaults`` writes."""
    return ", ".join(f"{key}={_plain(_canonical(recorded[key]))}" for key in sorted(recorded, key=_order))


def setting_changes(recorded: Mapping[str, object] | None, identity: Mapping[str, str], profile: str) -> str:
    """What the run recorded it changed, else (a run from before the record) what ``non_defaults`` finds."""
    return recorded_changes(recorded) if recorded is not None else non_defaults(identity, profile)
