"""The leaderboard's columns: which number of a run's results each one shows.

Every benchmark's headline is its primary metric (the first of ``BenchmarkSpec.metrics`` in
eval_tasks/registry.py: exact_match for bbh, bbh_cot and mgsm; acc for bbh_mc, mmlu, mmlu_5shot,
xcopa and xwinograd) averaged over its tasks with equal weight (the "macro" aggregate: BBH tasks,
MMLU subjects, languages). "BBH pooled" and "MMLU pooled" are the "micro" aggregates (every item
weighs the same). The multilingual average is the mean of the xcopa, xwinograd and mgsm macro
figures a run has (each benchmark weighs the same whatever its language count). All values are
shown in percent (the stored fractions times 100), the unit of the paper's reference numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from eval_tasks.registry import BENCHMARKS

PERCENT = 100.0
MULTILINGUAL_BENCHMARKS = ("xcopa", "xwinograd", "mgsm")


def primary_metric(benchmark: str) -> str:
    return BENCHMARKS[benchmark].metrics[0]


def aggregate_value(
    results: Mapping, benchmark: str, name: str = "macro", metric: str | None = None
) -> float | None:
    """An aggregate of results.json in percent, or None when the run did not evaluate it."""
    metric = metric or primary_metric(benchmark)
    for aggregate in results.get("aggregates", ()):
        if (
            aggregate.get("benchmark") == benchmark
            and aggregate.get("name") == name
            and aggregate.get("metric") == metric
        ):
            value = aggregate.get("value")
            return None if value is None else float(value) * PERCENT
    return None


def task_values(results: Mapping, benchmark: str, metric: str | None = None) -> dict[str, float]:
    """Per-task (subject, language) scores of one benchmark in percent."""
    metric = metric or primary_metric(benchmark)
    return {
        score["task"]: float(score["metrics"][metric]) * PERCENT
        for score in results.get("tasks", ())
        if score.get("benchmark") == benchmark and metric in score.get("metrics", {})
    }


def multilingual_average(results: Mapping) -> float | None:
    values = [v for b in MULTILINGUAL_BENCHMARKS if (v := aggregate_value(results, b)) is not None]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Column:
    key: str  # also the prefix of the column's fields in the CSV export
    label: str
    description: str
    value: Callable[[Mapping], float | None]  # results.json -> percent, None when not evaluated


def _macro(benchmark: str, label: str) -> Column:
    spec = BENCHMARKS[benchmark]
    return Column(
        key=benchmark,
        label=label,
        description=f"{spec.protocol}; mean over {spec.unit}s of {spec.metrics[0]}",
        value=lambda results: aggregate_value(results, benchmark),
    )


def _pooled(benchmark: str, label: str) -> Column:
    spec = BENCHMARKS[benchmark]
    return Column(
        key=f"{benchmark}_pooled",
        label=label,
        description=f"{spec.metrics[0]} pooled over all items of {benchmark} (micro average)",
        value=lambda results: aggregate_value(results, benchmark, "micro"),
    )


_COLUMNS = (
    _macro("heldout", "Held-out (training tasks)"),  # Table 2's first column: what training taught
    _macro("bbh", "BBH avg"),
    _macro("mmlu", "MMLU avg"),
    Column(
        key="multilingual",
        label="Multilingual avg",
        description="mean of the XCOPA, XWinograd and MGSM macro averages the run evaluated",
        value=multilingual_average,
    ),
    _macro("bbh_cot", "BBH CoT"),
    _macro("bbh_mc", "BBH MC"),
    _macro("mmlu_5shot", "MMLU 5-shot"),
    _macro("xcopa", "XCOPA"),
    _macro("xwinograd", "XWinograd"),
    _macro("mgsm", "MGSM"),
    _pooled("bbh", "BBH pooled"),
    _pooled("mmlu", "MMLU pooled"),
)
COLUMNS: Mapping[str, Column] = MappingProxyType({column.key: column for column in _COLUMNS})
HEADLINE = ("bbh", "mmlu", "multilingual")  # the columns plots and ablations show
