"""The training-task layer on the real data mirror: counts, budgets, and train/eval disjointness."""

import pytest

from metalora.data.bbh import BBH_TASKS, bbh_items
from metalora.data.budgets import load_budgets, parse_shots, task_seed
from metalora.data.mmlu import MMLU_SUBJECTS, mmlu_rows
from metalora.data.registry import TRAINING_TASKS, TaskSplit, get_task
from metalora.data.scenarios import SCENARIOS, scenario_tasks
from metalora.provenance import sha256_text

# (training pool, held-out) per task on shared/data: BIG-bench 80/20 by prompt hash, GSM8K
# train/test, XCOPA validation/test (xcopa_th's test file holds one prompt twice).
EXPECTED_SPLITS = {
    "strategyqa": (1811, 479),
    "social_iqa": (1546, 408),
    "logical_fallacy_detection": (2265, 535),
    "vitaminc_fact_verification": (43761, 10907),
    "winowhy": (2283, 582),
    "implicatures": (379, 113),
    "presuppositions_as_nli": (588, 147),
    "timedial": (2018, 532),
    "epistemic_reasoning": (1605, 395),
    "play_dialog_same_or_different": (2600, 664),
    "metaphor_boolean": (535, 145),
    "question_selection": (1281, 309),
    "gsm8k": (7473, 1319),
    **{f"xcopa_{lang}": (100, 500) for lang in ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")},
}


@pytest.fixture(scope="module")
def splits(data_root):
    return {name: spec.load(data_root) for name, spec in TRAINING_TASKS.items()}


def test_every_task_yields_the_documented_counts(splits):
    assert {name: (len(s.train), len(s.held_out)) for name, s in splits.items()} == EXPECTED_SPLITS


def test_examples_are_well_formed(splits):
    strategy = splits["strategyqa"].train[0]
    assert strategy.prompt == "\nQ: Is it common to see frost during some college commencements?\nA: "
    assert strategy.target == "Yes" and strategy.choices == ("Yes", "No") and strategy.answer_index == 0
    social = splits["social_iqa"].train[0]
    assert "\n  choice: " in social.prompt  # append_choices_to_input
    assert splits["gsm8k"].train[0].meta["final_answer"] == "72"
    for split in splits.values():
        for example in split.train[:50]:
            assert example.target
            if example.choices:
                assert example.choices[example.answer_index] == example.target


def test_training_never_overlaps_evaluation_on_prompt_hashes(splits, data_root):
    for name, split in splits.items():
        assert not {e.prompt_hash for e in split.train} & {e.prompt_hash for e in split.held_out}, name
    # Across benchmarks: the raw question text of every BIG-bench / GSM8K training item against
    # every BBH and MMLU evaluation item.
    def norm(text):
        return sha256_text(" ".join(text.split()).lower())

    evaluation = {norm(item["input"]) for task in BBH_TASKS for item in bbh_items(data_root, task)}
    evaluation |= {norm(row["question"]) for subject in MMLU_SUBJECTS for row in mmlu_rows(data_root, subject)}
    assert len(evaluation) > 20000
    for name, split in splits.items():
        raw = {norm(e.meta.get("input", e.prompt)) for e in split.train}
        assert not raw & evaluation, name


def test_split_drops_training_items_that_are_also_held_out():
    from metalora.data.example import Example

    train = [Example("t", "a", "x"), Example("t", "b", "x")]
    split = TaskSplit(train=train, held_out=[Example("t", "b", "y")])
    assert [e.prompt for e in split.train] == ["a"]


def test_budgets_are_seeded_exact_and_independent_per_task(data_root):
    tasks = scenario_tasks("multitask")
    first = load_budgets(data_root, tasks, 25, seed=0)
    again = load_budgets(data_root, tasks, 25, seed=0)
    other = load_budgets(data_root, tasks, 25, seed=1)
    assert [len(b.examples) for b in first] == [25] * 5
    assert [b.examples for b in first] == [b.examples for b in again]
    assert all(b.examples != o.examples for b, o in zip(first, other))
    # Dropping a task leaves the others' draws unchanged.
    fewer = load_budgets(data_root, tasks[1:], 25, seed=0)
    assert [b.examples for b in fewer] == [b.examples for b in first[1:]]
    assert task_seed(0, "gsm8k") != task_seed(0, "strategyqa")
    # Smaller budgets are not nested in larger ones by accident of order, but are drawn from the pool.
    pool = {e.prompt_hash for e in get_task("gsm8k").load(data_root).train}
    assert {e.prompt_hash for e in first[4].examples} <= pool


def test_full_budget_is_capped(data_root):
    full = load_budgets(data_root, ("implicatures", "gsm8k"), "full", seed=0)
    assert [len(b.examples) for b in full] == [379, 1000]
    uncapped = load_budgets(data_root, ("implicatures",), "full", seed=0, full_cap=5000)
    assert len(uncapped[0].examples) == 379
    assert parse_shots("full") == "full" and parse_shots("10") == 10 and parse_shots(100) == 100


def test_scenarios():
    assert scenario_tasks("multitask") == SCENARIOS["multitask"]
    assert len(scenario_tasks("multilingual")) == 11
    assert "xcopa_qu" not in scenario_tasks("multilingual", held_out_languages=("qu", "ht"))
    assert len(scenario_tasks("multilingual", held_out_languages=("qu", "ht"))) == 9
    assert scenario_tasks("multitask", tasks=("winowhy", "gsm8k")) == ("winowhy", "gsm8k")
