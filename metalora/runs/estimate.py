"""How long runs will take, estimated from the finished runs of a store.

A run's wall time is its training plus the rest (model load, evaluation, saving). Training grows
with the example passes its budget plan does (a sweep's runs of one method do 1,600 to 20,000 of
them); the rest is the same for every run that evaluates the same way. So, from each finished run
(``DONE``, ``config.json``, ``cost.json``):

- seconds per example pass: ``time.training_s / training.example_passes``, the median per method
  key (the method with the options that change the cost of a pass, e.g. MeTA-LoRA's ``variant`` and
  ``inner_loop``), profile and model;
- the rest: ``time.total_s - time.training_s``, the median per method key, profile, model,
  benchmarks and ``eval_limit``; for a method key without finished runs of its own, the median over
  every method (the base model trains nothing: its total is all rest). Per method because
  evaluation costs differ: HydraLoRA's heads stay unmerged, so it evaluates slower than LoRA (on an
  H200 with four workers sharing it, 736 s against 622 s of a full-protocol run's rest).

A run to do is estimated as rest + its passes x seconds per pass (the base model: the rest only).
One with no recorded rate is "none recorded". A resumed run timed only the steps it trained in its
last process: its rate counts the passes of those steps (``throughput.train_examples_per_s`` x
``training_s``); a run that reused its saved adapter trained nothing and gives only its rest.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from metalora.method_defaults import METHOD_OPTION_DEFAULTS
from metalora.runs.store import CONFIG_FILE, COST_FILE, DONE_FILE, read_json_or_none

# The method options that change what one example pass costs (not how many passes a run does:
# the budget plan counts those).
COST_OPTIONS: Mapping[str, tuple[str, ...]] = {"metalora": ("variant", "inner_loop"), "hydralora": ("num_heads",)}


def method_key(method: str, options: Mapping[str, object] | None = None) -> str:
    """``lora``, ``metalora(inner_loop=stacked)``, ``metalora(variant=phase2_only, inner_loop=stacked)``:
    the method and the options of ``COST_OPTIONS`` that differ from its defaults (an option given
    at its default value is the same key as one left out)."""
    options = options or {}
    defaults = METHOD_OPTION_DEFAULTS.get(method, {})
    named = [f"{name}={options[name]}" for name in COST_OPTIONS.get(method, ())
             if name in options and options[name] != defaults.get(name)]
    return f"{method}({', '.join(named)})" if named else str(method)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class FinishedRun:
    """What one finished run recorded that the estimate uses."""

    folder: Path
    method: str
    key: str  # method_key
    profile: str
    model: str
    evaluation: tuple  # (benchmarks, eval_limit): runs that evaluate alike
    total_s: float
    training_s: float | None  # None: it reused its saved adapter (trained nothing in this process)
    passes: float | None  # example passes the training_s timed

    @property
    def eval_limit(self) -> int | None:
        return self.evaluation[1]

    @property
    def rest_s(self) -> float | None:
        rest = self.total_s - (self.training_s or 0.0)
        return rest if rest >= 0 else None

    @property
    def seconds_per_pass(self) -> float | None:
        if self.training_s and self.training_s > 0 and self.passes and self.passes > 0:
            return self.training_s / self.passes
        return None


def read_finished(folder: Path, require_done: bool = True) -> FinishedRun | None:
    """The run in ``folder`` if it finished and recorded its times; None for anything unreadable.
    ``require_done=False`` is for copies of run folders without their ``DONE`` marker: the runner
    writes cost.json's ``time.total_s`` after the last evaluation, just before ``DONE``."""
    folder = Path(folder)
    if require_done and not (folder / DONE_FILE).is_file():
        return None
    document, cost = read_json_or_none(folder / CONFIG_FILE), read_json_or_none(folder / COST_FILE)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or not isinstance(cost, dict):
        return None
    times = cost.get("time") if isinstance(cost.get("time"), dict) else {}
    total, training = _number(times.get("total_s")), _number(times.get("training_s"))
    if total is None or total <= 0 or (training is not None and not 0 <= training <= total):
        return None
    record = cost.get("training") if isinstance(cost.get("training"), dict) else {}
    passes = _number(record.get("example_passes"))
    throughput = cost.get("throughput") if isinstance(cost.get("throughput"), dict) else {}
    rate = _number(throughput.get("train_examples_per_s"))
    if passes and training and rate and rate * training < 0.99 * passes:
        passes = rate * training  # resumed: training_s timed only the steps after the checkpoint
    options = config.get("method_options") if isinstance(config.get("method_options"), dict) else {}
    benchmarks = config.get("benchmarks")
    evaluation = (tuple(benchmarks) if isinstance(benchmarks, list) else benchmarks, config.get("eval_limit"))
    method = str(config.get("method"))
    return FinishedRun(folder, method, method_key(method, options), str(config.get("profile")),
                       str(config.get("model")), evaluation, total, training, passes)


def finished_runs(store_root: Path, depth: int = 1, require_done: bool = True) -> list[FinishedRun]:
    """The finished runs under ``store_root``: its run folders (depth 1), and with ``depth=2`` those
    one level deeper too (bench stores copy run folders under ``<setting>/<run id>/``)."""
    root = Path(store_root)
    if not root.is_dir():
        return []
    marker = DONE_FILE if require_done else COST_FILE
    found = sorted(path for level in range(1, depth + 1) for path in root.glob("/".join(["*"] * level + [marker])))
    return [run for path in found if (run := read_finished(path.parent, require_done)) is not None]


@dataclass(frozen=True)
class Rate:
    seconds: float  # the median
    runs: int  # the finished runs it is the median of


def _medians(values: Mapping[tuple, list[float]]) -> dict[tuple, Rate]:
    return {key: Rate(statistics.median(found), len(found)) for key, found in values.items()}


@dataclass(frozen=True)
class Rates:
    """The cost model's two parts, as measured."""

    per_pass: Mapping[tuple[str, str, str], Rate]  # (method key, profile, model) -> seconds per example pass
    # (method key, profile, model, evaluation) -> seconds besides training; method key None: every method's
    rest: Mapping[tuple[str | None, str, str, tuple], Rate]

    def rest_of(self, key: str, profile: str, model: str, evaluation: tuple) -> tuple[tuple, Rate] | None:
        """The rest a run of this method key is estimated with: its own method's median, else every
        method's; with the key it was found under."""
        for found in ((key, profile, model, evaluation), (None, profile, model, evaluation)):
            if found in self.rest:
                return found, self.rest[found]
        return None


def measured_rates(runs: Iterable[FinishedRun]) -> Rates:
    per_pass: dict[tuple, list[float]] = {}
    rest: dict[tuple, list[float]] = {}
    for run in runs:
        if run.seconds_per_pass is not None:
            per_pass.setdefault((run.key, run.profile, run.model), []).append(run.seconds_per_pass)
        if run.rest_s is not None:
            for key in (run.key, None):
                rest.setdefault((key, run.profile, run.model, run.evaluation), []).append(run.rest_s)
    return Rates(_medians(per_pass), _medians(rest))


@dataclass(frozen=True)
class Planned:
    """A run to estimate: what selects its rates, and the example passes of its budget plan."""

    key: str
    profile: str
    model: str
    evaluation: tuple  # (benchmarks, eval_limit)
    shots: object
    passes: int  # 0 for the base model
    trains: bool

    @property
    def label(self) -> str:
        return f"{self.key}/{self.profile}"

    @classmethod
    def of(cls, config, passes: int | None) -> Planned:
        """From a ``RunConfig`` and the passes of its budget plan (None for the base model)."""
        return cls(method_key(config.method, config.method_options), config.profile, config.model,
                   (tuple(config.benchmarks), config.eval_limit), config.shots if config.trains else None,
                   int(passes or 0), bool(config.trains))


def planned_runs(prepared) -> list[Planned]:
    """``Planned`` for each ``PreparedRun`` of a sweep's plan."""
    return [Planned.of(p.config, p.budget.passes if p.budget else None) for p in prepared]


def planned_by_id(prepared) -> dict[str, Planned]:
    """``Planned`` of each ``PreparedRun`` of a sweep's plan, by run id (the progress line's ETA)."""
    prepared = list(prepared)
    return dict(zip((p.run_id for p in prepared), planned_runs(prepared), strict=True))


@dataclass(frozen=True)
class RunEstimate:
    run: Planned
    seconds: float | None  # None: none recorded
    lacks: str | None = None  # what is not recorded: "seconds per pass" or "rest"


@dataclass(frozen=True)
class Estimate:
    runs: tuple[RunEstimate, ...]
    total_s: float  # of the runs estimated
    estimated: int
    missing: dict[str, int]  # "method key/profile" -> runs without a record
    per_pass: dict[tuple[str, str, str], Rate] = field(default_factory=dict)  # the rates used
    rest: dict[tuple[str | None, str, str, tuple], Rate] = field(default_factory=dict)

    def wall_s(self, workers: int) -> float:
        """The wall time if ``workers`` workers share the runs evenly, each as fast as the measured ones."""
        return self.total_s / max(1, workers)


def estimate(runs: Iterable[Planned], rates: Rates) -> Estimate:
    found: list[RunEstimate] = []
    missing: dict[str, int] = {}
    per_pass, rest = {}, {}
    for run in runs:
        rest_found = rates.rest_of(run.key, run.profile, run.model, run.evaluation)
        pass_key = (run.key, run.profile, run.model)
        lacks = None
        if run.trains and pass_key not in rates.per_pass:
            lacks = "seconds per pass"
        elif rest_found is None:
            lacks = "rest"
        if lacks:
            found.append(RunEstimate(run, None, lacks))
            missing[run.label] = missing.get(run.label, 0) + 1
            continue
        rest_key, rest[rest_key] = rest_found
        seconds = rest[rest_key].seconds
        if run.trains:
            per_pass[pass_key] = rates.per_pass[pass_key]
            seconds += run.passes * per_pass[pass_key].seconds
        found.append(RunEstimate(run, seconds))
    known = [run.seconds for run in found if run.seconds is not None]
    return Estimate(tuple(found), sum(known), len(known), missing, per_pass, rest)


def estimate_store(runs: Iterable[Planned], store_root: Path) -> Estimate:
    """``runs`` estimated from the finished runs of the store at ``store_root``."""
    return estimate(runs, measured_rates(finished_runs(store_root)))
