"""Paired comparisons of settings, per leaderboard column, with a multiple-testing correction.

What is compared. Settings compete in a block: the same model, profile, scenario and examples
per task (the methods and variants of one row group of Table 2). Within a block, per column
("between methods"): every two methods in their default configuration, each ablation variant
against its own method's default, and the column's best row against every other row (what its
mark rests on); so the number of tests grows linearly with a block's ablations, not with their
square. Each trained setting is also compared with the base model of its model and profile
("versus the base model"). Settings of different profiles are never compared: a smoke run
measures something else than a full-protocol run.

On what. Each column's own estimand, from the per-sample records: a benchmark's macro average
(mean over tasks of the per-task mean score; the headline number), its pooled (micro) average, or
the multilingual mean of macro averages (each benchmark weighs the same). Only items that every
run of the compared settings answered count, and only the training seeds both settings ran (seed s
pairs with seed s). The difference A − B in points, its standard error, 95% interval and p-value
come from the two-level bootstrap of reports.bootstrap (seeds and items within tasks resampled,
the same draws for both sides).

Which are corrected. A sweep may declare one primary comparison (reports.primary); it is tested at
alpha 0.05 as it is. Every other comparison belongs to a family: the comparisons of one column in
one block of one kind (between methods, or versus the base model); within a family Holm's
step-down correction adjusts the p-values, so the chance of any false claim in the family stays at
most 0.05. A comparison is significant when its (adjusted) p-value is below 0.05 and both sides
have at least two seeds (with one seed the seed-to-seed variance is unknown and nothing is claimed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from eval_tasks.registry import BENCHMARKS
from reports.bootstrap import (
    BootstrapConfig,
    Difference,
    Draws,
    Items,
    difference,
    item_draws,
    micro_weights,
    seed_counts,
)
from reports.columns import COLUMNS, MULTILINGUAL_BENCHMARKS, PERCENT
from reports.load import Run
from reports.primary import Primary
from reports.settings import BASE, Setting
from reports.stats import holm, minimum_detectable_difference
from reports.tables import over_seeds

ALPHA = 0.05
BETWEEN = "between methods"
VERSUS_BASE = "versus the base model"
DEFAULT_BOOTSTRAP = BootstrapConfig()
Item = tuple[str, str, object]  # (benchmark, task, doc_id)
Block = tuple[str, str, str | None, object]  # (model, profile, scenario, shots)


@dataclass(frozen=True)
class Estimand:
    benchmarks: tuple[str, ...]
    pooled: bool  # every item weighs the same (micro); otherwise each task, then each benchmark

    def weights(self, tasks: Sequence[tuple[str, str]], counts: Sequence[int]) -> np.ndarray:
        if self.pooled:
            return micro_weights(counts)
        per_benchmark = defaultdict(int)
        for benchmark, _ in tasks:
            per_benchmark[benchmark] += 1
        share = 1.0 / len(per_benchmark)
        return np.array([share / per_benchmark[benchmark] for benchmark, _ in tasks])


def estimand(column: str) -> Estimand | None:
    """The estimand behind a leaderboard column, or None when it has no per-sample form."""
    if column == "multilingual":
        return Estimand(MULTILINGUAL_BENCHMARKS, pooled=False)
    if column in BENCHMARKS:
        return Estimand((column,), pooled=False)
    stem = column.removesuffix("_pooled")
    if stem != column and stem in BENCHMARKS:
        return Estimand((stem,), pooled=True)
    return None


@dataclass(frozen=True)
class Comparison:
    a: Setting
    b: Setting
    column: str  # leaderboard column key
    kind: str  # BETWEEN or VERSUS_BASE
    family: str  # the Holm family's name; "primary" for a declared primary comparison
    primary: bool
    difference: Difference  # A − B in points
    p_adjusted: float | None  # Holm-adjusted within the family (the raw p for a primary); None if untested

    @property
    def significant(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted < ALPHA

    @property
    def mdd(self) -> float:
        return minimum_detectable_difference(self.difference.se, self.difference.df, ALPHA)

    def better(self, key: str) -> bool:
        """Whether the setting ``key`` is significantly above the other side."""
        sign = 1 if key == self.a.key else -1
        return self.significant and sign * self.difference.estimate > 0


class Correctness:
    """Per-run, per-benchmark score by item (the benchmark's primary metric), read once per build."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], dict[Item, float]] = {}

    def of(self, run: Run, benchmark: str) -> dict[Item, float]:
        key = (run.run_id, benchmark)
        if key not in self._cache:
            self._cache[key] = {
                (benchmark, str(record["task"]), _hashable(record["doc_id"])): float(bool(record["correct"]))
                for record in run.samples(benchmark)
            }
        return self._cache[key]


def block_of(setting: Setting) -> Block:
    return (setting.model, setting.profile, setting.scenario, setting.shots)


def block_name(block: Block) -> str:
    model, profile, scenario, shots = block
    return f"{model}, {scenario}, {shots}/task, {profile}"


def _seed_runs(setting: Setting) -> dict:
    """One run per training seed (the first, should a seed have been run twice)."""
    runs: dict = {}
    for run in setting.runs:
        runs.setdefault(run.seed, run)
    return runs


@dataclass(frozen=True)
class Panel:
    """Settings of one block scored on one column's common items, with their bootstrap draws."""

    items: Items
    draws: Mapping[str, Draws]  # setting key -> its runs under the bootstrap
    seeds: Mapping[str, tuple]  # setting key -> the seed of each row


def build_panel(
    settings: Sequence[Setting], target: Estimand, correctness: Correctness, config: BootstrapConfig
) -> Panel | None:
    """The settings whose every run has records of every benchmark of ``target``, on shared items."""
    rows = {}
    for setting in settings:
        runs = list(setting.runs) if setting.method == BASE else list(_seed_runs(setting).values())
        tables = [correctness.of(run, b) for run in runs for b in target.benchmarks]
        if runs and all(tables):
            rows[setting.key] = (setting, runs)
    if len(rows) < 2:
        return None
    per_run = [
        set().union(*(correctness.of(run, b) for b in target.benchmarks))
        for _, runs in rows.values()
        for run in runs
    ]
    every_run = [run for _, side in rows.values() for run in side]
    left_out = set() if target.pooled else outside_macro(every_run, target.benchmarks)
    shared = sorted(
        (item for item in set.intersection(*per_run) if item[:2] not in left_out),
        key=lambda item: (item[0], item[1], repr(item[2])),
    )
    if not shared:
        return None
    tasks = list(dict.fromkeys(item[:2] for item in shared))
    index = {task: position for position, task in enumerate(tasks)}
    task_of = np.array([index[item[:2]] for item in shared])
    counts = np.bincount(task_of, minlength=len(tasks))
    items = Items(task_of, target.weights(tasks, counts))
    matrices = []
    for _, runs in rows.values():
        by_run = [{b: correctness.of(run, b) for b in target.benchmarks} for run in runs]
        matrix = [[scores[item[0]][item] for item in shared] for scores in by_run]
        matrices.append(np.array(matrix) * PERCENT)
    resampled = item_draws(items, matrices, config)
    draws, seeds = {}, {}
    for (key, (setting, runs)), matrix, res in zip(rows.items(), matrices, resampled):
        draws[key] = Draws(matrix @ items.item_weights(), res, seeded=setting.method != BASE)
        seeds[key] = tuple(run.seed for run in runs)
    return Panel(items, draws, seeds)


def outside_macro(runs: Iterable[Run], benchmarks: Sequence[str]) -> set[tuple[str, str]]:
    """(benchmark, task) pairs a headline macro mean leaves out: tasks with fewer items available
    than the benchmark's ``min_items_for_macro`` (XWinograd's small languages), as any run's
    results.json reports them; the test must be on the number the leaderboard shows."""
    out = set()
    for benchmark in benchmarks:
        minimum = BENCHMARKS[benchmark].min_items_for_macro
        if minimum is None:
            continue
        for run in runs:
            for score in (run.results or {}).get("tasks", ()):
                available = score.get("n_available")
                if score.get("benchmark") == benchmark and available is not None and available < minimum:
                    out.add((benchmark, str(score.get("task"))))
    return out


def _paired_draws(panel: Panel, a: Setting, b: Setting) -> tuple[Draws, Draws] | None:
    da, db = panel.draws[a.key], panel.draws[b.key]
    if not (da.seeded and db.seeded):
        return da, db
    common = [seed for seed in panel.seeds[a.key] if seed in panel.seeds[b.key]]
    if not common:
        return None
    pick = lambda draws, key: Draws(  # the rows of the common seeds, in one order
        draws.point[[panel.seeds[key].index(s) for s in common]],
        draws.resampled[[panel.seeds[key].index(s) for s in common]],
        seeded=True,
    )
    return pick(da, a.key), pick(db, b.key)


def _primary(
    primaries: Iterable[Primary], a: Setting, b: Setting, column: str
) -> tuple[Primary | None, bool]:
    """(the primary declaration it is, swap sides so that A is its a) for default configurations."""
    if a.ablation or b.ablation:
        return None, False
    for declared in primaries:
        if declared.matches(a.method, b.method, a.shots, column):
            return declared, False
        if declared.matches(b.method, a.method, a.shots, column):
            return declared, True
    return None, False


def tested_pairs(present: Sequence[Setting], column: str) -> list[tuple[Setting, Setting]]:
    """The between-methods pairs of one block and column, linear in the number of settings.

    Every two default configurations (empty ablation: the methods themselves); each ablation variant
    against its method's default configuration; and the column's best row (highest mean over
    seeds, as the leaderboard ranks) against every other row, which is what its mark needs.
    """
    defaults = [s for s in present if not s.ablation]
    pairs = list(combinations(defaults, 2))
    default_of = {s.method: s for s in defaults}
    pairs += [(s, default_of[s.method]) for s in present if s.ablation and s.method in default_of]
    means = {s.key: m.mean for s in present if (m := over_seeds(s, COLUMNS[column].value)) is not None}
    ranked = [s for s in present if s.key in means]
    if ranked:
        best = max(ranked, key=lambda s: means[s.key])  # the first of equal means, as the leaderboard
        pairs += [(best, s) for s in ranked if s is not best]
    unique: dict[frozenset, tuple[Setting, Setting]] = {}
    for a, b in pairs:
        unique.setdefault(frozenset((a.key, b.key)), (a, b))
    return list(unique.values())


def paired_comparisons(
    settings: Sequence[Setting],
    primaries: Sequence[Primary] = (),
    config: BootstrapConfig = DEFAULT_BOOTSTRAP,
) -> list[Comparison]:
    correctness = Correctness()
    blocks: dict[Block, list[Setting]] = defaultdict(list)
    bases: dict[tuple[str, str], list[Setting]] = defaultdict(list)
    for setting in settings:
        if setting.method == BASE:
            bases[(setting.model, setting.profile)].append(setting)
        else:
            blocks[block_of(setting)].append(setting)
    raw = []  # (a, b, column, kind, family, primary, difference)
    counts: dict[int, np.ndarray] = {}  # seed draws by number of seeds, shared by all comparisons
    for block, members in blocks.items():
        competitors = members + bases.get(block[:2], [])
        for column in COLUMNS:
            target = estimand(column)
            panel = None if target is None else build_panel(competitors, target, correctness, config)
            if panel is None:
                continue
            present = [s for s in members if s.key in panel.draws]
            pairs = [(a, b, BETWEEN) for a, b in tested_pairs(present, column)]
            pairs += [(s, base, VERSUS_BASE) for s in present for base in competitors[len(members) :]]
            for a, b, kind in pairs:
                if b.key not in panel.draws:
                    continue
                declared, swap = _primary(primaries, a, b, column) if kind == BETWEEN else (None, False)
                a, b = (b, a) if swap else (a, b)
                sides = _paired_draws(panel, a, b)
                if sides is None:
                    continue
                family = (
                    f"primary, declared by sweep {declared.sweep}"
                    if declared
                    else f"{column} · {block_name(block)} · {kind}"
                )
                seeds = sides[0].point.size if sides[0].seeded else sides[1].point.size
                if seeds not in counts:
                    counts[seeds] = seed_counts(seeds, config)
                result = difference(*sides, panel.items, config, counts[seeds])
                raw.append((a, b, column, kind, family, declared is not None, result))
    return _corrected(raw)


def _corrected(raw: list) -> list[Comparison]:
    families: dict[str, list[int]] = defaultdict(list)
    for position, (*_, family, primary, result) in enumerate(raw):
        if not primary and result.testable:
            families[family].append(position)
    adjusted: dict[int, float] = {}
    for members in families.values():
        values = holm([raw[position][-1].p_value for position in members])
        adjusted |= dict(zip(members, values))
    return [
        Comparison(
            a,
            b,
            column,
            kind,
            family,
            primary,
            result,
            (result.p_value if result.testable else None) if primary else adjusted.get(position),
        )
        for position, (a, b, column, kind, family, primary, result) in enumerate(raw)
    ]


def comparison_index(comparisons: Iterable[Comparison]) -> dict[tuple[str, frozenset], Comparison]:
    """(column, {setting key, setting key}) -> the comparison of those two settings on that column."""
    return {(c.column, frozenset((c.a.key, c.b.key))): c for c in comparisons}


def block_mdd(comparisons: Iterable[Comparison]) -> dict[tuple[Block, str], tuple[float, float, int]]:
    """Per block and column: (MDD, its SE, seeds) from the between-methods comparisons.

    The SE is the root mean square of the block's pairwise standard errors (a typical pair), the
    degrees of freedom the smallest of theirs (the conservative choice), the seeds the fewest paired.
    """
    grouped: dict[tuple[Block, str], list[Comparison]] = defaultdict(list)
    for c in comparisons:
        if c.kind == BETWEEN and c.difference.testable:
            grouped[(block_of(c.a), c.column)].append(c)
    out = {}
    for key, members in grouped.items():
        se = math.sqrt(sum(c.difference.se**2 for c in members) / len(members))
        df = min(c.difference.df for c in members)
        seeds = min(c.difference.seeds for c in members)
        out[key] = (minimum_detectable_difference(se, df, ALPHA), se, seeds)
    return out


def mdd_table(comparisons: Iterable[Comparison]) -> pd.DataFrame:
    """One row per block and column: the minimum detectable difference and what it rests on."""
    rows = [
        {
            "model": block[0],
            "profile": block[1],
            "scenario": block[2],
            "shots": block[3],
            "column": column,
            "mdd": mdd,
            "se": se,
            "seeds": seeds,
        }
        for (block, column), (mdd, se, seeds) in block_mdd(comparisons).items()
    ]
    return pd.DataFrame(
        rows, columns=["model", "profile", "scenario", "shots", "column", "mdd", "se", "seeds"]
    )


def paired_table(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    rows = [
        {
            "model": c.a.model,
            "profile": c.a.profile,
            "column": COLUMNS[c.column].label,
            "a": c.a.name,
            "a_setting": c.a.key,
            "b": c.b.name,
            "b_setting": c.b.key,
            "family": c.family,
            "items": c.difference.n_items,
            "tasks": c.difference.n_tasks,
            "difference_mean": c.difference.estimate,
            "difference_ci_low": c.difference.low,
            "difference_ci_high": c.difference.high,
            "difference_n": c.difference.seeds,  # seeds paired (the trained side's against the base)
            "se": c.difference.se,
            "se_seeds": c.difference.se_seeds,
            "se_items": c.difference.se_items,
            "df": c.difference.df,
            "p": c.difference.p_value,
            "p_holm": c.p_adjusted,
            "mdd": c.mdd,
            "significant": c.significant,
        }
        for c in comparisons
    ]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.assign(difference_n=frame["difference_n"].astype("Int64"))
    return frame


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
