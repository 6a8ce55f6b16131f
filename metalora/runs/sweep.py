"""Sweep files: a grid of runs in YAML, expanded, validated whole, then run where not done.

```yaml
description: what this sweep is for
defaults: {model: smollm2-135m, scenario: multitask, benchmarks: [bbh, mmlu]}
grid:                 # the cartesian product of these lists (or a list of such grids: their union)
  method: [lora, hydralora, metalora]
  shots: [10, 25, 50, 100]
  seed: [0, 1, 2]
runs:                 # single runs added as they are (over the defaults), not crossed with the grid
  - {method: base}
  - {method: lora, shots: full}
```
Keys are the flat options of ``metalora.runs.runconfig``. Every run is built and validated, and its
id computed, before the first one starts: a typo in the last run costs nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.runconfig import ExecutionOptions, allowed_keys, build_run_config
from metalora.runs.runner import DataCache, PreparedRun, prepare_run
from metalora.yamlfile import load_yaml_file

SWEEP_KEYS = ("description", "defaults", "grid", "runs", "compare")
COMPARE_KEYS = ("a", "b", "shots", "benchmarks")


@dataclass(frozen=True)
class Sweep:
    path: Path
    description: str
    runs: list[dict]  # flat options per run, in order
    compare: dict = field(default_factory=dict)  # name -> {a, b, shots, benchmarks}

    @property
    def name(self) -> str:
        return self.path.stem

    def record(self) -> dict:
        """What the report reads from ``<store>/sweeps/<name>.json``."""
        return {"name": self.name, "description": self.description, "compare": self.compare}


# A grid whose product is larger than this is a mistake (a list pasted into the wrong key), not a
# plan: it is refused from the list lengths alone, before any run is built.
MAX_SWEEP_RUNS = 5000
_SCALARS = (str, int, float, bool)


def load_sweep(
    path: str | Path, overrides: Mapping[str, object] | None = None, fallback: Mapping[str, object] | None = None
) -> Sweep:
    """``overrides`` win over everything the file says; ``fallback`` fills what it leaves out
    (``mlbench sweep`` passes the profile picked for the machine there)."""
    path = Path(path)
    if not path.is_file():
        raise MlbenchError(f"sweep file {path} not found; pass a YAML file such as configs/table2.yaml")
    data = load_yaml_file(path, "sweep file")
    if not isinstance(data, dict):
        raise MlbenchError(f"sweep file {path} must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(map(str, set(data) - set(SWEEP_KEYS)))
    if unknown:
        raise MlbenchError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SWEEP_KEYS)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise MlbenchError(f"{path}: description must be one text, got a {_kind(description)}")
    defaults = _mapping(data.get("defaults"), f"{path}: defaults")
    raw_grids = data.get("grid")
    grids = raw_grids if isinstance(raw_grids, list) else [raw_grids]
    grids = [_mapping(grid, f"{path}: {_grid_name(i, grids)}") for i, grid in enumerate(grids)]
    extra = data.get("runs") or []
    if not isinstance(extra, list) or not all(isinstance(run, dict) for run in extra):
        raise MlbenchError(f"{path}: runs must be a list of mappings of options")
    named = [("defaults", defaults)] + [(_grid_name(i, grids), g) for i, g in enumerate(grids)]
    for where, keys in named + [(f"runs[{i}]", r) for i, r in enumerate(extra)]:
        bad = sorted(map(str, set(keys) - set(allowed_keys())))
        if bad:
            raise MlbenchError(f"{path}: {where}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(allowed_keys())}")
    for where, options in [("defaults", defaults)] + [(f"runs[{i}]", r) for i, r in enumerate(extra)]:
        for key, value in options.items():
            _check_value(path, f"{where}.{key}", value)
    total = len(extra)
    for index, grid in enumerate(grids):
        size = 1 if grid else 0
        for key, values in grid.items():
            where = f"{_grid_name(index, grids)}.{key}"
            if not isinstance(values, list) or not values:
                raise MlbenchError(f"{path}: {where} must be a non-empty list of values, got {values!r}")
            for position, value in enumerate(values):
                _check_value(path, f"{where}[{position}]", value)
            size *= len(values)
        total += size
    if total > MAX_SWEEP_RUNS:
        raise MlbenchError(
            f"{path}: the grid makes {total:,} runs, more than the {MAX_SWEEP_RUNS:,} a sweep may plan; "
            "split it into several sweep files or shorten its lists"
        )
    runs = []
    for grid in grids:
        if grid:
            keys = list(grid)
            for combination in itertools.product(*(grid[key] for key in keys)):
                runs.append({**(fallback or {}), **defaults, **dict(zip(keys, combination)), **(overrides or {})})
    runs += [{**(fallback or {}), **defaults, **run, **(overrides or {})} for run in extra]
    if not runs:
        raise MlbenchError(f"{path}: no runs; give a grid or a list of runs")
    compare = _comparisons(data.get("compare"), runs, path)
    return Sweep(path, description, runs, compare)


def _check_value(path: Path, where: str, value: object) -> None:
    """One option's value: a single scalar, or a list of names (tasks, benchmarks, modules).
    Field-specific types are checked when the run is built; this catches what is no option value
    at all (a nested list, a mapping, a date, an empty value) and names where it is."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return
    if value is None:
        raise MlbenchError(f"{path}: {where} has no value; give one or leave the key out")
    raise MlbenchError(
        f"{path}: {where} must be a single value (or a list of names for tasks, benchmarks and "
        f"target_modules), got a {_kind(value)}: {_short(value)}"
    )


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "nested list" if any(isinstance(item, (list, dict)) for item in value) else "list"
    return {dict: "mapping", type(None): "empty value"}.get(type(value), type(value).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _comparisons(value, runs: list[dict], path: Path) -> dict:
    """``compare``: name -> {a, b, shots, benchmarks}; each must name what the sweep runs."""
    comparisons = _mapping(value, f"{path}: compare")
    methods = {str(run.get("method", "metalora")) for run in runs}
    shots = {str(run.get("shots", 50)) for run in runs}
    result = {}
    for name, spec in comparisons.items():
        where = f"{path}: compare.{name}"
        spec = _mapping(spec, where)
        if sorted(spec) != sorted(COMPARE_KEYS):
            raise MlbenchError(f"{where} needs exactly the keys {', '.join(COMPARE_KEYS)}, got {', '.join(sorted(spec)) or 'none'}")
        if str(spec["a"]) == str(spec["b"]):
            raise MlbenchError(f"{where} compares {spec['a']!r} with itself; a and b must be two different methods")
        for side in ("a", "b"):
            if str(spec[side]) not in methods:
                raise MlbenchError(f"{where}.{side} is {spec[side]!r}, not a method this sweep runs ({', '.join(sorted(methods))})")
        if str(spec["shots"]) not in shots:
            raise MlbenchError(f"{where}.shots is {spec['shots']!r}, not a budget this sweep runs ({', '.join(sorted(shots))})")
        benchmarks = spec["benchmarks"]
        if isinstance(benchmarks, str):
            benchmarks = [part.strip() for part in benchmarks.split(",") if part.strip()]
        run_benchmarks = {b for run in runs for b in _names(run.get("benchmarks"))}
        if not isinstance(benchmarks, list) or not benchmarks or not set(map(str, benchmarks)) <= run_benchmarks:
            raise MlbenchError(
                f"{where}.benchmarks must list benchmarks this sweep evaluates ({', '.join(sorted(run_benchmarks))}), "
                f"got {spec['benchmarks']!r}"
            )
        result[str(name)] = {"a": str(spec["a"]), "b": str(spec["b"]), "shots": spec["shots"], "benchmarks": benchmarks}
    return result


def _names(value) -> list[str]:
    if value is None:
        from metalora.runs.runconfig import DEFAULT_BENCHMARKS

        return list(DEFAULT_BENCHMARKS)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def write_sweep_record(store_root: Path, sweep: Sweep) -> Path:
    """``<store>/sweeps/<name>.json``: the sweep's name, description and declared comparisons."""
    from metalora.files import write_json

    path = Path(store_root) / "sweeps" / f"{sweep.name}.json"
    write_json(path, sweep.record())
    return path


def _grid_name(index: int, grids: list) -> str:
    return "grid" if len(grids) == 1 else f"grid[{index}]"


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlbenchError(f"{where} must be a mapping of option: value")
    return value


def prepare_sweep(sweep: Sweep, execution: ExecutionOptions | None = None) -> list[PreparedRun]:
    """Build and validate every run; duplicates (e.g. the base model once per seed) collapse."""
    execution = execution or ExecutionOptions()
    cache = DataCache()
    prepared: dict[str, PreparedRun] = {}
    for index, options in enumerate(sweep.runs):
        label = ", ".join(f"{k}={options[k]}" for k in ("method", "shots", "seed") if k in options)
        try:
            run = prepare_run(build_run_config(options), execution, cache)
        except MlbenchError as error:
            raise MlbenchError(f"{sweep.path}: run {index + 1} ({label}): {error}") from None
        prepared.setdefault(run.run_id, run)
    return list(prepared.values())


def select_runs(plan: list[PreparedRun], run_ids, config: Path) -> list[PreparedRun]:
    """The runs of ``plan`` with these ids, in the order given (a worker's share)."""
    by_id = {prepared.run_id: prepared for prepared in plan}
    wanted = [run_id.strip() for run_id in run_ids if run_id.strip()]
    unknown = [run_id for run_id in wanted if run_id not in by_id]
    if unknown or not wanted:
        raise MlbenchError(f"--only: {'run id ' + unknown[0] if unknown else 'no run id given'} is not a run of {config}; "
                           f"'mlbench sweep {config} --dry-run' lists its run ids")
    return [by_id[run_id] for run_id in dict.fromkeys(wanted)]
