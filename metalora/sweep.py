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
Keys are the flat options of ``metalora.runconfig``. Every run is built and validated, and its
id computed, before the first one starts: a typo in the last run costs nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from metalora.errors import MlbenchError
from metalora.runconfig import allowed_keys, build_run_config
from metalora.runner import PreparedRun, FileHashCache, prepare_run

SWEEP_KEYS = ("description", "defaults", "grid", "runs")


@dataclass(frozen=True)
class Sweep:
    path: Path
    description: str
    runs: list[dict]  # flat options per run, in order


def load_sweep(path: str | Path, overrides: Mapping[str, object] | None = None) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise MlbenchError(f"sweep file {path} not found; pass a YAML file such as configs/table2.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MlbenchError(f"malformed YAML in {path}{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise MlbenchError(f"sweep file {path} must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise MlbenchError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SWEEP_KEYS)}")
    defaults = _mapping(data.get("defaults"), f"{path}: defaults")
    raw_grids = data.get("grid")
    grids = raw_grids if isinstance(raw_grids, list) else [raw_grids]
    grids = [_mapping(grid, f"{path}: grid") for grid in grids]
    extra = data.get("runs") or []
    if not isinstance(extra, list) or not all(isinstance(run, dict) for run in extra):
        raise MlbenchError(f"{path}: runs must be a list of mappings of options")
    named = [("defaults", defaults)] + [(_grid_name(i, grids), g) for i, g in enumerate(grids)]
    for where, keys in named + [(f"runs[{i}]", r) for i, r in enumerate(extra)]:
        bad = sorted(set(keys) - set(allowed_keys()))
        if bad:
            raise MlbenchError(f"{path}: {where}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(allowed_keys())}")
    runs = []
    for index, grid in enumerate(grids):
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise MlbenchError(
                    f"{path}: {_grid_name(index, grids)}.{key} must be a non-empty list of values, got {values!r}"
                )
        if grid:
            keys = list(grid)
            for combination in itertools.product(*(grid[key] for key in keys)):
                runs.append({**defaults, **dict(zip(keys, combination)), **(overrides or {})})
    runs += [{**defaults, **run, **(overrides or {})} for run in extra]
    if not runs:
        raise MlbenchError(f"{path}: no runs; give a grid or a list of runs")
    return Sweep(path, str(data.get("description", "")), runs)


def _grid_name(index: int, grids: list) -> str:
    return "grid" if len(grids) == 1 else f"grid[{index}]"


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlbenchError(f"{where} must be a mapping of option: value")
    return value


def prepare_sweep(sweep: Sweep, data_root: str | None, device: str | None) -> list[PreparedRun]:
    """Build and validate every run; duplicates (e.g. the base model once per seed) collapse."""
    hasher = FileHashCache()
    prepared: dict[str, PreparedRun] = {}
    for index, options in enumerate(sweep.runs):
        label = ", ".join(f"{k}={options[k]}" for k in ("method", "shots", "seed") if k in options)
        try:
            run = prepare_run(build_run_config(options), data_root, device, hasher)
        except MlbenchError as error:
            raise MlbenchError(f"{sweep.path}: run {index + 1} ({label}): {error}") from None
        prepared.setdefault(run.run_id, run)
    return list(prepared.values())
