"""Dataset loader and scorers the ``heldout`` task YAMLs name with ``!function``.

Each task of the benchmark is one training task of ``metalora.data.registry`` and evaluates that
task's held-out items (``TaskSplit.held_out``: the 20% of a BIG-bench task chosen by prompt hash,
GSM8K's test split, an XCOPA language's test split), which are disjoint from its training pool by
construction, so no budget drawn from the pool can contain one. The prompts are the training
prompts, so the model is asked exactly as it was trained:
- multiple-choice tasks (BIG-bench, XCOPA): log-likelihood of each choice text as the continuation
  of the prompt (the training target is the gold choice text), ``acc`` = the arg-max is the gold;
- GSM8K: greedy generation after ``Question: ...\nAnswer:`` (lm-eval's gsm8k prompt and stop
  sequences), ``acc`` = exact match of the final number (``final_number``) with the gold one.
One metric name for both kinds keeps the benchmark's macro a mean of like-for-like accuracies.
"""

from __future__ import annotations

import re

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.registry import get_task

# "#### 72" ends every GSM8K answer the model was trained on.
_MARKED = re.compile(r"####\s*(-?[$\d][\d,]*(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def held_out_docs(task: str, **metadata) -> list[dict]:
    """The held-out items of one training task as lm-eval docs, in the split's order."""
    examples = get_task(task).load(root_from_metadata(metadata)).held_out
    if task == "gsm8k":
        return [
            {"task": task, "prompt": ex.prompt, "target": ex.target, "final_answer": ex.meta["final_answer"]}
            for ex in examples
        ]
    return [
        {"task": task, "prompt": ex.prompt, "choices": list(ex.choices), "answer_index": ex.answer_index}
        for ex in examples
    ]


def load(task: str, **metadata):
    return dataset_dict({"test": held_out_docs(task, **metadata)})


def final_number(text: str) -> str:
    """The answer number of a GSM8K-style generation in canonical form, or "" if it has none.

    The number after the last "####" (the trained answer format); without one, the last number in
    the text. "$1,250.00" -> "1250", "-3.50" -> "-3.5".
    """
    marked = _MARKED.findall(text)
    numbers = marked or _NUMBER.findall(text)
    if not numbers:
        return ""
    value = float(numbers[-1].replace(",", "").replace("$", ""))
    return str(int(value)) if value.is_integer() else str(value)


def score_gsm8k(doc: dict, results: list[str]) -> dict[str, float]:
    prediction = final_number(results[0])
    return {"acc": float(bool(prediction) and prediction == final_number(doc["final_answer"]))}


def explain(doc: dict, generation: str) -> dict:
    """The final numbers compared, for the per-sample records (GSM8K items only)."""
    return {"prediction": final_number(generation), "gold": final_number(doc["final_answer"])}
