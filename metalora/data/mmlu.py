"""MMLU (57 subjects): ``mmlu/test/<subject>_test.csv`` in the original Hendrycks layout.

Each CSV row (no header) is ``question, A, B, C, D, answer-letter``. Rows become dicts in the hub
schema lm-eval's MMLU tasks read (``question``, ``subject``, ``choices`` list, ``answer`` index).

Few-shot exemplars come from MMLU's real dev split (5 items per subject, 285 in all), which the
mirror lacks but lm-eval ships inside its package: ``tasks/mmlu/flan_cot_fewshot/_cot_prompts.json``
holds, per subject, the dev items as chain-of-thought exemplars ("Q: question / (A) .. (D) .. /
A: Let's think step by step. ... The answer is (X)."). ``mmlu_dev_exemplars`` parses question,
choices and answer from there (the reasoning is dropped), so every test item is evaluated. The file
holds 282 of the 285 dev items (formal_logic, human_aging and college_chemistry miss one each),
and one of college_chemistry's is not an MMLU item (five options, A-E) and is skipped: rule for a
subject with fewer than 5 usable dev items, it is evaluated with the ones it has (3 or 4 shots,
``MMLU_DEV_SHORTFALL``), never with test items. Two defects of the file are repaired by exact,
listed edits (``_DEV_REPAIRS``). Exemplars keep the file's order.

Hub fallback: ``cais/mmlu`` rows are rewritten into CSV rows and go through the same parser.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from metalora.data.root import DataRoot, read_json, read_text
from metalora.errors import MlbenchError

# Subject -> category group (Hendrycks et al.'s four groups, as in lm-eval's MMLU task tags).
MMLU_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {subject: "stem" for subject in (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    )}
    | {subject: "humanities" for subject in (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    )}
    | {subject: "social_sciences" for subject in (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    )}
    | {subject: "other" for subject in (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    )}
)  # fmt: skip
MMLU_SUBJECTS = tuple(sorted(MMLU_CATEGORIES))
MMLU_CATEGORY_NAMES = ("stem", "humanities", "social_sciences", "other")
# Official test items per subject (14,042 in all); the tests check the data against this table.
MMLU_ITEM_COUNTS: Mapping[str, int] = MappingProxyType(
    {
        "abstract_algebra": 100, "anatomy": 135, "astronomy": 152, "business_ethics": 100,
        "clinical_knowledge": 265, "college_biology": 144, "college_chemistry": 100,
        "college_computer_science": 100, "college_mathematics": 100, "college_medicine": 173,
        "college_physics": 102, "computer_security": 100, "conceptual_physics": 235, "econometrics": 114,
        "electrical_engineering": 145, "elementary_mathematics": 378, "formal_logic": 126,
        "global_facts": 100, "high_school_biology": 310, "high_school_chemistry": 203,
        "high_school_computer_science": 100, "high_school_european_history": 165,
        "high_school_geography": 198, "high_school_government_and_politics": 193,
        "high_school_macroeconomics": 390, "high_school_mathematics": 270,
        "high_school_microeconomics": 238, "high_school_physics": 151, "high_school_psychology": 545,
        "high_school_statistics": 216, "high_school_us_history": 204, "high_school_world_history": 237,
        "human_aging": 223, "human_sexuality": 131, "international_law": 121, "jurisprudence": 108,
        "logical_fallacies": 163, "machine_learning": 112, "management": 103, "marketing": 234,
        "medical_genetics": 100, "miscellaneous": 783, "moral_disputes": 346, "moral_scenarios": 895,
        "nutrition": 306, "philosophy": 311, "prehistory": 324, "professional_accounting": 282,
        "professional_law": 1534, "professional_medicine": 272, "professional_psychology": 612,
        "public_relations": 110, "security_studies": 245, "sociology": 201, "us_foreign_policy": 100,
        "virology": 166, "world_religions": 171,
    }
)  # fmt: skip
MMLU_TOTAL_ITEMS = 14042
_LETTERS = ("A", "B", "C", "D")


def mmlu_file(subject: str) -> str:
    return f"mmlu/test/{subject}_test.csv"


def mmlu_rows(root: DataRoot, subject: str) -> list[dict]:
    """All test items of one subject, in file order, as hub-schema dicts."""
    if subject not in MMLU_CATEGORIES:
        raise MlbenchError(f"unknown MMLU subject {subject!r}; choose from {', '.join(MMLU_SUBJECTS)}")
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        rows = load_hub_rows("cais/mmlu", subject, "test")
        return parse_mmlu_csv(_hub_rows_as_csv(rows), subject, f"cais/mmlu ({subject})")
    path = root.file(mmlu_file(subject))
    return parse_mmlu_csv(read_text(path), subject, str(path))


def parse_mmlu_csv(text: str, subject: str, source: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, line = [], 1
    for record in reader:
        # A quoted field may span lines; report the line the record starts on.
        start, line = line, reader.line_num + 1
        if not record:
            continue
        if len(record) != 6 or record[5].strip() not in _LETTERS:
            raise MlbenchError(
                f"malformed MMLU file {source} at line {start}: expected 6 columns "
                "(question, A, B, C, D, answer letter A-D)"
            )
        rows.append(
            {
                "question": record[0],
                "subject": subject,
                "choices": record[1:5],
                "answer": _LETTERS.index(record[5].strip()),
            }
        )
    return rows


MMLU_DEV_FILE = "tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"  # inside the installed lm_eval
# Subjects with fewer than 5 usable dev items -> how many they have (they run with that many shots).
MMLU_DEV_SHORTFALL: Mapping[str, int] = MappingProxyType(
    {"college_chemistry": 3, "formal_logic": 4, "human_aging": 4}
)
# Exact edits of defects in lm-eval's file: (subject, text as found, replacement). Each must match.
_DEV_REPAIRS = (
    # The end of the previous exemplar's reasoning (a LaTeX command mangled into a newline) leaked
    # into the next question.
    ("abstract_algebra", ("Q: The symmetric group $S_n$ has $\nactorial{n}$ elements, hence it is not true "
     "that $S_{10}$ has 10 elements.\nFind the characteristic of the ring 2Z."), "Q: Find the characteristic of the ring 2Z."),
    # A question that starts with a stray newline.
    ("formal_logic", "Q: \nSelect the best English interpretation", "Q: Select the best English interpretation"),
)  # fmt: skip
_COT_ANSWER = "\nA: Let's think step by step."
_ANSWER_IS = re.compile(r"The answer is \(([A-Z])\)")
_ONE_LINE_CHOICES = re.compile(r"\(A\) (.*?) \(B\) (.*?) \(C\) (.*?) \(D\) (.*)", re.DOTALL)


def mmlu_dev_file() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / MMLU_DEV_FILE


def mmlu_dev_exemplars(subject: str) -> list[dict]:
    """The subject's dev items from lm-eval's file, as hub-schema dicts, in the file's order."""
    if subject not in MMLU_CATEGORIES:
        raise MlbenchError(f"unknown MMLU subject {subject!r}; choose from {', '.join(MMLU_SUBJECTS)}")
    path = mmlu_dev_file()
    if not path.is_file():
        raise MlbenchError(f"MMLU dev exemplars not found in the installed lm_eval ({path}); install lm-eval>=0.4.9")
    prompts = read_json(path)
    if not isinstance(prompts, dict) or not isinstance(prompts.get(subject), str):
        raise MlbenchError(f"malformed MMLU dev file {path}: expected an object with a prompt for {subject}")
    return parse_mmlu_dev_prompt(prompts[subject], subject, f"{path} ({subject})")


def parse_mmlu_dev_prompt(text: str, subject: str, source: str) -> list[dict]:
    """Dev items of one subject's chain-of-thought prompt; items that are not 4-option MMLU items
    (one five-option item in college_chemistry) are skipped."""
    for repaired_subject, found, replacement in _DEV_REPAIRS:
        if repaired_subject == subject:
            if text.count(found) != 1:
                raise MlbenchError(f"MMLU dev file {source}: expected defect not found; the repair list needs review")
            text = text.replace(found, replacement)
    items = []
    for number, block in enumerate(text.split("\n\nQ: ")[1:], start=1):
        head, marker, reasoning = block.partition(_COT_ANSWER)
        start = head.rfind("\n(A) ")
        answers = _ANSWER_IS.findall(reasoning)
        if not marker or start < 0 or len(answers) != 1:
            raise MlbenchError(
                f"malformed MMLU dev file {source}, exemplar {number}: expected 'Q: question', '(A) ..', "
                f"'{_COT_ANSWER.strip()} ... The answer is (X).'"
            )
        choices = _parse_choices(head[start + 1 :])
        if choices is None or answers[0] not in _LETTERS:
            continue  # not a 4-option item
        items.append({"question": head[:start].strip(), "subject": subject, "choices": choices,
                      "answer": _LETTERS.index(answers[0])})  # fmt: skip
    return items


def _parse_choices(text: str) -> list[str] | None:
    """"(A) a (B) b (C) c (D) d" on one line, or each "(X) text" starting a line (an option may
    span lines); None otherwise (e.g. a fifth option)."""
    if "\n" not in text:
        match = _ONE_LINE_CHOICES.fullmatch(text)
        return [choice.strip() for choice in match.groups()] if match and " (E) " not in text else None
    parts = re.split(r"\n(?=\([A-Z]\) )", text)
    if len(parts) == 4 and all(part.startswith(f"({letter}) ") for part, letter in zip(parts, _LETTERS)):
        return [part[4:].strip() for part in parts]
    return None


def _hub_rows_as_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([row["question"], *row["choices"], _LETTERS[int(row["answer"])]])
    return buffer.getvalue()
