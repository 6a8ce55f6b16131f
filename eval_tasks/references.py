"""Reference rows computed from the data: what trivial answer strategies score on the very items a
run evaluated (the same loaders as the task YAMLs, the same first ``limit`` items per task).

Rows, per task and as the benchmark's macro mean (over the same tasks as its scores' macro, so
XWinograd's small languages are left out there too):
- ``random``: the expected score of guessing uniformly among an item's options (1/n); an item
  without a closed option set (numbers, sorted words, brackets, GSM8K, MGSM), or whose gold is none
  of its options, counts 0;
- ``always_position``: always answering the option position that is most often gold in the task
  ("always A"); items without options count 0;
- ``majority``: always answering the task's most frequent gold answer text (the continuation a
  multiple-choice task scores, or the target a generative one matches: for MMLU that is the
  letter, so it equals ``always_position``; for GSM8K and MGSM the most frequent number).
Ties between positions or answers do not matter: only the largest count is used.

The result is ``{benchmark: {row: {"macro": float, "per_task": {task: float}}}}`` (results.json's
``references``). Adding a benchmark means one entry in ``_ANSWERS``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from eval_tasks.bbh import functions as bbh
from eval_tasks.bbh.answers import mc_choices
from eval_tasks.dataroot import task_metadata
from eval_tasks.heldout import functions as heldout
from eval_tasks.mgsm import functions as mgsm
from eval_tasks.mmlu import functions as mmlu
from eval_tasks.registry import BenchmarkSpec
from eval_tasks.xcopa import functions as xcopa
from eval_tasks.xwinograd import functions as xwinograd
from metalora.data.root import DataRoot
from metalora.data.xcopa import xcopa_choice

REFERENCE_ROWS = ("random", "always_position", "majority")


@dataclass(frozen=True)
class ItemAnswer:
    """What the reference strategies need to know about one evaluated item."""

    gold: str  # the gold answer as the primary metric compares it
    position: int | None = None  # index of the gold among the item's options (None: not among them)
    n_options: int | None = None  # size of the item's closed option set (None: open answer)


def task_references(items: Sequence[ItemAnswer]) -> dict[str, float]:
    """The three reference scores of one task's items."""
    count = len(items)
    positions = Counter(item.position for item in items if item.position is not None)
    golds = Counter(item.gold for item in items)
    return {
        "random": sum(1 / item.n_options for item in items if item.n_options and item.position is not None) / count,
        "always_position": max(positions.values(), default=0) / count,
        "majority": max(golds.values()) / count,
    }


def _bbh_generated(doc: dict) -> ItemAnswer:
    choices = mc_choices(doc["task"], doc["input"])
    target = doc["target"].strip()
    if choices is None:
        return ItemAnswer(target)
    return ItemAnswer(target, choices.index(target) if target in choices else None, len(choices))


def _choice(doc: dict, choices_key: str, index_key: str) -> ItemAnswer:
    choices = doc[choices_key]
    return ItemAnswer(str(choices[doc[index_key]]), doc[index_key], len(choices))


def _heldout(doc: dict) -> ItemAnswer:
    if "final_answer" in doc:  # GSM8K: an open number
        return ItemAnswer(doc["final_answer"])
    return _choice(doc, "choices", "answer_index")


def _mmlu(doc: dict) -> ItemAnswer:
    return ItemAnswer("ABCD"[doc["answer"]], doc["answer"], len(doc["choices"]))


def _xcopa(doc: dict) -> ItemAnswer:
    label = int(doc["label"])
    return ItemAnswer(xcopa_choice(doc[f"choice{label + 1}"]), label, 2)


def _xwinograd(doc: dict) -> ItemAnswer:
    position = int(doc["answer"]) - 1
    return ItemAnswer(doc[f"option{position + 1}"], position, 2)


def _mgsm(doc: dict) -> ItemAnswer:
    return ItemAnswer(str(doc["answer_number"]))


# benchmark -> (the loader its YAMLs name as custom_dataset, doc -> ItemAnswer)
_ANSWERS: Mapping[str, tuple[Callable, Callable[[dict], ItemAnswer]]] = MappingProxyType(
    {
        "heldout": (heldout.load, _heldout),
        "bbh": (bbh.load_answer_only, _bbh_generated),
        "bbh_cot": (bbh.load_cot, _bbh_generated),
        "bbh_mc": (bbh.load_mc, lambda doc: _choice(doc, "choices", "answer_index")),
        "mmlu": (mmlu.load, _mmlu),
        "mmlu_5shot": (mmlu.load, _mmlu),
        "xcopa": (xcopa.load, _xcopa),
        "xwinograd": (xwinograd.load, _xwinograd),
        "mgsm": (mgsm.load, _mgsm),
    }
)


def item_answers(spec: BenchmarkSpec, subtask: str, root: DataRoot) -> list[ItemAnswer]:
    """Every evaluation item of one task, in the order lm-eval evaluates them."""
    load, answer = _ANSWERS[spec.name]
    docs = load(**spec.dataset_kwargs(subtask), **task_metadata(root))["test"]
    return [answer(doc) for doc in docs]


def benchmark_references(
    spec: BenchmarkSpec, subtasks: Sequence[str], root: DataRoot, limit: int | None = None
) -> dict[str, dict]:
    """The reference rows of one benchmark over ``subtasks``, each on its first ``limit`` items."""
    per_task, in_macro = {}, []
    for subtask in subtasks:
        items = item_answers(spec, subtask, root)
        per_task[subtask] = task_references(items[:limit])
        if spec.min_items_for_macro is None or len(items) >= spec.min_items_for_macro:
            in_macro.append(subtask)
    in_macro = in_macro or list(subtasks)  # as results.aggregate_benchmark
    return {
        row: {
            "macro": sum(per_task[task][row] for task in in_macro) / len(in_macro),
            "per_task": {task: values[row] for task, values in per_task.items()},
        }
        for row in REFERENCE_ROWS
    }
