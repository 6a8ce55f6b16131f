"""XCOPA (11 languages): ``xcopa/data/<lang>/{val,test}.<lang>.jsonl``.

The prompt follows lm-eval's ``xcopa_<lang>`` task exactly (premise without its final period, then
the language's cause/effect connector; the choice, first letter lower-cased, is the continuation) so
that training on the validation split and evaluating on the test split use one format.
"""

from __future__ import annotations

from metalora.data.example import Example
from metalora.data.root import DataRoot, read_jsonl, row_problem
from metalora.errors import MlbenchError

XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")

# Connectors as in lm-eval's xcopa/utils.py (one per language and question type).
XCOPA_CONNECTORS = {
    "et": {"cause": "sest", "effect": "seetõttu"},
    "ht": {"cause": "poukisa", "effect": "donk sa"},
    "it": {"cause": "perché", "effect": "quindi"},
    "id": {"cause": "karena", "effect": "maka"},
    "qu": {"cause": "imataq", "effect": "chaymi"},
    "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
    "zh": {"cause": "因为", "effect": "所以"},
    "ta": {"cause": "காரணமாக", "effect": "எனவே"},
    "th": {"cause": "เพราะ", "effect": "ดังนั้น"},
    "tr": {"cause": "çünkü", "effect": "bu yüzden"},
    "vi": {"cause": "bởi vì", "effect": "vì vậy"},
}

XCOPA_SCHEMA = {"premise": str, "choice1": str, "choice2": str, "question": str, "label": int}


def xcopa_row_problem(row: dict) -> str | None:
    if row["question"] not in ("cause", "effect"):
        return f"field 'question' must be 'cause' or 'effect', got {row['question']!r}"
    if row["label"] not in (0, 1):
        return f"field 'label' must be 0 or 1, got {row['label']!r}"
    if not row["choice1"] or not row["choice2"] or not row["premise"].strip():
        return "fields 'premise', 'choice1' and 'choice2' must not be empty"
    return None


# Local file split names; the hub dataset calls "val" "validation".
_HUB_SPLITS = {"val": "validation", "test": "test"}


def xcopa_prompt(doc: dict, language: str) -> str:
    connector = XCOPA_CONNECTORS[language][doc["question"]]
    return doc["premise"].strip()[:-1] + f" {connector}"


def xcopa_choice(text: str) -> str:
    return text[0].lower() + text[1:]


def xcopa_rows(root: DataRoot, language: str, split: str) -> list[dict]:
    """Upstream rows of one language and split (``val`` or ``test``), from the root or the hub."""
    if language not in XCOPA_LANGUAGES:
        raise MlbenchError(f"unknown XCOPA language {language!r}; choose from {', '.join(XCOPA_LANGUAGES)}")
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        rows = load_hub_rows("cambridgeltl/xcopa", language, _HUB_SPLITS[split])
        for number, row in enumerate(rows, start=1):
            problem = row_problem(row, XCOPA_SCHEMA) or xcopa_row_problem(row)
            if problem:
                raise MlbenchError(f"malformed hub data cambridgeltl/xcopa ({language}) row {number}: {problem}")
        return rows
    return read_jsonl(root.file(f"xcopa/data/{language}/{split}.{language}.jsonl"), XCOPA_SCHEMA, xcopa_row_problem)


def xcopa_examples(root: DataRoot, language: str, split: str, task_name: str) -> list[Example]:
    examples = []
    for doc in xcopa_rows(root, language, split):
        choices = (" " + xcopa_choice(doc["choice1"]), " " + xcopa_choice(doc["choice2"]))
        label = int(doc["label"])
        examples.append(
            Example(
                task=task_name,
                prompt=xcopa_prompt(doc, language),
                target=choices[label],
                choices=choices,
                answer_index=label,
                meta={"idx": doc.get("idx"), "language": language},
            )
        )
    return examples
