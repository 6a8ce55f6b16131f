"""Paired comparisons: is the gap between two settings on a benchmark real, item by item?

Two settings are compared when they share model and profile and either share scenario and data
budget, or one of them is the base model. Both answered the same items, so the per-item difference
removes item difficulty from the comparison. For item i, each side's score is its correctness
(1 or 0, the benchmark's primary metric, from the per-sample records) averaged over the seeds
used: the seeds both sides ran when both were trained, every run of the base model (which has no
training seed) otherwise. Only items present in every one of those runs count. The difference
d_i = A_i − B_i (percentage points) is summarised by its mean and a 95% t interval over items
(reports.stats): an interval that excludes 0 means the gap is larger than item sampling explains.
Pooling items weighs each task by its item count, like the "pooled" (micro) leaderboard columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from reports.columns import PERCENT
from reports.load import Run
from reports.settings import BASE, Setting
from reports.stats import Interval, mean_ci
from reports.tables import stat_fields

Item = tuple[str, object]  # (task, doc_id)


@dataclass(frozen=True)
class Paired:
    a: Setting
    b: Setting
    benchmark: str
    seeds: tuple  # the training seeds paired; empty when a side is the base model
    n_runs_a: int
    n_runs_b: int
    difference: Interval  # A − B in percentage points, over items
    a_better: int  # items where A's seed-averaged score is higher
    b_better: int

    @property
    def significant(self) -> bool:
        return self.difference.low is not None and (self.difference.low > 0 or self.difference.high < 0)


class Correctness:
    """Per-run, per-benchmark correctness by item, read once per build."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], dict[Item, float]] = {}

    def of(self, run: Run, benchmark: str) -> dict[Item, float]:
        key = (run.run_id, benchmark)
        if key not in self._cache:
            self._cache[key] = {
                (record["task"], _hashable(record["doc_id"])): float(bool(record["correct"]))
                for record in run.samples(benchmark)
            }
        return self._cache[key]


def candidate_pairs(settings: Sequence[Setting]) -> list[tuple[Setting, Setting]]:
    pairs = []
    for a, b in combinations(settings, 2):
        if a.model != b.model or a.profile != b.profile:
            continue
        if BASE in (a.method, b.method) and a.method != b.method:
            pairs.append((b, a) if a.method == BASE else (a, b))  # the trained side first
        elif BASE not in (a.method, b.method) and a.scenario == b.scenario and a.shots == b.shots:
            pairs.append((a, b))
    return pairs


def _runs_for(a: Setting, b: Setting) -> tuple[tuple, list[Run], list[Run]]:
    if BASE in (a.method, b.method):
        return (), list(a.runs), list(b.runs)
    seeds = sorted(set(a.seeds) & set(b.seeds), key=lambda seed: (seed is None, seed or 0))
    pick = lambda s: [run for run in s.runs if run.seed in seeds]
    return tuple(seeds), pick(a), pick(b)


def compare(a: Setting, b: Setting, benchmark: str, correctness: Correctness) -> Paired | None:
    seeds, runs_a, runs_b = _runs_for(a, b)
    if not runs_a or not runs_b:
        return None
    tables = [correctness.of(run, benchmark) for run in (*runs_a, *runs_b)]
    if not all(tables):
        return None
    items = set(tables[0]).intersection(*tables[1:])
    if not items:
        return None
    ordered = sorted(items, key=repr)  # a fixed order, so the same store gives the same numbers
    score = lambda runs, item: sum(correctness.of(r, benchmark)[item] for r in runs) / len(runs)
    differences = [(score(runs_a, item) - score(runs_b, item)) * PERCENT for item in ordered]
    return Paired(
        a=a,
        b=b,
        benchmark=benchmark,
        seeds=seeds,
        n_runs_a=len(runs_a),
        n_runs_b=len(runs_b),
        difference=mean_ci(differences),
        a_better=sum(d > 0 for d in differences),
        b_better=sum(d < 0 for d in differences),
    )


def paired_comparisons(settings: Sequence[Setting]) -> list[Paired]:
    correctness = Correctness()
    results = []
    for a, b in candidate_pairs(settings):
        shared = sorted(set.intersection(*(set(run.sample_benchmarks()) for run in (*a.runs, *b.runs))))
        for benchmark in shared:
            paired = compare(a, b, benchmark, correctness)
            if paired is not None:
                results.append(paired)
    return results


def paired_table(comparisons: Sequence[Paired]) -> pd.DataFrame:
    rows = [
        {
            "model": p.a.model,
            "profile": p.a.profile,
            "a": p.a.name,
            "a_setting": p.a.key,
            "b": p.b.name,
            "b_setting": p.b.key,
            "benchmark": p.benchmark,
            "seeds": " ".join(str(seed) for seed in p.seeds),
            "runs_a": p.n_runs_a,
            "runs_b": p.n_runs_b,
            "a_better": p.a_better,
            "b_better": p.b_better,
        }
        | stat_fields("difference", p.difference)  # difference_n: the number of items paired
        | {"ci_excludes_zero": p.significant}
        for p in comparisons
    ]
    return pd.DataFrame(rows)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
