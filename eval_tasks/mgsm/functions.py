"""Dataset loader, prompt and scorer the MGSM task YAMLs name with ``!function``.

Zero-shot "direct" protocol: the question after the language's own "Question:" word, then its
"Answer:" word, as in lm-eval's ``mgsm_direct_<lang>`` tasks. The model's answer is the last number
in its generation (commas as thousands separators are dropped), compared numerically with the
gold number: exact match on the final number.
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


def score(doc: dict, results: list[str]) -> dict[str, float]:
    prediction = final_number(results[0])
    return {"exact_match": float(bool(prediction) and prediction == final_number(doc["answer_number"]))}


def explain(doc: dict, generation: str) -> dict:
    """The final numbers compared, for the per-sample records."""
    return {"prediction": final_number(generation), "gold": final_number(doc["answer_number"])}
