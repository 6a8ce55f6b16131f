"""BBH answer extraction and normalisation, and MGSM's final-number rule, on hand-written outputs."""

from __future__ import annotations

import pytest

from eval_tasks.bbh.answers import (
    BBH_ANSWERS,
    AnswerKind,
    extract_answer_only,
    extract_cot,
    mc_choices,
    normalize,
    parse_options,
    score_generation,
)
from eval_tasks.bbh.functions import explain_answer_only, score_answer_only
from eval_tasks.mgsm.functions import score
from metalora.data.bbh import BBH_TASKS

DATE_INPUT = (
    "Today is Christmas Eve of 1937. What is the date 10 days ago in MM/DD/YYYY?\nOptions:\n"
    "(A) 12/14/2026\n(B) 12/14/1950\n(C) 12/14/2007\n(D) 12/14/1937\n(E) 07/14/1938\n(F) 12/14/1988"
)
RUIN_INPUT = (
    "Which of the following is a humorous edit of this artist or movie name: 'rita, sue and bob too'?\n"
    "Options:\n(A) rita\n(B) sue and bob too\n(C) rita\n(D) sue and bob poo"
)
NAVIGATE_INPUT = (
    "If you follow these instructions, do you return to the starting point? Turn left.\nOptions:\n- Yes\n- No"
)
FALLACY_INPUT = "Is the argument, given the explicitly stated premises, deductively valid or invalid?\nOptions:\n- valid \n- invalid"

# (task, input, target, model output, expected correct): answer-only outputs as models write them,
# with the leading space the prompt's "A:" leaves and whatever follows the answer.
ANSWER_ONLY_CASES = [
    # option letters
    ("date_understanding", DATE_INPUT, "(D)", " (D)", True),
    ("date_understanding", DATE_INPUT, "(D)", " (D)\n\nQ: next question", True),
    ("date_understanding", DATE_INPUT, "(D)", " D", True),
    ("date_understanding", DATE_INPUT, "(D)", " D.", True),
    ("date_understanding", DATE_INPUT, "(D)", " (d)", True),
    ("date_understanding", DATE_INPUT, "(D)", " (D) 12/14/1937", True),
    ("date_understanding", DATE_INPUT, "(D)", " 12/14/1937", True),  # the option's text
    ("date_understanding", DATE_INPUT, "(D)", " (A)", False),
    ("date_understanding", DATE_INPUT, "(D)", " (G)", False),  # not an option
    ("date_understanding", DATE_INPUT, "(D)", " d", False),  # bare lower case is not a letter
    ("date_understanding", DATE_INPUT, "(D)", "", False),
    ("date_understanding", DATE_INPUT, "(D)", "\n\n", False),
    # a target that is a text because the upstream options were split at commas
    ("ruin_names", RUIN_INPUT, "rita, sue and bob poo", " rita, sue and bob poo", True),
    ("ruin_names", RUIN_INPUT, "rita, sue and bob poo", " (D)", False),
    # True / False
    ("boolean_expressions", "not ( True ) and ( True ) is", "False", " False", True),
    ("boolean_expressions", "not ( True ) and ( True ) is", "False", " false.", True),
    ("boolean_expressions", "not ( True ) and ( True ) is", "False", " True", False),
    ("boolean_expressions", "not ( True ) and ( True ) is", "False", " ", False),
    # Yes / No, with the case of each task's targets
    ("navigate", NAVIGATE_INPUT, "No", " No", True),
    ("navigate", NAVIGATE_INPUT, "No", " no, you do not", True),
    ("navigate", NAVIGATE_INPUT, "No", " Yes", False),
    ("sports_understanding", 'Is the following sentence plausible? "Elias Lindholm beat the buzzer."', "no", " No.", True),
    ("sports_understanding", 'Is the following sentence plausible? "Elias Lindholm beat the buzzer."', "no", " yes", False),
    ("web_of_lies", "Question: Does Elanor tell the truth?", "Yes", " Yes", True),
    # valid / invalid: "invalid" must not count as "valid"
    ("formal_fallacies", FALLACY_INPUT, "invalid", " invalid", True),
    ("formal_fallacies", FALLACY_INPUT, "invalid", " valid", False),
    ("formal_fallacies", FALLACY_INPUT, "valid", " Valid.", True),
    ("formal_fallacies", FALLACY_INPUT, "valid", " invalid", False),
    # numbers
    ("multistep_arithmetic_two", "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =", "24", " 24", True),
    ("multistep_arithmetic_two", "((-1 + 2) * 3) =", "-11520", " -11,520.", True),
    ("multistep_arithmetic_two", "((-1 + 2) * 3) =", "-11520", " 11520", False),
    ("object_counting", "How many musical instruments do I have?", "8", " 8 instruments", True),
    ("object_counting", "How many musical instruments do I have?", "8", " 8.0", True),
    ("object_counting", "How many musical instruments do I have?", "8", " eight", False),
    ("object_counting", "How many musical instruments do I have?", "8", " 18", False),
    # sorted words
    ("word_sorting", "Sort the following words alphabetically: List: therefrom syndrome", "syndrome therefrom",
     " syndrome therefrom", True),
    ("word_sorting", "Sort the following words alphabetically: List: therefrom syndrome", "syndrome therefrom",
     " Syndrome, therefrom.", True),
    ("word_sorting", "Sort the following words alphabetically: List: therefrom syndrome", "syndrome therefrom",
     " therefrom syndrome", False),
    # Dyck closings: spacing does not matter, order does
    ("dyck_languages", "Input: [ { [", "] } ]", " ] } ]", True),
    ("dyck_languages", "Input: [ { [", "] } ]", " ]}]", True),
    ("dyck_languages", "Input: [ { [", "] } ]", " ] ] }", False),
    ("dyck_languages", "Input: [ { [", "] } ]", "", False),
]  # fmt: skip


@pytest.mark.parametrize(("task", "doc_input", "target", "output", "expected"), ANSWER_ONLY_CASES)
def test_answer_only_scoring(task, doc_input, target, output, expected):
    assert score_generation(task, doc_input, target, output, cot=False).correct is expected


# (target, generation as lm-eval returns it, i.e. cut before the stop sequence, strict, lenient)
STRICT_CASES = [
    ("(D)", " (D)", True, True),
    ("(D)", " (D)\n", True, True),
    ("(D)", " D", False, True),
    ("(D)", " (d)", False, True),
    ("(D)", " (D).", False, True),
    ("(D)", " (D) 12/14/1937", False, True),
    ("(D)", " (D)\nBecause", False, True),
    ("(D)", "", False, False),
    ("(D)", " (B)", False, False),
]


@pytest.mark.parametrize(("target", "generation", "strict", "lenient"), STRICT_CASES)
def test_answer_only_primary_metric_is_strict_and_normalised_match_is_secondary(target, generation, strict, lenient):
    doc = {"task": "date_understanding", "input": DATE_INPUT, "target": target}
    assert score_answer_only(doc, [generation]) == {
        "exact_match": float(strict), "exact_match_normalized": float(lenient)
    }
    explained = explain_answer_only(doc, generation)
    assert explained["prediction"] == generation.strip() and explained["gold"] == "(D)"
    assert (explained["prediction_normalized"] == explained["gold_normalized"]) is lenient


def test_strict_match_keeps_case_of_label_answers():
    doc = {"task": "web_of_lies", "input": "Does Ka tell the truth?", "target": "Yes"}
    assert score_answer_only(doc, [" Yes"]) == {"exact_match": 1.0, "exact_match_normalized": 1.0}
    assert score_answer_only(doc, [" yes"]) == {"exact_match": 0.0, "exact_match_normalized": 1.0}


COT_CASES = [
    ("date_understanding", DATE_INPUT, "(D)", " 10 days before 12/24/1937 is 12/14/1937. So the answer is (D).", True),
    ("date_understanding", DATE_INPUT, "(D)", "\nSo the Answer is D.\nQ: more", True),
    ("date_understanding", DATE_INPUT, "(D)", " Let me think. So the answer is (B).", False),
    ("date_understanding", DATE_INPUT, "(D)", " The date is 12/14/1937 (D).", False),  # no "the answer is"
    ("boolean_expressions", "not True is", "False", "\nZ = not True = False. So the answer is False.", True),
    ("navigate", NAVIGATE_INPUT, "No", " We end up 3 steps away. So the answer is No.", True),
    ("multistep_arithmetic_two", "(1 + 2) =", "-219", " ... = -219. So the answer is -219.", True),
    ("dyck_languages", "Input: [ { [", "] } ]", '\nSo, we need "]", "}", "]". So the answer is ] } ].', True),
    ("word_sorting", "List: oven costume counterpart", "costume counterpart oven",
     "\nSo the answer is costume counterpart oven.", True),
    ("word_sorting", "List: oven costume counterpart", "costume counterpart oven", "", False),
]  # fmt: skip


@pytest.mark.parametrize(("task", "doc_input", "target", "output", "expected"), COT_CASES)
def test_cot_scoring(task, doc_input, target, output, expected):
    assert score_generation(task, doc_input, target, output, cot=True).correct is expected


def test_extraction_takes_first_line_and_first_answer_sentence():
    assert extract_answer_only("  (B)\nQ: x\nA: (C)") == "(B)"
    assert extract_cot("So the answer is (A). Then the answer is (B).") == "(A)"
    assert extract_cot("thus the answer is -3.5.\nQ: next") == "-3.5."
    assert extract_cot("no conclusion") == ""


def test_normalised_forms_are_canonical():
    options = parse_options(DATE_INPUT)
    assert normalize(" (c) ", AnswerKind.LETTER, options) == "(C)"
    assert normalize("**(C)**", AnswerKind.LETTER, options) == "(C)"
    assert normalize("12/14/2007.", AnswerKind.LETTER, options) == "(C)"
    assert normalize("-1,024.0", AnswerKind.NUMBER) == "-1024"
    assert normalize("] ) )", AnswerKind.DYCK) == "]))"
    assert normalize("Apple,  banana", AnswerKind.WORDS) == "apple banana"
    assert normalize("", AnswerKind.YES_NO) == ""


def test_every_task_has_an_answer_kind_and_closed_tasks_have_choices():
    assert set(BBH_ANSWERS) == set(BBH_TASKS)
    assert mc_choices("date_understanding", DATE_INPUT) == ("(A)", "(B)", "(C)", "(D)", "(E)", "(F)")
    assert mc_choices("navigate", NAVIGATE_INPUT) == ("Yes", "No")
    assert mc_choices("formal_fallacies", FALLACY_INPUT) == ("valid", "invalid")
    assert mc_choices("boolean_expressions", "True and False is") == ("True", "False")
    assert mc_choices("word_sorting", "List: b a") is None
    assert [task for task in BBH_TASKS if not BBH_ANSWERS[task].closed] == [
        "dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("generation", "gold", "flexible", "strict"),
    [
        (" 18", "18", True, True),
        (" She makes 9 * 2 = 18 dollars.", "18", True, False),
        (" 1,250", "1250", True, True),
        (" $1,250.", "1250", True, True),
        (" 18.0", "18", False, False),  # lm-eval compares text without punctuation: "180" != "18"
        (" 18\nThe next one costs 5", "18", False, False),  # the last number counts
        (" 16 - 3 - 4 = 9", "18", False, False),
        (" 7 apples, so 18", "18", True, False),
        (" eighteen", "18", False, False),
        ("", "18", False, False),
    ],
)
def test_mgsm_scores_as_lm_evals_mgsm_direct(generation, gold, flexible, strict):
    assert score({"answer_number": gold}, [generation]) == {
        "exact_match": float(flexible), "exact_match_strict": float(strict)
    }
