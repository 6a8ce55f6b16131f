"""The lm-eval task definitions in eval_tasks/: they load offline, count right, and name no paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eval_tasks.dataroot import DATA_ROOT_KEY, task_metadata
from eval_tasks.generate import expected_files, stale_files
from eval_tasks.harness import evaluate
from eval_tasks.registry import BENCHMARKS, EVAL_TASKS_DIR
from metalora.data.mmlu import mmlu_dev_exemplars
from metalora.data.root import DataRoot, resolve_data_root
from metalora.errors import MlbenchError

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"

DOCUMENTED = {
    "heldout": (24, 22035),
    "bbh": (27, 6511),
    "bbh_cot": (27, 6511),
    "bbh_mc": (23, 5508),
    "mmlu": (57, 14042),
    "mmlu_5shot": (57, 14042),
    "xcopa": (11, 5500),
    "xwinograd": (6, 3961),
    "mgsm": (11, 2750),
}


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="module")
def manager(root):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(EVAL_TASKS_DIR), include_defaults=False, metadata=task_metadata(root))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the hub through datasets fails the test."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"datasets.load_dataset called with {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


def test_registry_names_the_nine_benchmarks_and_is_immutable():
    assert list(BENCHMARKS) == list(DOCUMENTED)
    with pytest.raises(TypeError):
        BENCHMARKS["extra"] = BENCHMARKS["bbh"]  # type: ignore[index]


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_every_task_loads_offline_with_the_documented_counts(name, manager, no_network):
    spec = BENCHMARKS[name]
    loaded = manager.load([spec.group])
    tasks = loaded["tasks"]
    assert sorted(tasks) == sorted(spec.task_names)
    counts = {spec.subtasks[spec.task_names.index(task)]: len(obj.eval_docs) for task, obj in tasks.items()}
    assert counts == dict(spec.item_counts)
    assert (len(counts), sum(counts.values())) == DOCUMENTED[name] == (len(spec.subtasks), spec.total_items)
    for task in tasks.values():
        assert task.config.metadata[DATA_ROOT_KEY] == str(manager.metadata[DATA_ROOT_KEY])
        if task.config.output_type == "generate_until":
            assert task.config.generation_kwargs["max_gen_toks"] == spec.max_gen_tokens


def test_documented_per_task_counts():
    assert BENCHMARKS["bbh"].item_counts["causal_judgement"] == 187
    assert BENCHMARKS["bbh"].item_counts["penguins_in_a_table"] == 146
    assert BENCHMARKS["bbh"].item_counts["snarks"] == 178
    assert BENCHMARKS["bbh_mc"].item_counts["movie_recommendation"] == 249
    assert BENCHMARKS["bbh_mc"].item_counts["ruin_names"] == 248
    assert BENCHMARKS["mmlu_5shot"].item_counts["anatomy"] == 135
    assert dict(BENCHMARKS["xwinograd"].item_counts) == {
        "en": 2325,
        "fr": 83,
        "jp": 959,
        "pt": 263,
        "ru": 315,
        "zh": 16,
    }


def test_prompts_render_as_documented(manager):
    task = manager.load(["mlbench_bbh_boolean_expressions"])["tasks"]["mlbench_bbh_boolean_expressions"]
    doc = task.eval_docs[0]
    assert task.fewshot_context(doc, 3) == (
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( ( not not True ) ) is\nA: False\n\n"
        "Q: True and False and not True and True is\nA: False\n\n"
        "Q: not not ( not ( False ) ) is\nA: True\n\n"
        "Q: not ( True ) and ( True ) is\nA:"
    )
    cot = manager.load(["mlbench_bbh_cot_navigate"])["tasks"]["mlbench_bbh_cot_navigate"]
    context = cot.fewshot_context(cot.eval_docs[0], 3)
    assert context.count("A: Let's think step by step.\n") == 3 and context.endswith(
        "A: Let's think step by step."
    )
    assert context.count("So the answer is ") == 3
    mmlu = manager.load(["mlbench_mmlu_5shot_anatomy"])["tasks"]["mlbench_mmlu_5shot_anatomy"]
    context = mmlu.fewshot_context(mmlu.eval_docs[0], 5)
    assert context.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert context.count("\nAnswer:") == 6 and context.endswith(
        "D. paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.\nAnswer:"
    )
    # The exemplars are anatomy's dev items (lm-eval's copy), answered by letter.
    dev = mmlu_dev_exemplars("anatomy")
    assert context.index(dev[0]["question"]) < context.index(dev[4]["question"]) < context.index("A lesion causing")
    assert f"Answer: {'ABCD'[dev[0]['answer']]}\n\n" in context
    short = manager.load(["mlbench_mmlu_5shot_formal_logic"])["tasks"]["mlbench_mmlu_5shot_formal_logic"]
    assert short.config.num_fewshot == 4


def test_yaml_files_are_generated_from_the_registry_and_name_no_data_path():
    assert stale_files() == []
    yamls = sorted(EVAL_TASKS_DIR.glob("*/*.yaml")) + sorted(EVAL_TASKS_DIR.glob("*/_*_yaml"))
    assert len(expected_files()) == 24 + 27 * 3 - 4 + 57 * 2 + 11 + 6 + 11 + 9
    for path in yamls:
        text = path.read_text(encoding="utf-8")
        for forbidden in ("shared/data", "/work", "data_files", "dataset_path", "MLBENCH_DATA_DIR"):
            assert forbidden not in text, f"{path.name} mentions {forbidden}"


def test_lm_eval_cli_without_metadata_falls_back_to_the_environment(monkeypatch, root):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("MLBENCH_DATA_DIR", str(root.path))
    manager = TaskManager(include_path=str(EVAL_TASKS_DIR), include_defaults=False)
    tasks = manager.load(["mlbench_xwinograd_fr"])["tasks"]
    assert len(tasks["mlbench_xwinograd_fr"].eval_docs) == 83


def test_unknown_benchmark_is_one_line_listing_the_valid_names(root):
    with pytest.raises(MlbenchError) as error:
        evaluate(None, None, ["bbh", "bhh"], data_root=root)
    assert str(error.value) == (
        "unknown benchmark 'bhh'; valid names: heldout, bbh, bbh_cot, bbh_mc, mmlu, mmlu_5shot, xcopa, xwinograd, "
        "mgsm"
    )


def test_missing_data_root_is_one_line_naming_the_folder_and_the_setting(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(MlbenchError) as error:
        evaluate(None, None, ["mmlu"], data_root=DataRoot(missing))
    message = str(error.value)
    assert "\n" not in message and str(missing) in message
    assert "MLBENCH_DATA_DIR" in message and "--data-root" in message
    with pytest.raises(
        MlbenchError, match=f"data file {tmp_path}/mmlu/test/abstract_algebra_test.csv not found"
    ):
        evaluate(None, None, ["mmlu"], data_root=DataRoot(tmp_path))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch size must be a positive integer or 'auto'"),
        ({"limit": 0}, "limit must be a positive number"),
        ({"max_gen_tokens": -1}, "max generated tokens must be a positive integer"),
    ],
)
def test_bad_options_are_refused_before_any_work(root, options, message):
    with pytest.raises(MlbenchError, match=message):
        evaluate(None, None, ["mmlu"], data_root=root, **options)
