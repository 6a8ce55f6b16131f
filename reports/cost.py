"""What each setting consumed, from its runs' ``cost.json``: leaderboard columns beside the scores.

A column's value is the mean over the setting's runs that recorded it (counts are normally equal
across seeds; seconds vary). Runs from before ``cost.json`` existed, or a field a run did not
record (``device_s`` is null on a CPU), read "not recorded", never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CostColumn:
    key: str  # the leaderboard frame's column
    label: str
    description: str
    path: tuple[str, str]  # where in cost.json
    seconds: bool = False


COST_COLUMNS = (
    CostColumn("outer_updates", "Outer updates", "optimizer steps of the shared adapter (meta-iterations for MeTA-LoRA)",
               ("training", "outer_updates")),
    CostColumn("example_passes", "Example passes", "training examples through a forward and backward pass, all loops counted",
               ("training", "example_passes")),
    CostColumn("tokens", "Training tokens", "tokens through forward and backward passes in training",
               ("training", "tokens")),
    CostColumn("trainable_parameters", "Trainable parameters", "adapter parameters the optimizer updates",
               ("training", "trainable_parameters")),
    CostColumn("device_s", "GPU seconds", "accelerator time of the whole run (not recorded on a CPU)",
               ("time", "device_s"), seconds=True),
    CostColumn("cpu_s", "CPU seconds", "process CPU time of the whole run", ("time", "cpu_s"), seconds=True),
    CostColumn("total_s", "Wall seconds", "wall time of the whole run: model load, training, evaluation",
               ("time", "total_s"), seconds=True),
)
NOT_RECORDED = "not recorded"


def cost_value(cost: Mapping | None, path: Sequence[str]) -> float | None:
    value = cost
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def cost_fields(costs: Sequence[Mapping | None]) -> dict[str, float | None]:
    """Each cost column's mean over the runs that recorded it (None where none did)."""
    fields = {}
    for column in COST_COLUMNS:
        values = [v for cost in costs if (v := cost_value(cost, column.path)) is not None]
        fields[column.key] = sum(values) / len(values) if values else None
    return fields


def cost_text(column: CostColumn, value: float | None) -> str:
    if value is None:
        return NOT_RECORDED
    return f"{value:,.1f}" if column.seconds else f"{round(value):,}"


def _number(value, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NOT_RECORDED
    return f"{value:,.{digits}f}"


def _section(cost: Mapping, name: str) -> Mapping:
    section = cost.get(name)
    return section if isinstance(section, Mapping) else {}


def _per_benchmark(values) -> dict:
    return dict(values) if isinstance(values, Mapping) else {}


def memory_text(memory: Mapping) -> str:
    peak = memory.get("peak_bytes")
    if isinstance(peak, bool) or not isinstance(peak, int):
        return NOT_RECORDED
    where = memory.get("device")
    return f"{peak / 2**20:,.1f} MiB" + (f" ({where})" if where else "")


def cost_rows(cost: Mapping | None) -> list[tuple[str, str]]:
    """One run's cost as (label, text) rows: the leaderboard's columns, the budget rule, each
    phase's wall time, throughput and peak memory. ``mlbench show`` prints them, the run page
    tabulates them; a run without cost.json has one row saying so."""
    if cost is None:
        return [("cost.json", NOT_RECORDED)]
    training = _section(cost, "training")
    rule = training.get("budget_rule")
    rows = [("Budget rule", str(rule) if rule else NOT_RECORDED)]
    rows += [(c.label, cost_text(c, cost_value(cost, c.path))) for c in COST_COLUMNS]
    time, throughput = _section(cost, "time"), _section(cost, "throughput")
    rows += [("Model load seconds", _number(time.get("model_load_s"))),
             ("Training seconds", _number(time.get("training_s")))]
    graphs = training.get("cuda_graphs")
    if isinstance(graphs, Mapping):  # training seconds are not comparable with an eager run's
        replayed, captured = graphs.get("graphed_passes"), graphs.get("shapes_graphed")
        rows.append(("Training CUDA graphs", f"{replayed} decoder passes replayed, {captured} batch shapes captured"))
    deterministic = training.get("deterministic_kernels")
    if isinstance(deterministic, bool):  # recorded on CUDA only (a CPU's kernels always are)
        rows.append(("Training kernels", "deterministic: the same adapter on the same GPU and software" if deterministic
                     else "with atomics (--deterministic-training off): not reproducible bit for bit"))
    eval_s = _per_benchmark(time.get("eval_s"))
    rows += [(f"Evaluation seconds: {name}", _number(value)) for name, value in eval_s.items()] or [
        ("Evaluation seconds", NOT_RECORDED)]
    rows += [("Training tokens/s", _number(throughput.get("train_tokens_per_s"))),
             ("Training examples/s", _number(throughput.get("train_examples_per_s"), 2))]
    items = _per_benchmark(throughput.get("eval_items_per_s"))
    rows += [(f"Evaluation items/s: {name}", _number(value, 2)) for name, value in items.items()] or [
        ("Evaluation items/s", NOT_RECORDED)]
    rows.append(("Peak memory", memory_text(_section(cost, "memory"))))
    return rows
