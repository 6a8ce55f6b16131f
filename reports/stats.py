"""Confidence intervals for a mean, by Student's t distribution.

For values x_1..x_n (one per seed, or one per item for a paired difference):
mean = sum(x) / n, s = sqrt(sum((x - mean)^2) / (n - 1)), and the 95% interval is
mean ± t(0.975, n - 1) * s / sqrt(n). With one value there is no spread to estimate, so the
interval is "not available" (None), never a zero-width interval that would look certain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.special import stdtrit  # Student's t quantile: what scipy.stats.t.ppf calls, without its overhead

CONFIDENCE = 0.95
FORMULA = (
    "mean ± t(0.975, n−1) · s / √n, where s is the sample standard deviation (n−1 in the denominator) "
    "and t the Student t quantile; not available (n/a) when n = 1"
)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None when n < 2
    high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, None, None, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    Sorted ascending, p_(j) is multiplied by (m − j + 1) and the running maximum taken, capped at 1;
    rejecting where the adjusted value is below alpha controls the family-wise error at alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


MDD_FORMULA = (
    "MDD = (t(1 − α/2, ν) + t(power, ν)) · SE, with α = 0.05 two-sided, power 0.8, SE the bootstrap "
    "standard error of a paired difference at the seeds run and ν its degrees of freedom "
    "(for large ν: 2.80 · SE)"
)


def minimum_detectable_difference(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true difference a two-sided test at ``alpha`` detects with probability ``power``.

    A true difference δ gives an estimate centred on δ with standard error SE; the test rejects when
    |estimate| > t(1 − α/2) · SE, which for δ = MDD happens with probability ``power`` (neglecting
    the far tail).
    """
    return float(stdtrit(df, 1 - alpha / 2) + stdtrit(df, power)) * se
