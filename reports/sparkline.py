"""A run's training loss as a small inline SVG line, drawn without matplotlib.

Every run page shows one, so it must cost next to nothing: a matplotlib figure per run took most
of a 2,000-run report's time and a fifth of its size. The line is a polyline of at most
``MAX_POINTS`` points (evenly thinned), scaled into a fixed box; only numbers reach the markup.
Non-finite losses are left out and counted, so a run that diverged says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 320.0, 80.0, 2.0
MAX_POINTS = 200


@dataclass(frozen=True)
class Sparkline:
    points: str  # SVG polyline points, "x,y x,y ..."
    width: float
    height: float
    first_step: int
    last_step: int
    low: float
    high: float
    first: float
    last: float
    non_finite: int  # logged losses that were NaN or infinite (not drawn)


def sparkline(series: Mapping[int, float]) -> Sparkline | None:
    steps = sorted(series)
    finite = [(step, series[step]) for step in steps if math.isfinite(series[step])]
    if not finite:
        return None
    stride = max(1, math.ceil(len(finite) / MAX_POINTS))
    drawn = finite[::stride]
    if drawn[-1] != finite[-1]:
        drawn.append(finite[-1])
    low, high = min(v for _, v in finite), max(v for _, v in finite)
    x0, x1 = finite[0][0], finite[-1][0]
    span_x, span_y = (x1 - x0) or 1, (high - low) or 1.0

    def x(step: int) -> float:
        return PAD + (step - x0) / span_x * (WIDTH - 2 * PAD)

    def y(value: float) -> float:
        return PAD + (high - value) / span_y * (HEIGHT - 2 * PAD)

    return Sparkline(
        points=" ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in drawn),
        width=WIDTH,
        height=HEIGHT,
        first_step=x0,
        last_step=x1,
        low=low,
        high=high,
        first=finite[0][1],
        last=finite[-1][1],
        non_finite=len(steps) - len(finite),
    )
