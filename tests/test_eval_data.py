"""Evaluation data loaders (BBH, MMLU, XWinograd, MGSM): counts, formats, errors, hub conversion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import metalora.data.hub
from metalora.data.bbh import BBH_ITEM_COUNTS, BBH_TASKS, bbh_items, bbh_prompt, parse_bbh_prompt
from metalora.data.mgsm import MGSM_LANGUAGES, mgsm_rows
from metalora.data.mmlu import (
    MMLU_CATEGORIES,
    MMLU_DEV_SHORTFALL,
    MMLU_ITEM_COUNTS,
    MMLU_SUBJECTS,
    MMLU_TOTAL_ITEMS,
    mmlu_dev_exemplars,
    mmlu_rows,
    parse_mmlu_dev_prompt,
)
from metalora.data.root import DataRoot, resolve_data_root
from metalora.data.xwinograd import XWINOGRAD_COUNTS, XWINOGRAD_LANGUAGES, xwinograd_rows
from metalora.errors import MlbenchError

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
HUB = DataRoot(None)


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


def test_bbh_has_27_tasks_and_6511_items_with_three_unseen_exemplars_each(root):
    total = 0
    for task in BBH_TASKS:
        items = bbh_items(root, task)
        prompt = bbh_prompt(root, task)
        assert len(items) == BBH_ITEM_COUNTS[task]
        assert len(prompt.exemplars) == 3
        # Exemplars are shown to the model, so none may be an evaluated item.
        assert not {ex.input for ex in prompt.exemplars} & {item["input"] for item in items}
        assert "canary" not in prompt.description.lower()
        assert all(ex.reasoning.rstrip(".").endswith(ex.answer) for ex in prompt.exemplars)
        total += len(items)
    assert len(BBH_TASKS) == 27 and total == 6511


def test_bbh_prompt_exemplars_keep_the_official_text(root):
    prompt = bbh_prompt(root, "boolean_expressions")
    assert prompt.description == "Evaluate the result of a random Boolean expression."
    assert prompt.exemplars[0].input == "not ( ( not not True ) ) is"
    assert prompt.exemplars[0].reasoning.startswith("\nRemember that (i) expressions inside brackets")
    assert prompt.exemplars[0].reasoning.endswith("So the answer is False.")
    assert [ex.answer for ex in prompt.exemplars] == ["False", "False", "True"]
    # snarks has a two-paragraph description; it stays whole.
    assert "According to Cambridge University Dictionary" in bbh_prompt(root, "snarks").description
    # sports_understanding's reasoning continues the "A:" line.
    assert bbh_prompt(root, "sports_understanding").exemplars[0].reasoning.startswith(" Bam Adebayo")


def test_bbh_hub_prompts_come_from_lm_eval_and_match_the_files(root):
    for task in BBH_TASKS:
        local, hub = bbh_prompt(root, task), bbh_prompt(HUB, task)
        assert hub.description == local.description
        assert [ex.answer for ex in hub.exemplars] == [ex.answer for ex in local.exemplars]
        assert [ex.reasoning.strip() for ex in hub.exemplars] == [
            ex.reasoning.strip() for ex in local.exemplars
        ]


def test_mmlu_has_57_subjects_with_the_official_counts(root):
    counts = {subject: len(mmlu_rows(root, subject)) for subject in MMLU_SUBJECTS}
    assert counts == dict(MMLU_ITEM_COUNTS)
    assert len(counts) == 57 and sum(counts.values()) == MMLU_TOTAL_ITEMS == 14042
    row = mmlu_rows(root, "anatomy")[0]
    assert row["question"].startswith("A lesion causing compression of the facial nerve")
    assert row["choices"][0] == "paralysis of the facial muscles." and row["answer"] == 0


# Hand-checked against the file and by working each one out: (subject, position in the file,
# question start, choices, answer letter).
DEV_ITEMS = [
    ("abstract_algebra", 1, "Find the characteristic of the ring 2Z.", ["0", "3", "12", "30"], "A"),  # repaired
    ("abstract_algebra", 4, "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.", ["0", "1", "2", "3"], "B"),
    ("elementary_mathematics", 1, ("The population of the city where Michelle was born is 145,826. What is the value "
     "of the 5 in the number 145,826?"), ["5 thousands", "5 hundreds", "5 tens", "5 ones"], "A"),
    ("elementary_mathematics", 4, "Which expression is equivalent to 5 x 9?",  # choices one per line
     ["(5 x 4) x (6 x 5)", "(5 x 5) + (5 x 4)", "(5 x 5) + (5 x 9)", "(5 x 9) x (6 x 9)"], "B"),
    ("human_aging", 2, "Which element in tobacco smoke is responsible for cancers?",
     ["Nicotine", "Tar", "Carbon monoxide", "Smoke particles"], "B"),
    ("college_chemistry", 2, ("Which of the following lists the hydrides of group-14 elements in order of thermal "
     "stability, from lowest to highest?"), ["PbH4 < SnH4 < GeH4 < SiH4 < CH4", "PbH4 < SnH4 < CH4 < GeH4 < SiH4",
     "CH4 < SiH4 < GeH4 < SnH4 < PbH4", "CH4 < PbH4 < GeH4 < SnH4 < SiH4"], "A"),
    ("high_school_geography", 0, "Which one of the following items is an example of nonmaterial culture?",
     ["Dove soap", "Dove candy bar", "Dove symbol", "A dove (bird)."], "C"),
    ("formal_logic", 2, "Select the best English interpretation of the given arguments in predicate logic.\nDm\n",
     None, "D"),  # repaired: the stray leading newline is gone
    ("high_school_computer_science", 4, "A list of numbers has n elements", None, "B"),  # options span two lines
]  # fmt: skip


@pytest.mark.parametrize(("subject", "index", "question", "choices", "answer"), DEV_ITEMS)
def test_mmlu_dev_exemplars_match_hand_checked_items(subject, index, question, choices, answer):
    item = mmlu_dev_exemplars(subject)[index]
    assert item["question"].startswith(question) and item["subject"] == subject
    assert item["choices"] == choices if choices else len(item["choices"]) == 4
    assert "ABCD"[item["answer"]] == answer


def test_every_subject_has_its_dev_exemplars_or_says_how_many(root):
    counts = {subject: len(mmlu_dev_exemplars(subject)) for subject in MMLU_SUBJECTS}
    assert {s: n for s, n in counts.items() if n != 5} == dict(MMLU_DEV_SHORTFALL)
    assert sum(counts.values()) == 281  # 282 of 285 dev items are in lm-eval's file, one has 5 options
    test_items = {subject: {row["question"] for row in mmlu_rows(root, subject)} for subject in MMLU_SUBJECTS}
    elsewhere = []
    for subject in MMLU_SUBJECTS:
        for item in mmlu_dev_exemplars(subject):
            assert item["question"] and item["question"] == item["question"].strip()
            assert len(item["choices"]) == 4 and all(item["choices"]) and item["answer"] in range(4)
            assert not any("(B)" in choice or "\nA: " in choice for choice in item["choices"])
            assert item["question"] not in test_items[subject]  # no exemplar is evaluated with itself
            elsewhere += [other for other in MMLU_SUBJECTS if item["question"] in test_items[other]]
    # Upstream MMLU repeats five dev items of one medical subject as test items of the other.
    assert sorted(elsewhere) == ["clinical_knowledge"] * 3 + ["college_medicine"] * 2
    # The skipped college_chemistry item is the five-option one.
    assert not any("EPR spectrum" in item["question"] for item in mmlu_dev_exemplars("college_chemistry"))


def test_mmlu_dev_parser_refuses_malformed_text_and_unknown_subjects():
    text = "The following are multiple choice questions (with answers) about anatomy.\n\nQ: What?\n(A) a (B) b\n"
    with pytest.raises(MlbenchError, match=r"malformed MMLU dev file demo, exemplar 1: expected 'Q: question'"):
        parse_mmlu_dev_prompt(text, "anatomy", "demo")
    with pytest.raises(MlbenchError, match="expected defect not found"):
        parse_mmlu_dev_prompt("no defect here", "abstract_algebra", "demo")
    with pytest.raises(MlbenchError, match="unknown MMLU subject 'anatomyy'"):
        mmlu_dev_exemplars("anatomyy")


def test_mmlu_categories_match_lm_evals_groups():
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    theirs = {}
    for path in folder.glob("mmlu_*.yaml"):
        config = yaml.safe_load(path.read_text())
        theirs[config["dataset_name"]] = config["tag"].removeprefix("mmlu_").removesuffix("_tasks")
    assert theirs == dict(MMLU_CATEGORIES)
    sizes = {name: list(MMLU_CATEGORIES.values()).count(name) for name in set(MMLU_CATEGORIES.values())}
    assert sizes == {"stem": 19, "humanities": 13, "social_sciences": 12, "other": 13}


def test_xwinograd_rows_are_built_from_the_upstream_tsv(root):
    counts = {language: len(xwinograd_rows(root, language)) for language in XWINOGRAD_LANGUAGES}
    assert counts == {"en": 2325, "jp": 959, "ru": 315, "pt": 263, "fr": 83, "zh": 16} == XWINOGRAD_COUNTS
    assert xwinograd_rows(root, "en")[:2] == [
        {"sentence": "The city councilmen refused the demonstrators a permit because _ feared violence.",
         "option1": "The city councilmen", "option2": "the demonstrators", "answer": "1"},
        {"sentence": "The city councilmen refused the demonstrators a permit because _ advocated violence.",
         "option1": "The city councilmen", "option2": "the demonstrators", "answer": "2"},
    ]  # fmt: skip
    assert xwinograd_rows(root, "jp")[0]["sentence"] == "狙撃兵はテロリストを撃った。_は悪漢だったからだ。"
    for language in XWINOGRAD_LANGUAGES:
        assert all(row["sentence"].count("_") >= 1 for row in xwinograd_rows(root, language))


def test_mgsm_has_11_languages_of_250_numbers(root):
    for language in MGSM_LANGUAGES:
        rows = mgsm_rows(root, language)
        assert len(rows) == 250
        assert rows[0]["answer_number"] == "18"
    assert {row["answer_number"] for row in mgsm_rows(root, "de")} >= {
        "2125",
        "114200",
    }  # "2,125" in the file


# --- malformed files: one line naming the file and the line -------------------------------------


def _copy_root(tmp_path: Path, relative: str, text: str) -> DataRoot:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return DataRoot(tmp_path)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_malformed_bbh_json_names_file_and_line(tmp_path):
    root = _copy_root(tmp_path, "bbh/bbh/navigate.json", '{"canary": "x",\n "examples": [\n {"input": }]}')
    with pytest.raises(MlbenchError) as error:
        bbh_items(root, "navigate")
    assert f"{tmp_path}/bbh/bbh/navigate.json at line 3" in _one_line(error)

    root = _copy_root(
        tmp_path, "bbh/bbh/navigate.json", json.dumps({"examples": [{"input": "q", "target": 1}]})
    )
    with pytest.raises(MlbenchError, match=r"navigate.json at line 1, example 1"):
        bbh_items(root, "navigate")


def test_malformed_bbh_prompt_names_file_and_line():
    text = "canary\n-----\nDescribe.\n\nQ: one\nA: Let's think step by step. So the answer is A.\n\nQ: two\nA: (B)"
    with pytest.raises(
        MlbenchError, match=r"^malformed BBH prompt file p.txt at line 8: expected 'Q: \.\.\.'"
    ):
        parse_bbh_prompt(text, "p.txt")
    with pytest.raises(MlbenchError, match="at line 1: no '-----' line"):
        parse_bbh_prompt("Q: x", "p.txt")


def test_malformed_mmlu_csv_names_file_and_line(tmp_path):
    good = 'What?,a,b,c,d,A\n"Two\nlines?",a,b,c,d,B\n'
    root = _copy_root(tmp_path, "mmlu/test/anatomy_test.csv", good + "Bad?,a,b,c,d,E\n")
    with pytest.raises(MlbenchError) as error:
        mmlu_rows(root, "anatomy")
    assert _one_line(error).startswith(
        f"malformed MMLU file {tmp_path}/mmlu/test/anatomy_test.csv at line 4:"
    )
    root = _copy_root(tmp_path, "mmlu/test/anatomy_test.csv", good + "Short?,a,b,C\n")
    with pytest.raises(MlbenchError, match="at line 4: expected 6 columns"):
        mmlu_rows(root, "anatomy")
    assert len(mmlu_rows(_copy_root(tmp_path, "mmlu/test/anatomy_test.csv", good), "anatomy")) == 2


def test_malformed_xwinograd_and_mgsm_name_file_and_line(tmp_path, root):
    lines = Path(root.file("xwinograd/dataset.tsv")).read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    broken = lines + ['en\toriginal\t?\tA sentence.\t["A"\tnot json\t[]\n']
    bad_root = _copy_root(tmp_path, "xwinograd/dataset.tsv", "".join(broken))
    with pytest.raises(MlbenchError) as error:
        xwinograd_rows(bad_root, "en")
    assert f"{tmp_path}/xwinograd/dataset.tsv at line 4" in _one_line(error)

    bad_root = _copy_root(tmp_path, "mgsm/mgsm_en.tsv", "Q one?\t18\nQ two without an answer\n")
    with pytest.raises(MlbenchError, match=r"mgsm_en.tsv at line 2: expected 'question<TAB>number'"):
        mgsm_rows(bad_root, "en")


def test_missing_file_names_it_and_the_setting(tmp_path):
    with pytest.raises(MlbenchError) as error:
        mmlu_rows(DataRoot(tmp_path), "anatomy")
    assert "mmlu/test/anatomy_test.csv not found" in _one_line(error) and "MLBENCH_DATA_DIR" in str(
        error.value
    )


def test_unknown_names_list_the_valid_ones(root):
    with pytest.raises(MlbenchError, match="unknown BBH task 'nope'; choose from boolean_expressions, "):
        bbh_items(root, "nope")
    with pytest.raises(MlbenchError, match="unknown MMLU subject 'nope'; choose from abstract_algebra, "):
        mmlu_rows(root, "nope")


# --- hub fallback: hub rows are rewritten into the upstream schema and parsed the same way -------


@pytest.fixture
def fake_hub(monkeypatch):
    tables: dict[tuple[str, str | None, str], list[dict]] = {}

    def load(dataset_id, config, split):
        return tables[(dataset_id, config, split)]

    monkeypatch.setattr(metalora.data.hub, "load_hub_rows", load)
    return tables


def test_hub_rows_are_converted_to_the_local_schema(fake_hub, root):
    local = mmlu_rows(root, "anatomy")[:2]
    fake_hub[("cais/mmlu", "anatomy", "test")] = [
        {
            "question": row["question"],
            "subject": "anatomy",
            "choices": row["choices"],
            "answer": row["answer"],
        }
        for row in local
    ]
    assert mmlu_rows(HUB, "anatomy") == local

    fake_hub[("juletxara/mgsm", "en", "test")] = [
        {"question": "Q?", "answer": None, "answer_number": 18, "equation_solution": None},
        {"question": "R?", "answer": None, "answer_number": 2125.0, "equation_solution": None},
    ]
    assert mgsm_rows(HUB, "en") == [
        {"question": "Q?", "answer_number": "18"},
        {"question": "R?", "answer_number": "2125"},
    ]

    fake_hub[("lukaemon/bbh", "navigate", "test")] = [{"input": "Go?", "target": "No"}]
    assert bbh_items(HUB, "navigate") == [{"input": "Go?", "target": "No"}]

    row = xwinograd_rows(root, "en")[0]
    fake_hub[("Muennighoff/xwinograd", "en", "test")] = [dict(row)]
    assert xwinograd_rows(HUB, "en") == [row]
    fake_hub[("Muennighoff/xwinograd", "fr", "test")] = [{**row, "answer": "3"}]
    with pytest.raises(MlbenchError, match=r"Muennighoff/xwinograd \(fr\) row 1"):
        xwinograd_rows(HUB, "fr")
