"""Project a sweep's run time from measured runs: the cost model of ``mlbench sweep --dry-run``'s
estimate (``metalora.runs.estimate``: per method key, profile and model the median seconds per
example pass; per method key, profile, model and evaluation the median rest of a run, model load,
evaluation and saving, every method's median for a method without finished runs of its own),
applied to every run of CONFIG's plan, done or not.

The measured runs need not be in the config's plan (a copy of it with fewer seeds, say); their
store may hold run folders one level deeper too (bench stores copy them under
``<setting>/<run id>/``); ``--copies`` reads copies of run folders that kept their JSON files only
(no ``DONE``: a folder counts once its cost.json has ``time.total_s``, written just before ``DONE``).
Runs evaluated with another ``eval_limit`` than the config's evaluate
less: they are refused (exit code 2) unless ``--allow-eval-limit``, and then the output says that
evaluation time is underestimated. Prints the rates used, each group of runs (method key and
shots: count, passes, seconds each), the total run time and with ``--workers W`` the wall time
(total / W, if the measured runs ran with as many workers per GPU); ``--out`` writes it as JSON.

Usage:
  MLBENCH_DATA_DIR=../shared/data python bench/sweep_projection.py configs/table2.yaml \
      --measured bench/results/some_store --profile full --workers 8 [--out projection.json]
  python bench/sweep_projection.py configs/table2.yaml --profile full --workers 4 --copies \
      --measured bench/results/gpu_h200x2_session14_deeaeb5/runs_full   # the README's projection
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.display import plural, seconds
from metalora.runs.estimate import estimate, finished_runs, measured_rates, planned_runs
from metalora.runs.runconfig import ExecutionOptions
from metalora.runs.sweep import prepare_sweep


def plan(config: str, profile: str | None, device: str | None) -> list:
    """The config's runs as ``mlbench sweep`` plans them: ``profile`` over every run's, else runs
    that name none get the machine's (quick on a CPU-only one, full with a GPU)."""
    from metalora.cli import load_sweep_with_profile

    loaded, said = load_sweep_with_profile(config, profile, device)
    if said:
        print(said)
    return planned_runs(prepare_sweep(loaded, ExecutionOptions(device=device)))


def limit_text(limit) -> str:
    return "all items" if limit is None else f"the first {limit} items"


def shots_order(shots) -> tuple:
    return (1, 0) if shots == "full" else (0, shots or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--measured", type=Path, required=True, help="store of finished runs (run folders at depth 1 or 2)")
    parser.add_argument("--workers", type=int, default=1, help="workers sharing the runs: also print total / W")
    parser.add_argument("--profile", default=None, help="every run's profile, as mlbench sweep --profile")
    parser.add_argument("--device", default=None, help="plan for this device (default: this machine's)")
    parser.add_argument("--copies", action="store_true",
                        help="the run folders are copies without DONE (finished: cost.json has time.total_s)")
    parser.add_argument("--allow-eval-limit", action="store_true",
                        help="project from runs evaluated with another eval_limit (underestimates evaluation)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.workers < 1:
        parser.exit(2, f"--workers must be 1 or more, not {args.workers}\n")

    try:
        runs = plan(args.config, args.profile, args.device)
    except MlbenchError as error:
        parser.exit(2, f"{error}\n")
    measured = finished_runs(args.measured, depth=2, require_done=not args.copies)
    if not measured:
        marker = "config.json and a cost.json with time.total_s" if args.copies else "DONE, config.json, cost.json"
        parser.exit(2, f"{args.measured}: no finished run ({marker}) at depth 1 or 2\n")

    # Evaluation time depends on eval_limit: measured runs must evaluate like the planned runs of their profile and model.
    planned_limits: dict[tuple, set] = {}
    for run in runs:
        planned_limits.setdefault((run.profile, run.model), set()).add(run.evaluation[1])
    other = [run for run in measured if (run.profile, run.model) in planned_limits
             and run.eval_limit not in planned_limits[(run.profile, run.model)]]
    underestimated = None
    if other:
        limits = sorted({limit_text(run.eval_limit) for run in other})
        wanted = sorted({limit_text(limit) for limits_ in planned_limits.values() for limit in limits_})
        said = (f"{plural(len(other), 'measured run')} evaluated {', '.join(limits)} per task, the config's runs "
                f"{', '.join(wanted)}")
        if not args.allow_eval_limit:
            print(f"{args.measured}: {said}: their evaluation time is not the config's; --allow-eval-limit to project "
                  "from them anyway", file=sys.stderr)
            sys.exit(2)
        underestimated = f"evaluation time is underestimated: {said}"
        print(underestimated)
        ours = {key: next(iter(found)) for key, found in planned_limits.items() if len(found) == 1}
        measured = [replace(run, evaluation=(run.evaluation[0], ours[(run.profile, run.model)]))
                    if run in other and (run.profile, run.model) in ours else run for run in measured]

    rates = measured_rates(measured)
    projected = estimate(runs, rates)
    print(f"{args.config}: {plural(len(runs), 'run')}; measured: {plural(len(measured), 'finished run')} in {args.measured}")
    print("seconds per example pass (training_s / example_passes, median):")
    for (key, profile, model), rate in sorted(rates.per_pass.items()):
        print(f"  {key}, {profile}, {model}: {rate.seconds:.5f} s per pass ({plural(rate.runs, 'run')})")
    print("rest of a run (total_s - training_s: model load, evaluation, saving; median per method, and over every method):")
    for (key, profile, model, (benchmarks, limit)), rate in sorted(rates.rest.items(), key=str):
        print(f"  {key or 'every method'}, {profile}, {model}, {', '.join(benchmarks or ())} ({limit_text(limit)}): "
              f"{seconds(rate.seconds)} ({plural(rate.runs, 'run')})")

    groups: dict[tuple, list] = {}
    for found in projected.runs:
        run = found.run
        groups.setdefault((run.key, run.profile, run.model, run.shots, run.passes, found.lacks), []).append(found)
    rows = []
    for (key, profile, model, shots, passes, lacks), found in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1], item[0][2], shots_order(item[0][3]), item[0][4])):
        each = found[0].seconds
        rows.append({"method": key, "profile": profile, "model": model, "shots": shots, "runs": len(found),
                     "passes": passes, "seconds_each": each, "seconds": None if each is None else each * len(found),
                     "none_recorded": lacks})
    print("projected run time (method key, shots: runs x seconds each):")
    for row in rows:
        what = f"  {row['method']}, {row['profile']}, shots {'-' if row['shots'] is None else row['shots']}: " \
               f"{row['runs']} x {row['passes']:,} passes"
        print(what + (f": none recorded ({row['none_recorded']})" if row["none_recorded"] else
                      f": {seconds(row['seconds_each'])} each, {seconds(row['seconds'])}"))
    total = (f"total: {seconds(projected.total_s)} of run time for {plural(projected.estimated, 'run')}"
             + (f" of {len(runs)}; none recorded for {plural(sum(projected.missing.values()), 'run')} "
                f"({', '.join(projected.missing)})" if projected.missing else ""))
    print(total)
    if args.workers > 1:
        print(f"with {args.workers} workers: about {seconds(projected.wall_s(args.workers))} of wall time, if the "
              "measured runs ran with as many workers per GPU")

    if args.out:
        record = {
            "config": args.config, "profile": args.profile, "measured": str(args.measured),
            "measured_runs": len(measured), "workers": args.workers,
            "evaluation_underestimated": underestimated,
            "per_pass": [{"method": key, "profile": profile, "model": model, "seconds_per_pass": rate.seconds,
                          "runs": rate.runs} for (key, profile, model), rate in sorted(rates.per_pass.items())],
            "rest": [{"method": key, "profile": profile, "model": model, "benchmarks": list(benchmarks or ()),
                      "eval_limit": limit, "seconds": rate.seconds, "runs": rate.runs}
                     for (key, profile, model, (benchmarks, limit)), rate in sorted(rates.rest.items(), key=str)],
            "groups": rows, "runs": len(runs), "runs_estimated": projected.estimated,
            "none_recorded": projected.missing, "total_s": projected.total_s,
            "wall_s": projected.wall_s(args.workers),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
