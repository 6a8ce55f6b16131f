"""How long `mlbench report` takes over a large store, and how much it writes.

Builds a SYNTHETIC run store (made-up scores, for timing only: never a result) of N finished runs
in the layout metalora/store.py writes: config.json, env.json, training_log.jsonl (100 steps),
cost.json, eval/results.json with BBH (27 tasks) and MMLU (57 subjects), per-sample records of one
item per task (as the quick profile evaluates), and DONE. Settings vary model, method, data budget,
learning rate and seed (5 seeds each), so the leaderboard has about N / 5 rows. Then it times
`mlbench ls` through the real CLI in a fresh interpreter (start-up included), without an index (the
folders are read) and with one (after `mlbench store rebuild`), builds the report twice (the second build
reuses the pages whose inputs did not change) and prints the wall times, the number of files and
the bytes written.

With ``--before REV`` the report is also built by the code of git revision REV (exported to a
temporary folder), alternating with this checkout's at the same moment, so the two are measured under
the same load; ``--json FILE`` writes every figure, with the load averages, to FILE.

    python bench/report_scale.py                 # 2,000 runs in a temporary folder
    python bench/report_scale.py --runs 500 --keep /tmp/scale   # keep store and site to look at
    python bench/report_scale.py --before 839532d --json bench/results/report_scale.json
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_tasks.registry import BENCHMARKS
from eval_tasks.results import EvalResult, TaskScore, aggregate_benchmark, mean, mean_stderr

MODELS = ("synthetic-135m", "synthetic-1b")
METHODS = ("lora", "hydralora", "metalora")
SHOTS = (10, 25, 50, 100, "full")
SEEDS = (0, 1, 2, 3, 4)
LEARNING_RATES = tuple(round(1e-4 * (1 + i), 6) for i in range(40))
STEPS = 100
BENCHMARKS_USED = ("bbh", "mmlu")


def plan(n: int) -> list[dict]:
    grid = itertools.product(LEARNING_RATES, MODELS, METHODS, SHOTS, SEEDS)
    return [
        {"model": m, "method": method, "shots": shots, "seed": seed, "lr": lr}
        for lr, m, method, shots, seed in itertools.islice(grid, n)
    ]


def config(point: dict) -> dict:
    return {
        "method": point["method"],
        "model": point["model"],
        "scenario": "multitask",
        "tasks": ["strategyqa", "social_iqa", "logical_fallacy_detection", "vitaminc_fact_verification", "gsm8k"],
        "held_out_languages": [],
        "shots": point["shots"],
        "full_cap": 1000,
        "train": {
            "rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["gate_proj", "up_proj", "down_proj"],
            "steps": STEPS, "epochs": None, "lr": point["lr"], "weight_decay": 0.0, "lr_schedule": "cosine",
            "warmup_steps": 0, "batch_size": 8, "max_seq_len": 512, "seed": point["seed"],
        },
        "method_options": {"num_heads": 4} if point["method"] == "hydralora" else {},
        "benchmarks": list(BENCHMARKS_USED),
        "eval_limit": 1,
        "max_gen_tokens": None,
        "dtype": "bfloat16",
        "profile": "full",
    }


def write_run(store: Path, number: int, point: dict, rng: random.Random) -> None:
    run_id = f"{number:016x}"
    folder = store / run_id
    (folder / "eval" / "samples").mkdir(parents=True)
    skill = rng.uniform(0.2, 0.5)
    scores, aggregates = [], []
    for benchmark in BENCHMARKS_USED:
        spec = BENCHMARKS[benchmark]
        metric = spec.metrics[0]
        per_item = {task: {metric: [float(rng.random() < skill)]} for task in spec.subtasks}
        bench_scores = [
            TaskScore(benchmark, task, spec.task_name(task), {metric: mean(v[metric])},
                      {metric: mean_stderr(v[metric])}, 1, spec.item_counts.get(task, 1), "1.0", "0" * 64)
            for task, v in per_item.items()
        ]
        scores += bench_scores
        aggregates += aggregate_benchmark(benchmark, (metric,), bench_scores, per_item, spec.unit, spec.categories)
        records = [
            {"task": task, "doc_id": 0, "prompt": f"Synthetic question of {task}? " * 8,
             "target": 0, "target_text": "A", "choices": ["A", "B", "C", "D"], "scores": [-1.0, -2.0, -3.0, -4.0],
             "prediction": 0 if v[metric][0] else 1, "correct": bool(v[metric][0]),
             "metrics": {metric: v[metric][0]}}
            for task, v in per_item.items()
        ]
        with gzip.open(folder / "eval" / "samples" / f"{benchmark}.jsonl.gz", "wt", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in records)
    result = EvalResult("synthetic", BENCHMARKS_USED, {}, tuple(scores), tuple(aggregates),
                        {"lm_eval": "synthetic"}, "/synthetic", {}, {"batch_size": 8})
    (folder / "eval" / "results.json").write_text(result.to_json())
    (folder / "config.json").write_text(json.dumps({
        "run_id": run_id, "created": f"2026-01-01T00:{number // 60 % 60:02d}:{number % 60:02d}",
        "data_hashes": {f"synthetic/file{i}.json": f"{i:064x}" for i in range(10)}, "config": config(point)}))
    (folder / "env.json").write_text(json.dumps({"packages": {"torch": "2.13.0"}, "code_revision": "synthetic",
                                                 "device": "cuda", "dtype": "bfloat16"}))
    loss = 2.5
    with open(folder / "training_log.jsonl", "w") as log:
        for step in range(1, STEPS + 1):
            loss *= rng.uniform(0.97, 1.0)
            log.write(json.dumps({"step": step, "loss": loss, "lr": point["lr"]}) + "\n")
    (folder / "cost.json").write_text(json.dumps({
        "training": {"budget_rule": "matched_updates", "outer_updates": STEPS, "example_passes": 800 * (1 + number % 3),
                     "tokens": 64000, "trainable_parameters": 1_600_000, "min_epochs": 1.0},
        "time": {"model_load_s": 2.0, "training_s": 60.0, "eval_s": {"bbh": 5.0, "mmlu": 5.0}, "total_s": 72.0,
                 "cpu_s": 80.0, "device_s": 70.0}}))
    headline = {f"{a.benchmark}/{a.metric}": a.value for a in aggregates if a.name == "macro"}
    (folder / "DONE").write_text(json.dumps({"finished": "2026-01-02T00:00:00", "headline": headline}))


REPO = Path(__file__).resolve().parents[1]
BUILD = "import sys; from pathlib import Path; from reports.site import build_report; build_report(Path(sys.argv[1]), Path(sys.argv[2]))"


def timed(command: list[str], code: Path) -> dict:
    """Wall and CPU seconds (the process and its children: the report's render processes) of one
    command in a new interpreter with ``code`` first on the path, as a person runs it (on a shared
    machine the CPU time is the steadier figure), and the load average just before it."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *command], check=False, cwd=code, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(elapsed, 2), "cpu_s": round(cpu, 2), "load_1min": round(load, 2)}


def cli(store: Path, code: Path, *command: str) -> dict:
    return timed(["-m", "metalora.cli", *command, "--store", str(store)], code)


def said(figures: dict) -> str:
    return f"{figures['wall_s']:.2f} s wall, {figures['cpu_s']:.2f} s CPU (load {figures['load_1min']:.1f})"


def size_of(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def export_revision(revision: str, into: Path) -> Path:
    """The code of ``revision`` (what the report imports) in a folder of its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "metalora", "eval_tasks", "reports"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def revision_of(revision: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], check=True,
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="write store/ and site/ here and keep them")
    parser.add_argument("--before", help="also build the report with the code of this git revision, alternating")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="report-scale-"))
    store = root / "store"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "metalora", "eval_tasks", "reports"],
                           check=False, capture_output=True, text=True).stdout.strip()
    figures: dict = {
        "runs": args.runs, "cpus": os.cpu_count(), "machine": os.uname().machine,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "code": {"after": revision_of("HEAD") + (" with uncommitted changes" if dirty else "")},
        "ls": {}, "report": {},
    }
    codes = {"after": REPO}
    try:
        if args.before:
            figures["code"]["before"] = revision_of(args.before)
            codes = {"before": export_revision(args.before, root / "before-code"), "after": REPO}
        if not store.is_dir():
            rng = random.Random(0)
            started = time.perf_counter()
            for number, point in enumerate(plan(args.runs), start=1):
                write_run(store, number, point, rng)
            print(f"synthetic store: {args.runs} runs written in {time.perf_counter() - started:.1f} s")
        (store / "index.sqlite").unlink(missing_ok=True)
        ls = figures["ls"]
        ls["no_index"] = cli(store, REPO, "ls")
        print(f"mlbench ls over {args.runs} runs, no index (folders read): {said(ls['no_index'])}")
        ls["store_rebuild"] = cli(store, REPO, "store", "rebuild")
        print(f"mlbench store rebuild over {args.runs} runs: {said(ls['store_rebuild'])}")
        for attempt in ("first", "second"):
            ls[f"with_index_{attempt}"] = cli(store, REPO, "ls")
            print(f"mlbench ls over {args.runs} runs with the index, {attempt}: {said(ls[f'with_index_{attempt}'])}")
        for name in codes:
            shutil.rmtree(root / f"site-{name}", ignore_errors=True)  # a first build starts from nothing
        for attempt in ("first", "second"):  # the second reuses what did not change since the first
            for name, code in codes.items():  # before and after alternate: the same load for both
                site = root / f"site-{name}"
                build = timed(["-c", BUILD, str(store), str(site)], code)
                files, size = size_of(site)
                build |= {"files": files, "mb": round(size / 1e6, 1)}
                figures["report"].setdefault(name, {})[attempt] = build
                print(f"report over {args.runs} runs, {name} ({figures['code'][name]}), {attempt} build: "
                      f"{said(build)}, {files} files, {size / 1e6:.1f} MB")
        for part in sorted((root / "site-after").iterdir()):
            if part.is_dir():
                count, bytes_ = size_of(part)
                print(f"  {part.name}/: {count} files, {bytes_ / 1e6:.1f} MB")
        figures["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"figures written to {args.json}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            shutil.rmtree(root / "before-code", ignore_errors=True)


if __name__ == "__main__":
    main()
