"""One run's complete configuration, built from flat options (CLI flags or a sweep's YAML).

Flat option names are the single vocabulary of the CLI and of sweep files, read from dataclass
fields: the run's own fields (``RunConfig``: ``method``, ``shots``, ``benchmarks``...), the shared
training fields (``TrainConfig``: ``rank``, ``lr``, ``seed``...) and every method's options (its
spec's options dataclass: ``inner_steps``, ``num_heads``...). A method option given to a run of
another method is left out of that run, so one grid can mix methods. Profiles supply defaults that
explicit options override. ``build_run_config`` validates every value; ``prepare_run`` (runner)
adds the checks that need the data. Both happen before any model is loaded.

The run id hashes everything that defines the trained adapter: the resolved config without its
evaluation fields (``EVALUATION_FIELDS``), the model's weights and the sha256 of every training data
file. Evaluating a finished run on more benchmarks or items therefore keeps its id and never
retrains (``metalora.runs.evaluation``). Device and evaluation batch size are recorded, not hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace

from metalora.data.budgets import DEFAULT_FULL_CAP, parse_shots
from metalora.data.scenarios import SCENARIOS, scenario_tasks
from metalora.errors import MlbenchError
from metalora.methods import METHODS, get_method, method_name
from metalora.models import DEFAULT_MODEL, DTYPES, MODEL_ALIASES
from metalora.options import (
    NoOptions,
    option,
    option_names,
    options_from_dict,
    require_choice,
    require_positive,
)
from metalora.runs.profiles import PROFILES
from metalora.training.budget import KNOB_RULES, resolve_budget_options
from metalora.training.config import TrainConfig
from metalora.training.trainer import check_budgets

DEFAULT_BENCHMARKS = ("heldout", "bbh", "bbh_mc", "mmlu")  # the training tasks' own held-out items first
# What a run evaluates, not what it trains: left out of the run id, so changing them adds
# evaluations to the same run instead of training a new one.
EVALUATION_FIELDS = ("benchmarks", "eval_limit", "max_gen_tokens")
# A kill loses at most this much training (metalora/training/checkpoint.py says why time, not steps).
DEFAULT_CHECKPOINT_EVERY = "60s"


# TrainConfig fields that change how training computes, not which run it is: recorded in config.json, not in
# the run id (checkpointing and graphs train the same adapter; deterministic_training orders a few sums).
TRAIN_EXECUTION_FIELDS = ("gradient_checkpointing", "train_cuda_graphs", "deterministic_training")


@dataclass(frozen=True)
class RunConfig:
    """What a run computes. Fields with help text are flat options; ``train`` holds the shared
    training options, ``method_options`` the method options as given (hashed into the run id),
    ``options`` the method's validated options dataclass built from them."""

    method: str = option("metalora", "Method: " + " | ".join(METHODS) + ".")
    model: str = option(DEFAULT_MODEL, "Alias, hub id, local HF folder or .gguf file.")
    scenario: str = option("multitask", "Scenario: " + " | ".join(SCENARIOS) + ".")
    tasks: tuple[str, ...] = option((), "Comma-separated training tasks (default: the scenario's).")
    held_out_languages: tuple[str, ...] = option((), "multilingual: XCOPA languages never trained on.")
    shots: int | str | None = option(50, "Examples per task: 10..100, or 'full'.")
    full_cap: int = option(DEFAULT_FULL_CAP, "Cap per task for --shots full.")
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: Mapping[str, object] = field(default_factory=dict)
    benchmarks: tuple[str, ...] = option(
        DEFAULT_BENCHMARKS, "Comma-separated: heldout,bbh,bbh_cot,bbh_mc,mmlu,mmlu_5shot,xcopa,xwinograd,mgsm."
    )
    eval_limit: int | None = option(None, "Evaluate only the first N items of each task.")
    max_gen_tokens: int | None = option(None, "Cap on generated tokens (generative benchmarks).")
    dtype: str = option("auto", "auto | " + " | ".join(d for d in DTYPES if d != "auto") + " (auto: fp32 on CPU, bf16 on GPU).")
    profile: str = option("full", "Profile: " + " | ".join(PROFILES) + " (run: quick on CPU, full on GPU).")
    options: object = field(default_factory=NoOptions, compare=False, repr=False)

    @property
    def trains(self) -> bool:
        return get_method(self.method).trains

    def to_dict(self) -> dict:
        """Plain data for config.json and the run id (``options`` is derived from ``method_options``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "options"}

    def identity(self) -> dict:
        """What defines the trained adapter (the run id): no evaluation field; the base model
        ignores every training field too."""
        data = self.to_dict()
        for key in EVALUATION_FIELDS:
            data.pop(key)
        for key in TRAIN_EXECUTION_FIELDS:  # how to compute, not what: the same run either way
            data["train"].pop(key)
        if not self.trains:
            for key in ("train", "method_options", "shots", "full_cap", "tasks", "held_out_languages", "scenario"):
                data.pop(key)
        return data


# A run of a small model on a GPU is overhead-bound: per batch, the host's work costs more than the
# model's, so rows per batch set the items/s (bench/eval_batch.py measures it; README gives the
# figures). A CPU is compute-bound, where a bigger batch only pads more.
CPU_EVAL_BATCH_SIZE = 8
GPU_EVAL_BATCH_SIZE = 64
# Greedy generation on a GPU: a decoding step of a small model is Python-bound, so its time hardly
# depends on how many rows it decodes; more rows, fewer steps (bench/eval_profile.py, README). What
# bounds it is the key/value cache. On a CPU each row costs arithmetic: the batch size is kept.
GPU_DECODE_ROWS = 256
CUDA_GRAPH_CHOICES = ("auto", "off")
MERGE_LORA_CHOICES = ("on", "off")


@dataclass(frozen=True)
class ExecutionOptions:
    """How to execute, not what: none of these change a number, so none is in the run id."""

    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda if available).")
    eval_batch_size: int | str | None = option(
        None, f"Evaluation batch size, or 'auto' (default: {CPU_EVAL_BATCH_SIZE} on a CPU, {GPU_EVAL_BATCH_SIZE} on a GPU)."
    )
    eval_decode_rows: int | None = option(
        None, f"Prompts generating together, prefilled --eval-batch-size at a time (default: the batch size on a CPU, "
              f"{GPU_DECODE_ROWS} on a GPU)."
    )
    checkpoint_every: int | str = option(
        DEFAULT_CHECKPOINT_EVERY, "Save a resumable training checkpoint every N steps (500), or every N seconds (60s)."
    )
    data_root: str | None = option(None, "Benchmark data folder (default: $MLBENCH_DATA_DIR, else the hub).")
    # Equal answers up to float rounding (eval_tasks/fastlm.py); recorded in eval/results.json.
    eval_backend: str = option("fast", "fast (mlbench's FastLM, tasks built once per worker) | hflm (lm-eval's HFLM).")
    # Which forwards compute those answers; in float32 the same answers, in bfloat16 stock's own only with
    # "stock" (eval_tasks/harness.py). Recorded in eval/results.json and env.json.
    eval_shapes: str = option(
        "stock", "stock (every forward gets lm-eval HFLM's shapes: its answers, in bfloat16 too) | stock-scored "
                 "(stock, the output layer only at scored positions: less memory) | fast (shared prefixes, float32 "
                 "scoring, --eval-decode-rows refilling: faster, differs at bfloat16 near-ties)."
    )
    # Replays of the same kernels, so the same numbers (eval_tasks/step_graphs.py): on the H200 every
    # generation measured was stock HFLM's, and a full run's every score the same as with "off" (README).
    # Recorded in eval/results.json as settings.decode_steps.
    eval_cuda_graphs: str = option(
        "auto", "auto (stock shapes on CUDA with SDPA attention: each generation chunk's decoding steps replayed as "
                "one CUDA graph, no host work per layer; the same generations) | off."
    )
    # A merged LoRA (W + s B A rounded to the base dtype once) is the fast path, but lm-eval's own
    # peft= path evaluates it unmerged, through peft's forward; in bfloat16 the two round differently,
    # so near-ties can flip (bench/eval_stacking.py, README). "off" gives lm-eval's peft= computation.
    # Recorded in eval/results.json (settings.merged_lora) and env.json.
    eval_merge_lora: str = option(
        "on", "on (a LoRA-kind adapter merged into the base weights for evaluation: faster) | off (unmerged, "
              "through peft's forward, as lm-eval's peft= path evaluates it; in bfloat16 other rounding)."
    )
    log_to: str | None = option(None, "Experiment logging: tensorboard | wandb (the package must be installed).")

    def validate(self) -> ExecutionOptions:
        from eval_tasks.harness import EVAL_BACKENDS, EVAL_SHAPES
        from metalora.runs.tracking import check_tracker

        if self.log_to is not None:
            check_tracker(self.log_to)

        require_choice("--eval-backend", self.eval_backend, EVAL_BACKENDS)
        require_choice("--eval-shapes", self.eval_shapes, EVAL_SHAPES)
        require_choice("--eval-cuda-graphs", self.eval_cuda_graphs, CUDA_GRAPH_CHOICES)
        require_choice("--eval-merge-lora", self.eval_merge_lora, MERGE_LORA_CHOICES)
        self.checkpoint_schedule()  # one line if malformed
        rows = self.eval_decode_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise MlbenchError(f"--eval-decode-rows must be a positive integer, got {rows!r}")
        batch = self.eval_batch_size
        if batch is None:
            return self
        if isinstance(batch, str) and batch != "auto":
            try:
                batch = int(batch)
            except ValueError:
                raise MlbenchError(f"--eval-batch-size must be a positive integer or 'auto', got {batch!r}") from None
        if batch != "auto" and (not isinstance(batch, int) or batch < 1):
            raise MlbenchError(f"--eval-batch-size must be a positive integer or 'auto', got {batch!r}")
        return replace(self, eval_batch_size=batch)

    def checkpoint_schedule(self) -> tuple[int | None, float | None]:
        """``--checkpoint-every`` as (steps, seconds), one of them None: ``500`` or ``60s``."""
        value = self.checkpoint_every
        text = str(value).strip().lower()
        seconds = text.endswith("s")
        try:
            number = float(text[:-1]) if seconds else int(text)
        except ValueError:
            number = 0
        if isinstance(value, bool) or number <= 0:
            raise MlbenchError(
                f"--checkpoint-every must be a positive number of steps (e.g. 500) or of seconds (e.g. 60s), got {value!r}"
            )
        return (None, number) if seconds else (int(number), None)

    def eval_batch_for(self, device: str) -> int | str:
        """The evaluation batch size on ``device``: the one given, else the device's default."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return CPU_EVAL_BATCH_SIZE if str(device).startswith("cpu") else GPU_EVAL_BATCH_SIZE

    def decode_rows_for(self, device: str) -> int | None:
        """Rows generating together on ``device``: the ones given, else the device's default
        (None on a CPU: the evaluation batch size); stock shapes generate in HFLM's batches of the
        batch size, so none."""
        from eval_tasks.harness import shapes_are_stock

        if shapes_are_stock(self.eval_shapes):
            return None
        if self.eval_decode_rows is not None:
            return self.eval_decode_rows
        return None if str(device).startswith("cpu") else GPU_DECODE_ROWS


def _plain(value):
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def run_id_for(config: RunConfig, data_hashes: Mapping[str, str], model_identity: str) -> str:
    """``data_hashes``: the training data files only. The model enters by its weights' hash
    (``metalora.models.model_identity``), never its name: an alias and the same .gguf share runs,
    and new weights under an old name never reuse old results."""
    identity = config.identity() | {"model": model_identity}
    payload = json.dumps({"config": identity, "data": dict(sorted(data_hashes.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


RUN_KEYS = tuple(f.name for f in fields(RunConfig) if "help" in f.metadata)
TRAIN_KEYS = option_names(TrainConfig)
EXECUTION_KEYS = option_names(ExecutionOptions)


def method_option_keys() -> dict[str, tuple[str, ...]]:
    """Each method's own option names, read from its options dataclass."""
    return {name: option_names(spec.options) for name, spec in METHODS.items()}


def allowed_keys() -> tuple[str, ...]:
    """Every key a sweep may set (and every ``mlbench run`` flag but the execution ones)."""
    method_keys = {key for keys in method_option_keys().values() for key in keys}
    return tuple(sorted(set(RUN_KEYS) | set(TRAIN_KEYS) | method_keys))


def check_model_name(name: str) -> None:
    """Cheap early check; full resolution (and any GGUF conversion) happens at load time."""
    if not isinstance(name, str) or not name.strip():
        raise MlbenchError(
            f"model name is empty; pass a hub id, a local folder, a .gguf file or {', '.join(MODEL_ALIASES)}"
        )


# Run-level options that change a number without being a column of their own (method, model,
# scenario, shots, profile are columns; benchmarks decide which numbers exist).
_RUN_LEVEL_DEFAULTS = ("full_cap", "eval_limit", "max_gen_tokens")


def differs_from_defaults(config: RunConfig) -> dict[str, object]:
    """Every option whose value differs from the protocol's default under the run's profile
    (shared training options but the seed and how it is computed, the method's own options,
    full_cap, eval_limit, max_gen_tokens), e.g. ``{"steps": 8, "inner_steps": 5}``: recorded in
    config.json, listed by a sweep's dry run and shown on the leaderboard row.

    The budget counts as its rule and that rule's one knob (``budget_rule=matched_updates,
    steps=8``): a knob another rule would read is not a setting of the run."""
    if not config.trains:
        return {}
    spec = get_method(config.method)
    profile = {**PROFILES[config.profile].defaults, **spec.profile_defaults.get(config.profile, {})}
    budget_defaults = resolve_budget_options({}, profile)
    changed = {}
    train = _plain(config.train)
    for key in TRAIN_KEYS:
        if key == "seed" or key in TRAIN_EXECUTION_FIELDS:
            continue
        default = budget_defaults[key] if key in budget_defaults else _plain(profile.get(key, getattr(TrainConfig(), key)))
        if key in KNOB_RULES and train[key] is None:
            continue  # the knob of another rule
        if train[key] != default:
            changed[key] = train[key]
    own = _plain(config.options)
    for key in option_names(spec.options):
        default = _plain(profile.get(key, getattr(spec.options(), key)))
        if own.get(key) != default:
            changed[key] = own.get(key)
    for key in _RUN_LEVEL_DEFAULTS:
        default = profile.get(key, getattr(RunConfig(), key))
        if getattr(config, key) != default:
            changed[key] = getattr(config, key)
    return changed


def describe_changes(changed: dict[str, object]) -> str:
    """``steps=8, target_modules=[gate_proj,up_proj]``."""
    def text(value) -> str:
        return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)

    return ", ".join(f"{key}={text(value)}" for key, value in changed.items())


@dataclass(frozen=True)
class _PlannedBudget:
    """A task's budget before its data is read: only an upper bound on its size is known."""

    name: str
    examples: range


def foreign_method_options(options: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """Options given (not None) that belong to other methods than the run's: name -> those methods.
    ``mlbench run`` refuses them; a sweep grid may carry them across methods (its dry run says so)."""
    method = method_name(options.get("method") or "metalora")
    own = set(method_option_keys()[method])
    foreign = {}
    for key, value in options.items():
        owners = tuple(name for name, keys in method_option_keys().items() if key in keys)
        if value is not None and owners and key not in own:
            foreign[key] = owners
    return foreign


def build_run_config(options: Mapping[str, object]) -> RunConfig:
    """Flat options -> validated, immutable ``RunConfig`` (profile defaults first, explicit options win)."""
    options = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(options) - set(allowed_keys()))
    if unknown:
        raise MlbenchError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed_keys())}")
    profile_name = options.get("profile", "full")
    if profile_name not in PROFILES:
        raise MlbenchError(f"unknown profile {profile_name!r}; choose from {', '.join(PROFILES)}")
    if "method" in options:
        options["method"] = method_name(options["method"])
    spec = get_method(options.get("method", "metalora"))
    merged = {**PROFILES[profile_name].defaults, **spec.profile_defaults.get(profile_name, {}), **options}
    # The budget rule and its one knob; the other knobs become None (not hashed, not shown as set).
    merged.update(resolve_budget_options(options, PROFILES[profile_name].defaults))

    train = options_from_dict(TrainConfig, {k: merged[k] for k in TRAIN_KEYS if k in merged}, what="training")
    train.validate()
    method_options = {key: merged[key] for key in option_names(spec.options) if key in merged}
    method_config = spec.make_options(method_options)
    check_train = getattr(method_config, "check_train", None)
    if check_train is not None:  # what a method cannot combine with the shared training options
        check_train(train)

    run = options_from_dict(
        RunConfig, {k: merged[k] for k in RUN_KEYS if k in merged and k != "profile"}, what="run"
    )
    check_model_name(run.model)
    if "tasks" in merged and not run.tasks:
        # An empty list would otherwise fall back to the scenario's tasks without a word.
        raise MlbenchError(
            f"tasks is empty; name at least one (e.g. strategyqa,gsm8k) or leave it out for the "
            f"{run.scenario} scenario's default tasks"
        )
    require_choice("dtype", run.dtype, DTYPES)
    for key in ("eval_limit", "max_gen_tokens", "full_cap"):
        value = getattr(run, key)
        if value is not None:
            require_positive(key, value)
    from eval_tasks.registry import get_benchmark

    if not run.benchmarks:
        raise MlbenchError("benchmarks is empty; name at least one, e.g. bbh,mmlu")
    for name in run.benchmarks:
        get_benchmark(name)
    tasks = scenario_tasks(run.scenario, run.tasks, run.held_out_languages)
    shots = parse_shots(run.shots) if spec.trains else None
    if spec.trains:
        # No task can hold more than the shots (or the full cap): what cannot fit that is refused
        # now, before any data or model is read (the exact check on the drawn budgets follows).
        most = run.full_cap if shots == "full" else shots
        check_budgets(method_config, [_PlannedBudget(task, range(most)) for task in tasks])
    return replace(
        run,
        tasks=tasks,
        shots=shots,
        train=train,
        method_options=method_options,
        options=method_config,
        profile=profile_name,
    )
