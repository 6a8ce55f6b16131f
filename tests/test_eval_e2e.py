"""End to end on the real SmolLM2-135M-Instruct: every benchmark and variant, a few items each.

Cost on a 2-core CPU is dominated by long few-shot contexts, so each benchmark runs a handful of
its shortest tasks (covering each answer kind once) with two items per task.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eval_tasks.records import read_records
from eval_tasks.registry import BENCHMARKS
from metalora.data.root import DataRoot, resolve_data_root

pytestmark = pytest.mark.e2e

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
LIMIT = 2
SUBTASKS = {
    "heldout": ["strategyqa", "xcopa_et", "gsm8k"],
    "bbh": ["boolean_expressions", "hyperbaton", "dyck_languages", "sports_understanding"],
    "bbh_cot": ["sports_understanding", "boolean_expressions"],
    "bbh_mc": ["boolean_expressions", "sports_understanding", "hyperbaton"],
    "mmlu": ["world_religions", "management", "conceptual_physics", "high_school_geography"],
    "mmlu_5shot": ["world_religions", "management", "conceptual_physics", "high_school_geography"],
    "xcopa": list(BENCHMARKS["xcopa"].subtasks),
    "xwinograd": list(BENCHMARKS["xwinograd"].subtasks),
    "mgsm": ["en", "de", "zh"],
}
GENERATED = {"output", "prediction", "gold"}
SCORED = {"target_text", "choices", "scores", "prediction"}


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="module")
def run(tmp_path_factory, root):
    from eval_tasks.harness import evaluate
    from metalora.models import load_model

    loaded = load_model("smollm2-135m", device="cpu")
    output_dir = tmp_path_factory.mktemp("e2e-run")
    result = evaluate(
        loaded.model,
        loaded.tokenizer,
        list(BENCHMARKS),
        data_root=root,
        limit=LIMIT,
        max_gen_tokens=64,
        batch_size=8,
        output_dir=output_dir,
        run_label="e2e-smollm2",
        subtasks=SUBTASKS,
    )
    for aggregate in result.aggregates:
        if aggregate.name == "micro":
            print(f"{aggregate.benchmark:11s} {aggregate.metric:12s} {aggregate.value:.3f} on {aggregate.n_items} items")
    return result, output_dir


@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_every_benchmark_writes_complete_records(run, benchmark):
    result, output_dir = run
    spec = BENCHMARKS[benchmark]
    records = read_records(output_dir / "samples" / f"{benchmark}.jsonl.gz")
    assert result.sample_files[benchmark] == str(output_dir / "samples" / f"{benchmark}.jsonl.gz")
    assert len(records) == LIMIT * len(SUBTASKS[benchmark])
    assert sorted({record["task"] for record in records}) == sorted(SUBTASKS[benchmark])
    for record in records:
        assert {"task", "doc_id", "prompt", "target", "correct", "metrics"} <= set(record)
        generated = spec.generative and (benchmark != "heldout" or record["task"] == "gsm8k")
        assert (GENERATED if generated else SCORED) <= set(record)
        assert set(record["metrics"]) == set(spec.metrics)
        assert record["correct"] == (record["metrics"][spec.metrics[0]] == 1.0)
    scores = [score for score in result.tasks if score.benchmark == benchmark]
    assert [score.n_evaluated for score in scores] == [LIMIT] * len(SUBTASKS[benchmark])
    assert all(score.n_available == spec.item_counts[score.task] for score in scores)
    micro = result.aggregate(benchmark, "micro")
    assert micro.value == pytest.approx(sum(r["correct"] for r in records) / len(records))


def test_answer_only_outputs_of_a_real_model_normalise_into_the_answer_set(run):
    _, output_dir = run
    records = read_records(output_dir / "samples" / "bbh.jsonl.gz")
    kinds = {
        "boolean_expressions": {"true", "false"},
        "sports_understanding": {"yes", "no"},
        "hyperbaton": {"(A)", "(B)"},
    }
    for record in records:
        if record["task"] in kinds:
            # SmolLM2 answers " False", " (A)", " yes": the leading space and case are normalised away.
            assert record["prediction_normalized"] in kinds[record["task"]], record["output"]


def test_the_run_records_its_provenance(run, root):
    result, _ = run
    assert result.settings["max_gen_tokens"] == {"bbh": 64, "bbh_cot": 64, "heldout": 64, "mgsm": 64}  # heldout: GSM8K
    assert result.settings["subtasks"]["mgsm"] == ["en", "de", "zh"]
    assert "bbh/cot-prompts/boolean_expressions.txt" in result.data_files
    assert "xwinograd/dataset.tsv" in result.data_files
    assert result.data_root == str(root.path)
