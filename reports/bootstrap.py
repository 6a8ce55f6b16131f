"""A paired, two-level bootstrap of the difference between two settings on one estimand.

The design, and why. A setting's score varies for two reasons a skeptical reviewer would name:
which training seeds were run (data sample, initialisation, order) and which evaluation items the
benchmark happens to contain. Seeds and items are crossed (every seed answers every item), so both
are resampled: seeds with replacement, and items with replacement *within each task* (tasks are
fixed strata; the estimand weighs them, items do not move between them). Both settings of a
comparison get the same draws, so pairing is kept: the same item draws for both and, when both
were trained, the same seed draws (seed s of A pairs with seed s of B). The statistic is the
headline's estimand: a weighted mean over tasks of the per-task mean item score, averaged over
seeds (weights 1/T for a macro column, n_t/N for a pooled one).

How the two levels combine. Write the per-item, per-seed difference as item effect + seed effect +
seed-by-item noise. Resampling seeds with the items fixed measures the seed effect and the noise;
resampling items with the seeds fixed (on the seed-averaged differences) measures the item effect
and the noise again. Resampling both jointly, the textbook two-level bootstrap, counts the noise
three times; with 0/1 scores the noise dominates, and its intervals cover the truth 99-100% of the
time (bench/bootstrap_stats.py): a test that can hardly find anything. So the variance is built
from the two one-level resamplings, of the same draws: the seed part (rescaled by S/(S−1), the
bootstrap's shrinkage of a variance over S values), plus the item part with the noise it repeats
taken out. Each single seed's item variance holds that noise S times over, which gives its size:
item part = (S·V(seed mean) − mean_s V(seed s)) / (S − 1), floored at 0.

The interval is estimate ± t(0.975, ν) · SE with ν from Welch–Satterthwaite over the seed part
(S−1 degrees of freedom: 3-5 seeds give wider, honest intervals) and the item part (N−T); the
p-value is 2·P(T_ν > |estimate| / SE). With a single seed the seed variance is unknown and nothing
is claimed; the base model is one deterministic evaluation and contributes no seed variance.

Vectorised: for each block of resamples the item counts of every task are drawn at once (an
integer draw and a bincount), the weighted counts form a (resamples x items) matrix, and one
matrix product gives every run's resampled estimand. Draws are deterministic given
``BootstrapConfig.seed`` (numpy Generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtr, stdtrit

CONFIDENCE = 0.95
BLOCK = 256  # resamples per matrix product: bounds memory at BLOCK x items floats


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int = 2000
    seed: int = 0
    confidence: float = CONFIDENCE


@dataclass(frozen=True)
class Items:
    """The items every setting of a comparison answered, grouped in tasks, and the estimand's weights."""

    task_of: np.ndarray  # (N,) task index of each item, 0..T-1, items of a task contiguous
    weights: np.ndarray  # (T,) weight of each task's mean in the estimand; sums to 1

    @property
    def n_items(self) -> int:
        return int(self.task_of.size)

    @property
    def n_tasks(self) -> int:
        return int(self.weights.size)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.task_of, minlength=self.n_tasks)

    def item_weights(self) -> np.ndarray:
        """Weight of each item in the estimand: its task's weight shared among the task's items."""
        return (self.weights / self.counts)[self.task_of]


def macro_weights(n_tasks: int) -> np.ndarray:
    return np.full(n_tasks, 1.0 / n_tasks)


def micro_weights(counts: Sequence[int]) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


@dataclass(frozen=True)
class Draws:
    """One setting under the bootstrap: per seed, the estimand on the items and under item resamples."""

    point: np.ndarray  # (S,) the estimand of each seed's run on the original items
    resampled: np.ndarray  # (S, B) the same under each item resample
    seeded: bool  # False for the base model: its runs do not depend on a training seed


def item_draws(items: Items, scores: Sequence[np.ndarray], config: BootstrapConfig) -> list[np.ndarray]:
    """Each score matrix (S_k x N) evaluated on the same ``config.resamples`` item resamples.

    Returns one (S_k x B) array per matrix. Items are resampled within each task with replacement,
    the same draws for every matrix (this is what keeps the comparison paired on items).
    """
    if np.any(np.diff(items.task_of) < 0):
        raise ValueError("items must be grouped by task (task_of non-decreasing)")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, 1])))
    weights = items.item_weights()
    counts = items.counts
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    stacked = np.vstack([np.asarray(matrix, dtype=float) for matrix in scores]).T  # (N x ΣS)
    out = np.empty((stacked.shape[1], config.resamples))
    for start in range(0, config.resamples, BLOCK):
        size = min(BLOCK, config.resamples - start)
        multiplicity = np.empty((size, items.n_items))
        for offset, count in zip(offsets, counts):
            picks = rng.integers(0, count, size=(size, count)) + np.arange(size)[:, None] * count
            multiplicity[:, offset : offset + count] = np.bincount(
                picks.ravel(), minlength=size * count
            ).reshape(size, count)
        out[:, start : start + size] = ((multiplicity * weights) @ stacked).T
    return np.split(out, np.cumsum([np.asarray(m).shape[0] for m in scores])[:-1])


def point_estimates(items: Items, matrix: np.ndarray) -> np.ndarray:
    """(S,) the estimand of each row (seed) of a score matrix on the original items."""
    return np.asarray(matrix, dtype=float) @ items.item_weights()


@dataclass(frozen=True)
class Difference:
    """A − B on the estimand, with its bootstrap standard error and t interval."""

    estimate: float
    se: float
    df: float  # Welch-Satterthwaite degrees of freedom; inf when only items vary
    low: float
    high: float
    p_value: float
    se_seeds: float  # the seed part of the standard error
    se_items: float  # the item part
    seeds: int  # seeds paired (both trained), or the trained side's seeds against the base model
    n_items: int
    n_tasks: int
    seed_variance_estimated: bool  # False when a trained side has a single seed: SE covers items only

    @property
    def testable(self) -> bool:
        """Whether a claim may rest on it: the seed variance is estimated and the SE is not zero
        (a zero SE with a non-zero difference means the data cannot show their own noise, as with
        two seeds that happen to differ by exactly the same amount on a handful of items)."""
        return self.seed_variance_estimated and self.se > 0

    def significant(self, alpha: float = 0.05) -> bool:
        return self.testable and self.p_value < alpha


def seed_counts(seeds: int, config: BootstrapConfig) -> np.ndarray:
    """(B x S) how often each of S seeds is drawn in each resample; the same for every comparison
    with S seeds (callers comparing many pairs may keep it: it depends on nothing else)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, 2, seeds])))
    resamples = config.resamples
    picks = rng.integers(0, seeds, size=(resamples, seeds)) + np.arange(resamples)[:, None] * seeds
    return np.bincount(picks.ravel(), minlength=resamples * seeds).reshape(resamples, seeds)


def difference(
    a: Draws, b: Draws, items: Items, config: BootstrapConfig, counts: np.ndarray | None = None
) -> Difference:
    """A − B, paired on items and on seeds.

    When both sides are seeded their rows must be the same seeds in the same order. A side that is
    not seeded (the base model) is one deterministic evaluation: its rows are averaged and the
    difference is taken against each seed of the other side. ``counts``: ``seed_counts(S, config)``
    if the caller has it already.
    """
    a_point, a_res = _rows(a)
    b_point, b_res = _rows(b)
    if a.seeded and b.seeded and a_res.shape[0] != b_res.shape[0]:
        raise ValueError("paired seeds need the same number of runs on both sides")
    point = a_point - b_point  # (S,) the estimand of each seed's difference
    resampled = a_res - b_res  # (S, B) the same under each item resample
    seeds = point.size
    estimate = float(point.mean())

    # Seed part: resample seeds (items fixed), rescaled by S/(S−1) for the bootstrap's shrinkage.
    var_seeds = 0.0
    if seeds > 1 and np.ptp(point) > 1e-9 * max(1.0, float(np.abs(point).max())):  # not all equal
        counts = seed_counts(seeds, config) if counts is None else counts
        var_seeds = float((counts @ point / seeds).var(ddof=1)) * seeds / (seeds - 1)

    # Item part: resample items within tasks (seeds fixed). The seed-averaged difference still
    # carries seed-by-item noise that the seed part already counts; each single seed's item
    # variance holds it S times over, which gives its size: (S·V_mean − mean_s V_s) / (S − 1).
    var_mean = float(resampled.mean(axis=0).var(ddof=1))
    if seeds > 1:
        var_single = float(resampled.var(axis=1, ddof=1).mean())
        var_items = max((seeds * var_mean - var_single) / (seeds - 1), 0.0)
    else:
        var_items = var_mean
    components = [(var_items, items.n_items - items.n_tasks), (var_seeds, seeds - 1)]
    estimated = seeds > 1 or not (a.seeded or b.seeded)
    return _summary(estimate, components, seeds, items, estimated, config.confidence)


def _rows(draws: Draws) -> tuple[np.ndarray, np.ndarray]:
    if draws.seeded:
        return draws.point, draws.resampled
    return draws.point.mean(keepdims=True), draws.resampled.mean(axis=0, keepdims=True)


def satterthwaite(components: Sequence[tuple[float, float]]) -> float:
    """ν = (Σ V_j)² / Σ (V_j² / ν_j) for variance components V_j with ν_j degrees of freedom."""
    total = sum(v for v, _ in components)
    denominator = sum(v * v / df for v, df in components if df > 0 and v > 0)
    return math.inf if denominator == 0 else total * total / denominator


def _summary(estimate, components, seeds, items, estimated, confidence) -> Difference:
    (var_items, _), (var_seeds, _) = components
    se = math.sqrt(var_items + var_seeds)
    df = satterthwaite(components)
    if se == 0:
        p_value = 1.0 if estimate == 0 else 0.0
        half = 0.0
    else:
        # scipy.special's t functions are what scipy.stats.t calls, without its per-call argument
        # handling (most of a large report's thousands of comparisons): the same numbers.
        p_value = float(2 * stdtr(df, -abs(estimate) / se))
        half = float(stdtrit(df, 0.5 + confidence / 2)) * se
    return Difference(
        estimate=estimate,
        se=se,
        df=df,
        low=estimate - half,
        high=estimate + half,
        p_value=p_value,
        se_seeds=math.sqrt(var_seeds),
        se_items=math.sqrt(var_items),
        seeds=seeds,
        n_items=items.n_items,
        n_tasks=items.n_tasks,
        seed_variance_estimated=estimated,
    )
