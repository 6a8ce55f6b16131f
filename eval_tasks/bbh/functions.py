"""Dataset loaders and scorers the BBH task YAMLs name with ``!function``.

Every variant gives lm-eval a ``test`` split (the task's items) and a ``fewshot`` split (its three
prompt-file exemplars, which are not among the items). The task description travels in each doc
so the YAMLs hold no data.

- ``bbh``: exemplar answers are the prompt-file answers with the reasoning removed; scored by strict
  exact match (``exact_match``, the original protocol) and by normalised match
  (``exact_match_normalized``, eval_tasks/bbh/answers.py).
- ``bbh_cot``: exemplar answers are the official reasoning, verbatim.
- ``bbh_mc``: only tasks with a closed answer set; each doc carries its ``choices`` and
  ``answer_index``. Items whose target is none of their options (three upstream items whose
  options were split at commas: one in movie_recommendation, two in ruin_names) cannot be scored
  by choice and are left out of this variant.
"""

from __future__ import annotations

from eval_tasks.bbh.answers import mc_choices, score_generation, strict_match
from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.bbh import BbhPrompt, bbh_items, bbh_prompt


def _load(task: str, metadata: dict) -> tuple[list[dict], BbhPrompt]:
    root = root_from_metadata(metadata)
    return bbh_items(root, task), bbh_prompt(root, task)


def load_answer_only(task: str, **metadata):
    items, prompt = _load(task, metadata)
    test = [{"task": task, "description": prompt.description, **item} for item in items]
    fewshot = [
        {"task": task, "description": prompt.description, "input": ex.input, "target": ex.answer}
        for ex in prompt.exemplars
    ]
    return dataset_dict({"test": test, "fewshot": fewshot})


def load_cot(task: str, **metadata):
    items, prompt = _load(task, metadata)
    test = [{"task": task, "description": prompt.description, **item} for item in items]
    fewshot = [
        {"task": task, "description": prompt.description, "input": ex.input, "target": ex.answer,
         "reasoning": ex.reasoning}
        for ex in prompt.exemplars
    ]  # fmt: skip
    return dataset_dict({"test": test, "fewshot": fewshot})


def load_mc(task: str, **metadata):
    items, prompt = _load(task, metadata)
    exemplars = [{"input": ex.input, "target": ex.answer} for ex in prompt.exemplars]
    return dataset_dict({"test": _mc_docs(task, prompt, items), "fewshot": _mc_docs(task, prompt, exemplars)})


def _mc_docs(task: str, prompt: BbhPrompt, items: list[dict]) -> list[dict]:
    docs = []
    for item in items:
        choices = mc_choices(task, item["input"])
        if choices is None or item["target"] not in choices:
            continue
        docs.append(
            {
                "task": task,
                "description": prompt.description,
                "input": item["input"],
                "target": item["target"],
                "choices": list(choices),
                "answer_index": choices.index(item["target"]),
            }
        )
    return docs


def score_answer_only(doc: dict, results: list[str]) -> dict[str, float]:
    score = score_generation(doc["task"], doc["input"], doc["target"], results[0], cot=False)
    return {
        "exact_match": float(strict_match(doc["target"], results[0])),
        "exact_match_normalized": float(score.correct),
    }


def score_cot(doc: dict, results: list[str]) -> dict[str, float]:
    score = score_generation(doc["task"], doc["input"], doc["target"], results[0], cot=True)
    return {"exact_match": float(score.correct)}


def explain_answer_only(doc: dict, generation: str) -> dict:
    """For the per-sample records: what the strict metric compares (the stripped generation and
    target), and what the normalised metric compares."""
    score = score_generation(doc["task"], doc["input"], doc["target"], generation, cot=False)
    return {
        "prediction": generation.strip(),
        "gold": doc["target"].strip(),
        "prediction_normalized": score.prediction,
        "gold_normalized": score.gold,
    }


def explain_cot(doc: dict, generation: str) -> dict:
    score = score_generation(doc["task"], doc["input"], doc["target"], generation, cot=True)
    return {"prediction": score.prediction, "gold": score.gold}
