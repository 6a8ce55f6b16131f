"""Dataset loader and prompt functions the XCOPA task YAMLs name with ``!function``.

The prompt is the training layer's (``metalora.data.xcopa``), which is lm-eval's ``xcopa_<lang>``
format: premise without its final period plus the language's cause/effect connector, choices with
a lower-cased first letter. Only the 500-item test split is evaluated; the validation split is the
multilingual scenario's training pool.
"""

from __future__ import annotations

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.xcopa import xcopa_choice, xcopa_prompt, xcopa_rows


def load(language: str, **metadata):
    rows = xcopa_rows(root_from_metadata(metadata), language, "test")
    return dataset_dict({"test": [{**row, "language": language} for row in rows]})


def doc_to_text(doc: dict) -> str:
    return xcopa_prompt(doc, doc["language"])


def doc_to_choice(doc: dict) -> list[str]:
    return [xcopa_choice(doc["choice1"]), xcopa_choice(doc["choice2"])]
