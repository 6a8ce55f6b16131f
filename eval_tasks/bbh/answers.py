"""BBH answers: which kind of answer each task has, how to pull it out of a generation, how to
normalise it, and the closed answer sets used by the log-likelihood variant.

Extraction: answer-only generations are cut to their first line (models continue with the next
"Q:"); chain-of-thought generations keep the sentence after the first "the answer is"
(case-insensitive), up to its end of line or its period.
Normalisation then strips spaces, quotes, markdown emphasis and one trailing period and maps each
answer kind to one canonical form, applied to the gold target too:

- letter options: "(A)", "A", "A)", "(a).", "(A) text" -> "(A)"; an answer equal to an option's
  text (case-insensitive) -> that option's letter; anything else stays case-folded text, so the
  three upstream items whose target is a text ("Monsters, Inc") still score by exact text;
- True/False, Yes/No, valid/invalid: the first word, case-folded;
- numbers: the leading number without thousands separators ("1,024." -> "1024", "-7.0" -> "-7");
- sorted words: case-folded words, commas and spacing ignored;
- Dyck closings: the bracket characters with all whitespace removed.
An empty or missing answer never matches.

That lenient score is the secondary metric of answer-only BBH (``exact_match_normalized``); its
primary metric is the original BBH protocol's strict exact match (``strict_match``): the generation
up to the stop sequence, whitespace stripped, equal to the target character for character.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


class AnswerKind(Enum):
    LETTER = "letter"
    YES_NO = "yes_no"
    TRUE_FALSE = "true_false"
    VALID_INVALID = "valid_invalid"
    NUMBER = "number"
    WORDS = "words"
    DYCK = "dyck"


@dataclass(frozen=True)
class BbhAnswerSpec:
    kind: AnswerKind
    # The task's fixed label set when its inputs list no options (None: options come from the
    # input, or the task has no closed answer set and no log-likelihood variant).
    labels: tuple[str, ...] | None = None

    @property
    def closed(self) -> bool:
        """Whether the task has a closed answer set (and so a log-likelihood variant)."""
        return self.kind not in (AnswerKind.NUMBER, AnswerKind.WORDS, AnswerKind.DYCK)


_L, _YN = BbhAnswerSpec(AnswerKind.LETTER), BbhAnswerSpec(AnswerKind.YES_NO)
BBH_ANSWERS: Mapping[str, BbhAnswerSpec] = MappingProxyType(
    {
        "boolean_expressions": BbhAnswerSpec(AnswerKind.TRUE_FALSE, ("True", "False")),
        "causal_judgement": _YN,  # "Options:\n- Yes\n- No"
        "date_understanding": _L,
        "disambiguation_qa": _L,
        "dyck_languages": BbhAnswerSpec(AnswerKind.DYCK),
        "formal_fallacies": BbhAnswerSpec(AnswerKind.VALID_INVALID),  # "- valid\n- invalid"
        "geometric_shapes": _L,
        "hyperbaton": _L,
        "logical_deduction_five_objects": _L,
        "logical_deduction_seven_objects": _L,
        "logical_deduction_three_objects": _L,
        "movie_recommendation": _L,
        "multistep_arithmetic_two": BbhAnswerSpec(AnswerKind.NUMBER),
        "navigate": _YN,  # "Options:\n- Yes\n- No"
        "object_counting": BbhAnswerSpec(AnswerKind.NUMBER),
        "penguins_in_a_table": _L,
        "reasoning_about_colored_objects": _L,
        "ruin_names": _L,
        "salient_translation_error_detection": _L,
        "snarks": _L,
        "sports_understanding": BbhAnswerSpec(AnswerKind.YES_NO, ("yes", "no")),
        "temporal_sequences": _L,
        "tracking_shuffled_objects_five_objects": _L,
        "tracking_shuffled_objects_seven_objects": _L,
        "tracking_shuffled_objects_three_objects": _L,
        "web_of_lies": BbhAnswerSpec(AnswerKind.YES_NO, ("Yes", "No")),
        "word_sorting": BbhAnswerSpec(AnswerKind.WORDS),
    }
)

_LETTER_OPTION = re.compile(r"^\(([A-Z])\)\s?(.*)$")
_DASH_OPTION = re.compile(r"^-\s?(.*)$")
# "(x)" in either case, or a bare capital; a bare lower-case "a" is an article, not an option.
_LETTER_ANSWER = re.compile(r"^(?:\(([A-Za-z])\)|([A-Z]))(?=$|[\s.:,)])")
_NUMBER_ANSWER = re.compile(r"^[-\u2212]?\d[\d,]*(?:\.\d+)?")
_FIRST_WORD = re.compile(r"[^\W\d_]+")
_COT_MARK = re.compile(r"the answer is", re.IGNORECASE)


def parse_options(text: str) -> list[tuple[str | None, str]]:
    """The options listed after the last "Options:" line: (letter or None for "- x" lines, text)."""
    _, found, tail = text.rpartition("Options:\n")
    if not found:
        return []
    options = []
    for line in tail.split("\n"):
        if match := _LETTER_OPTION.match(line):
            options.append((match.group(1), match.group(2).strip()))
        elif match := _DASH_OPTION.match(line):
            options.append((None, match.group(1).strip()))
    return options


def mc_choices(task: str, text: str) -> tuple[str, ...] | None:
    """The answer strings a log-likelihood evaluation compares, or None for open-ended tasks."""
    options = parse_options(text)
    if options:
        return tuple(f"({letter})" if letter else option for letter, option in options)
    return BBH_ANSWERS[task].labels


def extract_answer_only(generation: str) -> str:
    lines = generation.strip().split("\n")
    return lines[0].strip()


def extract_cot(generation: str) -> str:
    match = _COT_MARK.search(generation)
    if match is None:
        return ""
    line = generation[match.end() :].strip().split("\n")[0]
    # The answer sentence ends at its period; a period inside a number ("-3.5") is not followed by a space.
    return re.split(r"\.\s", line, maxsplit=1)[0].strip()


def normalize(answer: str, kind: AnswerKind, options: list[tuple[str | None, str]] = ()) -> str:
    """The canonical form of an answer (model prediction or gold target) of one kind."""
    text = _clean(answer)
    if not text:
        return ""
    return _NORMALIZERS[kind](text, options)


def _clean(answer: str) -> str:
    text = answer.strip().strip("*`\"'").strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def _letter(text: str, options) -> str:
    letters = {letter for letter, _ in options if letter}
    match = _LETTER_ANSWER.match(text)
    letter = (match.group(1) or match.group(2)).upper() if match else None
    if letter and (not letters or letter in letters):
        return f"({letter})"
    folded = text.casefold()
    for letter, option in options:
        if letter and option.casefold().rstrip(".") == folded:
            return f"({letter})"
    return folded


def _first_word(text: str, options) -> str:
    match = _FIRST_WORD.search(text.casefold())
    return match.group(0) if match else ""


def _number(text: str, options) -> str:
    match = _NUMBER_ANSWER.match(text)
    if not match:
        return text.casefold()
    number = match.group(0).replace(",", "").replace("\u2212", "-")
    value = float(number)
    return str(int(value)) if value.is_integer() else str(value)


def _words(text: str, options) -> str:
    return " ".join(re.split(r"[\s,]+", text.casefold())).strip()


def _dyck(text: str, options) -> str:
    return re.sub(r"\s+", "", text)


_NORMALIZERS = MappingProxyType(
    {
        AnswerKind.LETTER: _letter,
        AnswerKind.YES_NO: _first_word,
        AnswerKind.TRUE_FALSE: _first_word,
        AnswerKind.VALID_INVALID: _first_word,
        AnswerKind.NUMBER: _number,
        AnswerKind.WORDS: _words,
        AnswerKind.DYCK: _dyck,
    }
)


@dataclass(frozen=True)
class BbhScore:
    prediction: str  # normalised extracted answer ("" when none was found)
    gold: str  # normalised target
    correct: bool


def strict_match(target: str, generation: str) -> bool:
    """Original BBH answer-only scoring: stripped generation == stripped target (case and all)."""
    answer = generation.strip()
    return bool(answer) and answer == target.strip()


def score_generation(task: str, doc_input: str, target: str, generation: str, *, cot: bool) -> BbhScore:
    """Exact match of a generation against the target after extraction and normalisation."""
    kind = BBH_ANSWERS[task].kind
    options = parse_options(doc_input)
    extracted = extract_cot(generation) if cot else extract_answer_only(generation)
    prediction, gold = normalize(extracted, kind, options), normalize(target, kind, options)
    return BbhScore(prediction=prediction, gold=gold, correct=bool(prediction) and prediction == gold)
