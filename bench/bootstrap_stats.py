"""Speed and coverage of the paired two-level bootstrap (reports.bootstrap), on synthetic data.

Prints JSON lines:
- ``speed``: seconds for the item draws of a Table-2-sized panel (settings x seeds runs over
  about 15,000 items in 57 tasks) and for one comparison;
- ``coverage``: over many simulated benchmarks whose true macro difference is known, the share of
  95% intervals that cover it, and the share of significant results when the true difference is
  zero; for the bootstrap as built and, for contrast, for the naive two-level bootstrap (resample
  seeds and items jointly, percentile interval), which counts the seed-by-item noise three times.

    python bench/bootstrap_stats.py                      # all regimes, 200 simulations each
    python bench/bootstrap_stats.py --simulations 500 --resamples 500
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from reports.bootstrap import (
    BootstrapConfig,
    Draws,
    Items,
    difference,
    item_draws,
    macro_weights,
    point_estimates,
)

REGIMES = {  # name: (seeds, items per task, seed-effect half-range, item-by-method half-range)
    "5 seeds, seed variance large": (5, (40, 80, 120, 60), 0.08, 0.10),
    "5 seeds, items only": (5, (40, 80, 120, 60), 0.0, 0.12),
    "5 seeds, 6 tasks x 300 items": (5, (300,) * 6, 0.03, 0.15),
    "3 seeds, seed variance large": (3, (40, 80, 120, 60), 0.08, 0.10),
    "2 seeds, seed variance large": (2, (50, 50, 50, 50), 0.10, 0.10),
}


def synthetic(rng, seeds, sizes, delta, seed_sd, item_sd):
    task_of = np.repeat(np.arange(len(sizes)), sizes)
    n = task_of.size
    p = rng.uniform(0.25, 0.75, n)
    u = rng.uniform(-item_sd, item_sd, n)

    def shift():
        return rng.uniform(-seed_sd, seed_sd, (seeds, len(sizes)))[:, task_of]

    a = (rng.random((seeds, n)) < p + shift()).astype(float)
    b = (rng.random((seeds, n)) < p + delta[task_of] + u + shift()).astype(float)
    return Items(task_of, macro_weights(len(sizes))), a, b


def built(items, a, b, config):
    ra, rb = item_draws(items, [a, b], config)
    result = difference(
        Draws(point_estimates(items, a), ra, True), Draws(point_estimates(items, b), rb, True), items, config
    )
    return result.low, result.high, result.significant()


def naive(items, a, b, config):
    """Seeds and items resampled together, percentile interval: the textbook two-level bootstrap."""
    ra, rb = item_draws(items, [a, b], config)
    d = ra - rb
    seeds = d.shape[0]
    rng = np.random.default_rng(config.seed)
    picks = rng.integers(0, seeds, size=(config.resamples, seeds))
    stats = d[picks, np.arange(config.resamples)[:, None]].mean(axis=1)
    low, high = np.quantile(stats, [0.025, 0.975])
    return low, high, low > 0 or high < 0


def coverage(regime, simulations, resamples):
    seeds, sizes, seed_sd, item_sd = REGIMES[regime]
    delta = np.linspace(-0.06, 0.09, len(sizes))
    truth = -delta.mean()
    out = {}
    for name, method in (("built", built), ("naive", naive)):
        rng = np.random.default_rng(2024)
        covered = false_claims = 0
        for k in range(simulations):
            config = BootstrapConfig(resamples=resamples, seed=k)
            low, high, _ = method(*synthetic(rng, seeds, sizes, delta, seed_sd, item_sd), config)
            covered += low <= truth <= high
            *_, significant = method(
                *synthetic(rng, seeds, sizes, np.zeros(len(sizes)), seed_sd, item_sd), config
            )
            false_claims += significant
        out[name] = {"coverage": covered / simulations, "false_positive_rate": false_claims / simulations}
    return {"kind": "coverage", "regime": regime, "simulations": simulations, "resamples": resamples, **out}


def speed(resamples):
    rng = np.random.default_rng(0)
    sizes = [250] * 27 + [300] * 30
    task_of = np.repeat(np.arange(len(sizes)), sizes)
    items = Items(task_of, macro_weights(len(sizes)))
    runs = [(rng.random((5, task_of.size)) < 0.4).astype(float) for _ in range(4)]
    config = BootstrapConfig(resamples=resamples)
    start = time.perf_counter()
    draws = item_draws(items, runs, config)
    drawn = time.perf_counter() - start
    start = time.perf_counter()
    difference(
        Draws(point_estimates(items, runs[0]), draws[0], True),
        Draws(point_estimates(items, runs[1]), draws[1], True),
        items,
        config,
    )
    return {
        "kind": "speed",
        "items": int(task_of.size),
        "tasks": len(sizes),
        "settings": 4,
        "seeds": 5,
        "resamples": resamples,
        "item_draws_s": round(drawn, 3),
        "one_comparison_s": round(time.perf_counter() - start, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=300, help="per simulated comparison")
    parser.add_argument("--speed-resamples", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(speed(args.speed_resamples)), flush=True)
    for regime in REGIMES:
        print(json.dumps(coverage(regime, args.simulations, args.resamples)), flush=True)


if __name__ == "__main__":
    main()
