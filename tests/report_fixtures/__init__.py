"""A run store written with the run store's own writers (metalora/runs/store.py), with known numbers.

Scores come from per-item correctness lists, so every task score, aggregate and per-sample record
agrees with the others exactly as in a real run; tests state the expected means by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from eval_tasks.records import write_records
from eval_tasks.registry import BENCHMARKS
from eval_tasks.results import Aggregate, EvalResult, TaskScore, aggregate_benchmark, mean, mean_stderr
from metalora.method_defaults import METHOD_OPTION_DEFAULTS
from metalora.runs.store import (
    SAMPLES_DIR,
    SAMPLES_SUFFIX,
    write_config,
    write_done,
    write_env,
    write_results,
    write_training_log,
)

BBH_TASKS = ("boolean_expressions", "date_understanding")
MMLU_SUBJECTS = ("abstract_algebra", "anatomy")
MODEL = "tiny-llama"


def pattern(right: int, total: int = 4) -> list[bool]:
    """``right`` correct answers out of ``total`` items, the correct ones first."""
    return [index < right for index in range(total)]


def bbh(*rights: int) -> dict[str, list[bool]]:
    return {task: pattern(right) for task, right in zip(BBH_TASKS, rights)}


def mmlu(*rights: int) -> dict[str, list[bool]]:
    return {task: pattern(right) for task, right in zip(MMLU_SUBJECTS, rights)}


def eval_result(correct: Mapping[str, Mapping[str, Sequence[bool]]]) -> EvalResult:
    scores: list[TaskScore] = []
    aggregates: list[Aggregate] = []
    for benchmark, tasks in correct.items():
        spec = BENCHMARKS[benchmark]
        metric = spec.metrics[0]
        per_item = {task: {metric: [float(c) for c in items]} for task, items in tasks.items()}
        bench_scores = [
            TaskScore(
                benchmark,
                task,
                spec.task_name(task),
                {metric: mean(values[metric])},
                {metric: mean_stderr(values[metric])},
                len(values[metric]),
                len(values[metric]),
                "1.0",
                "0" * 64,
            )
            for task, values in per_item.items()
        ]
        scores += bench_scores
        aggregates += aggregate_benchmark(
            benchmark, (metric,), bench_scores, per_item, spec.unit, spec.categories
        )
    return EvalResult(
        run_label="fixture",
        benchmarks=tuple(correct),
        protocols={b: BENCHMARKS[b].protocol for b in correct},
        tasks=tuple(scores),
        aggregates=tuple(aggregates),
        versions={"lm_eval": "0.4.13"},
        data_root="/data",
        data_files={},
        settings={"batch_size": 1},
    )


def records(correct: Mapping[str, Sequence[bool]], text: str = "") -> list[dict]:
    return [
        {
            "task": task,
            "doc_id": index,
            "prompt": f"Question {index} of {task}? {text}",
            "target": "yes",
            "output": f"answer {index} {text}",
            "prediction": "yes" if right else "no",
            "gold": "yes",
            "correct": right,
            "metrics": {"exact_match": float(right)},
        }
        for task, items in correct.items()
        for index, right in enumerate(items)
    ]


def write_run(
    store: Path,
    run_id: str,
    *,
    method: str,
    seed: int = 0,
    shots: int | str | None = 50,
    correct: Mapping[str, Mapping[str, Sequence[bool]]],
    model: str = MODEL,
    scenario: str = "multitask",
    tasks: Sequence[str] = ("strategyqa", "gsm8k"),
    held_out: Sequence[str] = (),
    profile: str = "full",
    method_options: Mapping | None = None,
    done: bool = True,
    sample_text: str = "",
    losses: Sequence[float] = (),
    differs_from_defaults: Mapping | None = None,
) -> Path:
    folder = store / run_id
    (folder / SAMPLES_DIR).mkdir(parents=True)
    options = dict(method_options or {})
    if method == "metalora":  # written out, as a sweep that names every option would
        options = dict(METHOD_OPTION_DEFAULTS["metalora"]) | options
    config = {
        "method": method,
        "model": model,
        "scenario": scenario,
        "tasks": list(tasks),
        "held_out_languages": list(held_out),
        "shots": None if method == "base" else shots,
        "full_cap": 1000,
        "train": {
            "rank": 16,
            "alpha": 32,
            "dropout": 0.05,
            "target_modules": ["gate_proj"],
            "steps": 10,
            "epochs": 1,
            "lr": 2e-4,
            "weight_decay": 0.0,
            "lr_schedule": "cosine",
            "warmup_steps": 0,
            "batch_size": 4,
            "max_seq_len": 256,
            "seed": seed,
        },
        "method_options": options,
        "benchmarks": list(correct),
        "eval_limit": None,
        "max_gen_tokens": None,
        "dtype": "float32",
        "profile": profile,
    }
    write_config(
        folder,
        run_id,
        config,
        {"bbh/boolean_expressions.json": "ab" * 32},
        "/data",
        created=f"2025-01-01T00:00:{int(run_id[-2:], 16) % 60:02d}",
        differs_from_defaults=differs_from_defaults,
    )
    write_env(
        folder,
        {
            "packages": {"torch": "2.13.0"},
            "python": "3.11",
            "platform": "linux",
            "code_revision": "deadbeef",
            "code_dirty": False,
            "device": "cpu",
            "dtype": "float32",
            "model_source": {"name": model, "kind": "builtin", "path": "", "identity": "x"},
        },
    )
    if losses:
        write_training_log(folder, [{"step": step, "loss": loss, "lr": 1e-4} for step, loss in enumerate(losses, 1)])
    if done:
        write_results(folder, eval_result(correct).to_json())
        for benchmark, tasks_correct in correct.items():
            write_records(
                folder / SAMPLES_DIR / f"{benchmark}{SAMPLES_SUFFIX}", records(tasks_correct, sample_text)
            )
        write_done(folder, {}, finished="2025-01-02T00:00:00")
    return folder


def rid(number: int) -> str:
    return f"{number:016x}"


def standard_store(store: Path) -> Path:
    """Base model, LoRA and MeTA-LoRA at two budgets over seeds, a k ablation, a multilingual pair,
    a smoke run and an unfinished run. Expected numbers are spelled out in tests/test_report_tables.py."""
    store.mkdir(parents=True, exist_ok=True)
    write_run(store, rid(1), method="base", correct={"bbh": bbh(1, 2), "mmlu": mmlu(2, 2)})
    for seed, (b1, b2, m1, m2) in enumerate([(2, 2, 2, 2), (3, 2, 2, 3), (3, 3, 3, 3)]):  # BBH 50, 62.5, 75
        write_run(
            store,
            rid(10 + seed),
            method="lora",
            seed=seed,
            correct={"bbh": bbh(b1, b2), "mmlu": mmlu(m1, m2)},
            losses=[2.0, 1.5, 1.2],
        )
    for seed, (b1, b2) in enumerate([(3, 2), (3, 3), (4, 3)]):  # BBH 62.5, 75, 87.5
        write_run(
            store,
            rid(20 + seed),
            method="metalora",
            seed=seed,
            correct={"bbh": bbh(b1, b2), "mmlu": mmlu(3, 3)},
            losses=[2.0, 1.4, 1.0],
        )
    for seed, (b1, b2) in enumerate([(1, 1), (2, 2)]):  # 10 per task: lora 25, 50; metalora 37.5, 62.5
        write_run(store, rid(30 + seed), method="lora", seed=seed, shots=10, correct={"bbh": bbh(b1, b2)})
        write_run(
            store, rid(40 + seed), method="metalora", seed=seed, shots=10, correct={"bbh": bbh(b1 + 1, b2)}
        )
    write_run(
        store,
        rid(50),
        method="metalora",
        seed=0,
        method_options={"inner_steps": 1},
        correct={"bbh": bbh(2, 3), "mmlu": mmlu(2, 2)},
    )  # k = 1: BBH 62.5, one seed
    for seed, rights in enumerate([(3, 2, 1), (4, 2, 2)]):  # xcopa et, id seen; sw held out
        write_run(
            store,
            rid(60 + seed),
            method="metalora",
            seed=seed,
            scenario="multilingual",
            tasks=("xcopa_et", "xcopa_id"),
            held_out=("sw",),
            correct={"xcopa": {lang: pattern(r) for lang, r in zip(("et", "id", "sw"), rights)}},
        )
    write_run(store, rid(70), method="lora", seed=0, shots=10, profile="smoke", correct={"bbh": bbh(4, 4)})
    write_run(store, rid(80), method="metalora", seed=0, shots=100, correct={"bbh": bbh(4, 4)}, done=False)
    return store


# Would change the page if it ever ran: as a script, as an event handler, or by breaking out of an
# attribute with either quote. The "$x^$" would also break matplotlib if it parsed mathtext.
PAYLOAD = (
    """<script>document.title="pwned";window.pwned=1</script><img src=x onerror="window.pwned=1">'" x=$x^$"""
)


def hostile_store(store: Path) -> Path:
    """Model, task and sample text carrying markup and quotes."""
    store.mkdir(parents=True, exist_ok=True)
    correct = {"bbh": {"boolean_expressions": pattern(2), PAYLOAD: pattern(1)}}
    for seed in (0, 1):
        write_run(
            store,
            rid(100 + seed),
            method="lora",
            seed=seed,
            model=PAYLOAD,
            correct=correct,
            sample_text=PAYLOAD,
            losses=[1.0, 0.5],
        )
    write_run(store, rid(110), method="base", model=PAYLOAD, correct=correct, sample_text=PAYLOAD)
    return store
