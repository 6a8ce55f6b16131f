"""Dataset loader, prompt and scorer the MGSM task YAMLs name with ``!function``.

Zero-shot "direct" protocol of lm-eval's ``mgsm_direct_<lang>`` tasks (``tasks/mgsm/direct``):
the question after the language's own "Question:" word, then its "Answer:" word; greedy generation
that stops at the language's "Question:" word, ``</s>`` or ``<|im_end|>`` (registry.py) with lm-eval's
default cap of 256 tokens. Answers are extracted and compared by lm-eval's own filters and metric,
called here rather than through the YAML's ``filter_list`` so each item keeps one record with both
figures:
- ``exact_match`` (primary; lm-eval's "flexible-extract"): the last match of
  ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` in the generation;
- ``exact_match_strict`` (lm-eval's "remove_whitespace"): the whole generation, stripped;
each compared with the gold number by lm-eval's ``exact_match`` ignoring case and punctuation
(so "$1,250." matches 1250, and "18.0" does not match 18, as in lm-eval).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.mgsm import mgsm_rows

# (question prefix, answer cue) per language, as in lm-eval's mgsm direct prompts.
MGSM_PROMPT_WORDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "bn": ("প্রশ্ন: ", "Answer:"),
        "de": ("Frage: ", "Antwort:"),
        "en": ("Question: ", "Answer:"),
        "es": ("Pregunta: ", "Respuesta:"),
        "fr": ("Question : ", "Réponse :"),
        "ja": ("問題： ", "Answer:"),
        "ru": ("Задача: ", "Answer:"),
        "sw": ("Swali: ", "Answer:"),
        "te": ("ప్రశ్న: ", "Answer:"),
        "th": ("โจทย์: ", "Answer:"),
        "zh": ("问题： ", "Answer:"),
    }
)
# lm-eval's mgsm direct_yaml: the flexible-extract filter's pattern and group.
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def load(language: str, **metadata):
    rows = mgsm_rows(root_from_metadata(metadata), language)
    return dataset_dict({"test": [{**row, "language": language} for row in rows]})


def doc_to_text(doc: dict) -> str:
    prefix, cue = MGSM_PROMPT_WORDS[doc["language"]]
    return f"{prefix}{doc['question']}\n{cue}"


def final_number(text: str) -> str:
    """The last number in ``text`` in canonical form ("1,250.0" -> "1250"), or "" if none."""
    numbers = _NUMBER.findall(text.replace("\u2212", "-"))
    if not numbers:
        return ""
    value = float(numbers[-1].replace(",", ""))
    return str(int(value)) if value.is_integer() else str(value)


def extract(generation: str) -> dict[str, str]:
    """The answers lm-eval's two mgsm_direct filters take from a generation."""
    from lm_eval.filters.extraction import RegexFilter, WhitespaceFilter

    flexible = RegexFilter(regex_pattern=FLEXIBLE_PATTERN, group_select=-1).apply([[generation]], [{}])
    strict = WhitespaceFilter().apply([[generation]], [{}])
    return {"flexible": flexible[0][0], "strict": strict[0][0]}


def _matches(prediction: str, gold: str) -> float:
    from lm_eval.api.metrics import exact_match_hf_evaluate

    result = exact_match_hf_evaluate([prediction], [gold], ignore_case=True, ignore_punctuation=True)
    return float(result["exact_match"])


def score(doc: dict, results: list[str]) -> dict[str, float]:
    answers = extract(results[0])
    gold = str(doc["answer_number"])
    return {"exact_match": _matches(answers["flexible"], gold), "exact_match_strict": _matches(answers["strict"], gold)}


def explain(doc: dict, generation: str) -> dict:
    """The extracted answers and the gold number, for the per-sample records."""
    answers = extract(generation)
    return {"prediction": answers["flexible"], "prediction_strict": answers["strict"], "gold": str(doc["answer_number"])}
