"""Dataset loader and prompt functions the XWinograd task YAMLs name with ``!function``.

Scoring follows lm-eval's ``xwinograd_<lang>`` (partial evaluation, Trinh and Le 2018): each option
replaces the ``_`` to form a context, and the option whose context gives the rest of the sentence
the higher log-likelihood wins. lm-eval's "multiple input" mode expresses this: ``doc_to_text``
returns the gold option's index, ``doc_to_choice`` the contexts, ``doc_to_target`` the shared
continuation.
"""

from __future__ import annotations

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.xwinograd import xwinograd_rows


def load(language: str, **metadata):
    return dataset_dict({"test": xwinograd_rows(root_from_metadata(metadata), language)})


def doc_to_text(doc: dict) -> int:
    return int(doc["answer"]) - 1


def doc_to_choice(doc: dict) -> list[str]:
    blank = doc["sentence"].index("_")
    return [doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"])]


def doc_to_target(doc: dict) -> str:
    return doc["sentence"][doc["sentence"].index("_") + 1 :].strip()
