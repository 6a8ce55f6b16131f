"""The training-task registry: every task a scenario can train on, and where its items come from.

Each task splits into a training pool (budgets are drawn from it) and held-out evaluation items,
disjoint by construction. Adding a task is one ``TaskSpec`` entry in ``_build_registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from metalora.data.bigbench import BIGBENCH_TASKS, bigbench_examples
from metalora.data.example import Example
from metalora.data.gsm8k import gsm8k_examples
from metalora.data.root import DataRoot
from metalora.data.xcopa import XCOPA_LANGUAGES, xcopa_examples
from metalora.errors import MlbenchError

# BIG-bench JSON tasks have no official split: this share of each task (chosen by prompt hash, so
# duplicated prompts always land on the same side) is held out for evaluation, never trained on.
BIGBENCH_HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class TaskSplit:
    """A task's training pool and held-out items; a training item whose prompt also appears among
    the held-out items is dropped, so the two can never overlap whatever the source files hold."""

    train: list[Example]
    held_out: list[Example]

    def __post_init__(self):
        held = {example.prompt_hash for example in self.held_out}
        object.__setattr__(self, "train", [e for e in self.train if e.prompt_hash not in held])


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str
    files: tuple[str, ...]  # every file under a data root that the split reads (hashed into run ids)
    load: Callable[[DataRoot], TaskSplit]


def split_by_prompt_hash(examples: list[Example], held_out_fraction: float) -> TaskSplit:
    """Deterministic split that keeps every copy of a prompt on one side."""
    threshold = int(held_out_fraction * 2**32)
    train, held_out = [], []
    for example in examples:
        (held_out if int(example.prompt_hash[:8], 16) < threshold else train).append(example)
    return TaskSplit(train=train, held_out=held_out)


def _bigbench_spec(name: str, family: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        family=family,
        files=(f"bigbench/{name}/task.json",),
        load=lambda root: split_by_prompt_hash(bigbench_examples(root, name), BIGBENCH_HELD_OUT_FRACTION),
    )


def _xcopa_spec(language: str) -> TaskSpec:
    name = f"xcopa_{language}"
    return TaskSpec(
        name=name,
        family="multilingual",
        files=(f"xcopa/data/{language}/val.{language}.jsonl", f"xcopa/data/{language}/test.{language}.jsonl"),
        load=lambda root: TaskSplit(
            train=xcopa_examples(root, language, "val", name),
            held_out=xcopa_examples(root, language, "test", name),
        ),
    )


# Skill family of each BIG-bench pool task (the multitask scenario takes one task per family).
_BIGBENCH_FAMILIES = {
    "strategyqa": "commonsense_reasoning",
    "social_iqa": "social_reasoning",
    "logical_fallacy_detection": "logic",
    "vitaminc_fact_verification": "fact_verification",
    "winowhy": "coreference",
    "implicatures": "pragmatics",
    "presuppositions_as_nli": "nli",
    "timedial": "temporal_reasoning",
    "epistemic_reasoning": "nli",
    "play_dialog_same_or_different": "dialogue",
    "metaphor_boolean": "figurative_language",
    "question_selection": "reading_comprehension",
}


def _build_registry() -> Mapping[str, TaskSpec]:
    specs = [_bigbench_spec(name, _BIGBENCH_FAMILIES[name]) for name in BIGBENCH_TASKS]
    specs.append(
        TaskSpec(
            name="gsm8k",
            family="math",
            files=("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
            load=lambda root: TaskSplit(
                train=gsm8k_examples(root, "train"), held_out=gsm8k_examples(root, "test")
            ),
        )
    )
    specs.extend(_xcopa_spec(language) for language in XCOPA_LANGUAGES)
    return MappingProxyType({spec.name: spec for spec in specs})


TRAINING_TASKS: Mapping[str, TaskSpec] = _build_registry()

# Held-out items per training task in shared/data (the ``heldout`` benchmark evaluates them all);
# the tests check the data against this table.
HELD_OUT_COUNTS: Mapping[str, int] = MappingProxyType(
    {
        "strategyqa": 479, "social_iqa": 408, "logical_fallacy_detection": 535,
        "vitaminc_fact_verification": 10907, "winowhy": 582, "implicatures": 113,
        "presuppositions_as_nli": 147, "timedial": 532, "epistemic_reasoning": 395,
        "play_dialog_same_or_different": 664, "metaphor_boolean": 145, "question_selection": 309,
        "gsm8k": 1319,
    }
    | {f"xcopa_{language}": 500 for language in XCOPA_LANGUAGES}
)  # fmt: skip


def get_task(name: str) -> TaskSpec:
    try:
        return TRAINING_TASKS[name]
    except KeyError:
        raise MlbenchError(
            f"unknown training task {name!r}; choose from {', '.join(sorted(TRAINING_TASKS))}"
        ) from None
