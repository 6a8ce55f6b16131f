"""One run's complete configuration, built from flat options (CLI flags or a sweep's YAML).

Flat option names are the single vocabulary of the CLI and of sweep files: run-level fields
(``method``, ``shots``, ``benchmarks``...), the shared training fields of ``TrainConfig``
(``rank``, ``lr``, ``seed``...) and each method's own options (``inner_steps``, ``num_heads``...).
A method option given to a run of another method is left out of that run, so one grid can mix
methods. Profiles supply defaults that explicit options override.

The run id hashes everything that can change a number: the resolved config and the sha256 of every
data file the run reads. Device and evaluation batch size are recorded, not hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType

from metalora.adapters import import_reference
from metalora.config import TrainConfig
from metalora.data.budgets import DEFAULT_FULL_CAP, parse_shots
from metalora.data.scenarios import scenario_tasks
from metalora.errors import MlbenchError
from metalora.models import DEFAULT_MODEL, DTYPES
from metalora.trainer import METHODS

DEFAULT_BENCHMARKS = ("bbh", "mmlu")


@dataclass(frozen=True)
class Profile:
    description: str
    defaults: Mapping[str, object]
    comparable: bool  # whether its numbers may be compared with the paper's protocol


# "quick" and "smoke" exist because training SmolLM2-135M on 2 CPU cores runs at a few hundred
# tokens per second: the full protocol would take days there. Their numbers are marked as such.
PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "full": Profile("the full protocol: method defaults, complete benchmarks", {}, True),
        "quick": Profile(
            "CPU quick run (under 10 minutes): a few steps, short sequences, a small evaluation subset",
            {"steps": 3, "max_seq_len": 128, "batch_size": 4, "support_size": 2, "query_size": 2,
             "inner_steps": 1, "eval_limit": 1, "max_gen_tokens": 32},
            False,
        ),
        "smoke": Profile(
            "CPU smoke run for sweeps: two steps, short sequences, one item per evaluated task",
            {"steps": 2, "max_seq_len": 128, "batch_size": 4, "support_size": 2, "query_size": 2,
             "inner_steps": 1, "eval_limit": 1, "max_gen_tokens": 32, "full_cap": 40},
            False,
        ),
    }
)


@dataclass(frozen=True)
class RunConfig:
    method: str = "metalora"
    model: str = DEFAULT_MODEL
    scenario: str = "multitask"
    tasks: tuple[str, ...] = ()
    held_out_languages: tuple[str, ...] = ()
    shots: int | str | None = 50
    full_cap: int = DEFAULT_FULL_CAP
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: dict = field(default_factory=dict)
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    eval_limit: int | None = None
    max_gen_tokens: int | None = None
    dtype: str = "auto"
    profile: str = "full"

    @property
    def trains(self) -> bool:
        return self.method != "base"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["train"] = self.train.to_dict()
        for key in ("tasks", "held_out_languages", "benchmarks"):
            data[key] = list(data[key])
        return data

    def identity(self) -> dict:
        """What defines the run's numbers; the base model ignores every training field."""
        data = self.to_dict()
        if not self.trains:
            for key in ("train", "method_options", "shots", "full_cap", "tasks", "held_out_languages", "scenario"):
                data.pop(key)
        return data


def run_id_for(config: RunConfig, data_hashes: Mapping[str, str]) -> str:
    payload = json.dumps({"config": config.identity(), "data": dict(sorted(data_hashes.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


RUN_KEYS = ("method", "model", "scenario", "tasks", "held_out_languages", "shots", "full_cap",
            "benchmarks", "eval_limit", "max_gen_tokens", "dtype", "profile")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))


def method_option_keys() -> dict[str, tuple[str, ...]]:
    """Each method's own option names, read from its options dataclass."""
    return {
        method: tuple(f.name for f in fields(import_reference(reference).options_class))
        for method, reference in METHODS.items()
    }


def allowed_keys() -> tuple[str, ...]:
    method_keys = {key for keys in method_option_keys().values() for key in keys}
    return tuple(sorted(set(RUN_KEYS) | set(TRAIN_KEYS) | method_keys))


def _as_tuple(key: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise MlbenchError(f"{key} must be a list of names or a comma-separated string, got {value!r}")


def build_run_config(options: Mapping[str, object]) -> RunConfig:
    """Flat options -> validated ``RunConfig`` (profile defaults first, explicit options win)."""
    options = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(options) - set(allowed_keys()))
    if unknown:
        raise MlbenchError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed_keys())}")
    profile_name = options.get("profile", "full")
    if profile_name not in PROFILES:
        raise MlbenchError(f"unknown profile {profile_name!r}; choose from {', '.join(PROFILES)}")
    merged = {**PROFILES[profile_name].defaults, **options}
    if "epochs" in options and "steps" not in options:
        merged["steps"] = None  # epochs given explicitly replaces the step count
    method = merged.get("method", "metalora")
    if method not in METHODS:
        raise MlbenchError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")

    train = {key: merged[key] for key in TRAIN_KEYS if key in merged}
    if "target_modules" in train:
        train["target_modules"] = _as_tuple("target_modules", train["target_modules"])
    train_config = TrainConfig(**train).validate()
    own = method_option_keys()[method]
    method_options = {key: merged[key] for key in own if key in merged}

    shots = merged.get("shots", 50)
    dtype = merged.get("dtype", "auto")
    if dtype not in DTYPES:
        raise MlbenchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    for key in ("eval_limit", "max_gen_tokens", "full_cap"):
        value = merged.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise MlbenchError(f"{key} must be a positive integer, got {value!r}")
    from eval_tasks.registry import get_benchmark

    scenario = merged.get("scenario", "multitask")
    held_out = _as_tuple("held_out_languages", merged.get("held_out_languages"))
    tasks = scenario_tasks(scenario, _as_tuple("tasks", merged.get("tasks")), held_out)
    benchmarks = _as_tuple("benchmarks", merged.get("benchmarks", DEFAULT_BENCHMARKS))
    if not benchmarks:
        raise MlbenchError("benchmarks is empty; name at least one, e.g. bbh,mmlu")
    for name in benchmarks:
        get_benchmark(name)
    return RunConfig(
        method=method,
        model=str(merged.get("model", DEFAULT_MODEL)),
        scenario=scenario,
        tasks=tasks,
        held_out_languages=held_out,
        shots=parse_shots(shots) if method != "base" else None,
        full_cap=merged.get("full_cap", DEFAULT_FULL_CAP),
        train=train_config,
        method_options=method_options,
        benchmarks=benchmarks,
        eval_limit=merged.get("eval_limit"),
        max_gen_tokens=merged.get("max_gen_tokens"),
        dtype=dtype,
        profile=profile_name,
    )
