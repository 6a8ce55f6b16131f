"""Reference rows (random, always_position, majority) equal values computed here, independently,
from the raw data files: JSON, CSV, JSONL and TSV read with the standard library."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from eval_tasks.references import REFERENCE_ROWS, ItemAnswer, benchmark_references, task_references
from eval_tasks.registry import BENCHMARKS
from metalora.data.registry import get_task
from metalora.data.root import DataRoot, resolve_data_root

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


def rows(golds: list, positions: list, options: list) -> dict[str, float]:
    """The three rows from per-item gold answers, gold positions (None: none) and option counts."""
    n = len(golds)
    counted = Counter(p for p in positions if p is not None)
    return {
        "random": sum(1 / k for p, k in zip(positions, options) if k and p is not None) / n,
        "always_position": (max(counted.values()) if counted else 0) / n,
        "majority": max(Counter(golds).values()) / n,
    }


def assert_rows(ours: dict, benchmark: str, expected: dict[str, dict[str, float]], macro_tasks=None) -> None:
    for row in REFERENCE_ROWS:
        assert ours[row]["per_task"] == pytest.approx({task: values[row] for task, values in expected.items()})
        tasks = macro_tasks or list(expected)
        assert ours[row]["macro"] == pytest.approx(sum(expected[t][row] for t in tasks) / len(tasks)), (benchmark, row)


@pytest.mark.parametrize("limit", [None, 7])
def test_bbh_references_from_the_raw_json(root, limit):
    tasks = ["boolean_expressions", "date_understanding", "object_counting", "movie_recommendation"]
    expected = {}
    for task in tasks:
        examples = json.loads(root.file(f"bbh/bbh/{task}.json").read_text())["examples"][:limit]
        golds, positions, options = [], [], []
        for example in examples:
            target = example["target"].strip()
            golds.append(target)
            letters = re.findall(r"^\(([A-Z])\)", example["input"].split("Options:\n")[-1], re.MULTILINE)
            if task == "boolean_expressions":
                positions.append(["True", "False"].index(target)), options.append(2)
            elif letters:  # the gold is an option letter, or (3 upstream items) an option's text
                choices = [f"({letter})" for letter in letters]
                positions.append(choices.index(target) if target in choices else None), options.append(len(choices))
            else:  # object_counting: an open number
                positions.append(None), options.append(None)
        expected[task] = rows(golds, positions, options)
    assert_rows(benchmark_references(BENCHMARKS["bbh"], tasks, root, limit), "bbh", expected)
    assert expected["object_counting"]["random"] == 0 and expected["boolean_expressions"]["random"] == 0.5


@pytest.mark.parametrize("benchmark", ["mmlu", "mmlu_5shot"])
def test_mmlu_references_from_the_raw_csv(root, benchmark):
    subjects = ["anatomy", "global_facts", "professional_law"]
    expected = {}
    for subject in subjects:
        with open(root.file(f"mmlu/test/{subject}_test.csv"), encoding="utf-8", newline="") as handle:
            letters = [record[5].strip() for record in csv.reader(handle)]
        expected[subject] = rows(letters, ["ABCD".index(letter) for letter in letters], [4] * len(letters))
    assert_rows(benchmark_references(BENCHMARKS[benchmark], subjects, root), benchmark, expected)
    assert expected["anatomy"]["random"] == 0.25


def test_xcopa_and_mgsm_references_from_the_raw_files(root):
    expected = {}
    for language in ("et", "zh"):
        lines = root.file(f"xcopa/data/{language}/test.{language}.jsonl").read_text(encoding="utf-8").splitlines()
        docs = [json.loads(line) for line in lines if line.strip()]
        golds = [doc[f"choice{doc['label'] + 1}"] for doc in docs]
        golds = [text[0].lower() + text[1:] for text in golds]
        expected[language] = rows(golds, [doc["label"] for doc in docs], [2] * len(docs))
    assert_rows(benchmark_references(BENCHMARKS["xcopa"], ["et", "zh"], root), "xcopa", expected)

    expected = {}
    for language in ("en", "ja"):
        lines = root.file(f"mgsm/mgsm_{language}.tsv").read_text(encoding="utf-8").splitlines()
        answers = [line.split("\t")[1].strip().replace(",", "") for line in lines if line.strip()][:50]
        expected[language] = rows(answers, [None] * len(answers), [None] * len(answers))
    assert_rows(benchmark_references(BENCHMARKS["mgsm"], ["en", "ja"], root, 50), "mgsm", expected)
    assert expected["en"]["always_position"] == 0 and expected["en"]["majority"] > 0


def test_xwinograd_references_leave_small_languages_out_of_the_macro(root):
    expected = {}
    for language in BENCHMARKS["xwinograd"].subtasks:
        golds, positions = [], []
        for line in root.file("xwinograd/dataset.tsv").read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if fields[0] != language:
                continue
            candidates = json.loads(fields[6])
            position = [bool(candidate[3]) for candidate in candidates].index(True)
            golds.append(candidates[position][0]), positions.append(position)
        expected[language] = rows(golds, positions, [2] * len(golds))
    ours = benchmark_references(BENCHMARKS["xwinograd"], BENCHMARKS["xwinograd"].subtasks, root)
    assert_rows(ours, "xwinograd", expected, macro_tasks=["en", "jp", "pt", "ru"])


def test_heldout_references_from_the_raw_bigbench_and_gsm8k_files(root):
    tasks = ["question_selection", "social_iqa", "gsm8k", "xcopa_it"]
    expected = {}
    for task in tasks:
        held = get_task(task).load(root).held_out  # which items are held out: the data layer's split
        if task == "gsm8k":
            lines = root.file("gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()
            answers = [json.loads(line)["answer"].split("####")[-1].strip().replace(",", "") for line in lines]
            expected[task] = rows(answers, [None] * len(answers), [None] * len(answers))
        elif task.startswith("xcopa_"):
            lines = root.file("xcopa/data/it/test.it.jsonl").read_text(encoding="utf-8").splitlines()
            docs = [json.loads(line) for line in lines]
            golds = [" " + doc[f"choice{doc['label'] + 1}"][0].lower() + doc[f"choice{doc['label'] + 1}"][1:] for doc in docs]
            expected[task] = rows(golds, [doc["label"] for doc in docs], [2] * len(docs))
        else:
            raw = json.loads(root.file(f"bigbench/{task}/task.json").read_text(encoding="utf-8"))["examples"]
            golds, positions, options = [], [], []
            for example in held:
                scores = raw[example.meta["index"]]["target_scores"]
                position = max(range(len(scores)), key=lambda i: list(scores.values())[i])
                golds.append(list(scores)[position]), positions.append(position), options.append(len(scores))
            expected[task] = rows(golds, positions, options)
    assert_rows(benchmark_references(BENCHMARKS["heldout"], tasks, root), "heldout", expected)
    # The gold answer of question_selection is always the first listed choice: a position shortcut.
    assert expected["question_selection"]["always_position"] == 1.0


def test_task_references_on_fixed_items():
    items = [ItemAnswer("(A)", 0, 4), ItemAnswer("(A)", 0, 4), ItemAnswer("(C)", 2, 4), ItemAnswer("x", None, 4),
             ItemAnswer("12")]  # fmt: skip
    assert task_references(items) == {"random": 3 / 4 / 5, "always_position": 2 / 5, "majority": 2 / 5}
