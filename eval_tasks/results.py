"""What an evaluation returns: per-task scores, aggregates, and the provenance needed to trust them.

Standard errors are computed here from the per-sample values (``sqrt(var / n)`` with the sample
variance, lm-eval's formula for mean metrics), so they exist for every task and aggregate alike:
- per task and pooled (micro) aggregates: the standard error of a mean of per-item scores;
- mean-over-tasks (macro) aggregates: ``sqrt(sum se_i^2) / k``, tasks being independent samples.
A standard error is ``None`` where it is undefined (fewer than two items).

A benchmark may set a minimum task size for its macro mean (XWinograd: 100 items): smaller tasks,
judged by the items the task has (not by ``--limit``), are flagged in ``EvalResult.flagged``, left
out of the macro mean and reported on their own (their per-task scores; the micro figure still
pools every evaluated item). Were every evaluated task that small, the macro mean covers them all
and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TaskScore:
    benchmark: str
    task: str  # BBH task, MMLU subject or language
    lm_eval_task: str
    metrics: dict[str, float]
    stderr: dict[str, float | None]
    n_evaluated: int  # items scored in this run (after --limit)
    n_available: int  # items of the task after exemplars were removed
    version: str  # the task's lm-eval metadata version
    config_hash: str  # sha256 of the task config lm-eval ran (data root and file paths excluded)


@dataclass(frozen=True)
class Aggregate:
    benchmark: str
    name: str  # "macro", "micro", or an MMLU category (pooled within the category)
    metric: str
    value: float
    stderr: float | None
    n_tasks: int
    n_items: int
    method: str  # how the value was computed, in words


@dataclass(frozen=True)
class EvalResult:
    run_label: str
    benchmarks: tuple[str, ...]
    protocols: dict[str, str]
    tasks: tuple[TaskScore, ...]
    aggregates: tuple[Aggregate, ...]
    versions: dict[str, str]  # lm_eval, transformers, torch, peft, datasets, mlbench
    data_root: str
    data_files: dict[str, str]  # file under the data root -> sha256 (hub sources -> "hub")
    settings: dict  # batch size, limit, generation caps, whether LoRA was merged, cache key
    sample_files: dict[str, str] = field(default_factory=dict)  # benchmark -> written records file
    # benchmark -> task -> why it is shown apart from the macro mean (e.g. too few items)
    flagged: dict[str, dict[str, str]] = field(default_factory=dict)
    # benchmark -> reference row -> {"macro", "per_task"} on the evaluated items (references.py)
    references: dict[str, dict] = field(default_factory=dict)

    def task(self, benchmark: str, task: str) -> TaskScore:
        return next(score for score in self.tasks if score.benchmark == benchmark and score.task == task)

    def aggregate(self, benchmark: str, name: str, metric: str | None = None) -> Aggregate:
        return next(
            agg
            for agg in self.aggregates
            if agg.benchmark == benchmark and agg.name == name and (metric is None or agg.metric == metric)
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    centre = mean(values)
    variance = sum((value - centre) ** 2 for value in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def macro_stderr(stderrs: Sequence[float | None]) -> float | None:
    if not stderrs or any(se is None for se in stderrs):
        return None
    return math.sqrt(sum(se * se for se in stderrs)) / len(stderrs)


def small_tasks(scores: Sequence[TaskScore], min_items: int | None) -> dict[str, str]:
    """Tasks with fewer than ``min_items`` items (``n_available``), each with the reason in words."""
    if min_items is None:
        return {}
    return {
        score.task: f"{score.n_available} items, fewer than {min_items}: shown separately, not in the macro mean"
        for score in scores
        if score.n_available < min_items
    }


def aggregate_benchmark(
    benchmark: str,
    metrics: Sequence[str],
    scores: Sequence[TaskScore],
    per_item: Mapping[str, Mapping[str, list[float]]],
    unit: str,
    categories: Mapping[str, str],
    min_items: int | None = None,
) -> list[Aggregate]:
    """Macro (mean over tasks) and micro (pooled) figures per metric; MMLU-style category groups.

    ``per_item[task][metric]`` holds the per-item scores of each task. Tasks with fewer than
    ``min_items`` items are left out of the macro mean (``small_tasks``).
    """
    aggregates = []
    small = small_tasks(scores, min_items)
    in_macro = [score for score in scores if score.task not in small] or list(scores)
    n_items = sum(score.n_evaluated for score in in_macro)
    if not small:
        how = ""
    elif len(in_macro) < len(scores):
        how = f" with at least {min_items} items ({', '.join(small)}: fewer, shown separately)"
    else:
        how = f" (every one has fewer than {min_items} items)"
    for metric in metrics:
        aggregates.append(
            Aggregate(
                benchmark=benchmark,
                name="macro",
                metric=metric,
                value=mean([score.metrics[metric] for score in in_macro]),
                stderr=macro_stderr([score.stderr[metric] for score in in_macro]),
                n_tasks=len(in_macro),
                n_items=n_items,
                method=f"mean over {len(in_macro)} {unit}s{how} of the per-{unit} {metric}",
            )
        )
        pooled = [value for score in scores for value in per_item[score.task][metric]]
        aggregates.append(
            Aggregate(
                benchmark=benchmark,
                name="micro",
                metric=metric,
                value=mean(pooled),
                stderr=mean_stderr(pooled),
                n_tasks=len(scores),
                n_items=len(pooled),
                method=f"{metric} pooled over all {len(pooled)} items",
            )
        )
        for category in dict.fromkeys(categories.values()):
            members = [score for score in scores if categories.get(score.task) == category]
            if not members:
                continue
            pooled = [value for score in members for value in per_item[score.task][metric]]
            aggregates.append(
                Aggregate(
                    benchmark=benchmark,
                    name=category,
                    metric=metric,
                    value=mean(pooled),
                    stderr=mean_stderr(pooled),
                    n_tasks=len(members),
                    n_items=len(pooled),
                    method=f"{metric} pooled over the {len(pooled)} items of the {len(members)} {category} {unit}s",
                )
            )
    return aggregates
