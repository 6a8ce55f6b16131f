"""BIG-bench JSON tasks: ``bigbench/<task>/task.json``.

Prompts are formatted by BIG-bench's own rules for JSON tasks: ``task_prefix``, then per example
``example_input_prefix`` + input (+ each choice after ``choice_prefix`` when
``append_choices_to_input``) + ``example_output_prefix``; the defaults below are BIG-bench's. The
target is the choice with the highest ``target_scores`` value.
"""

from __future__ import annotations

from metalora.data.example import Example
from metalora.data.root import DataRoot, read_json
from metalora.errors import MlbenchError

BIGBENCH_TASKS = (
    "strategyqa",
    "social_iqa",
    "logical_fallacy_detection",
    "vitaminc_fact_verification",
    "winowhy",
    "implicatures",
    "presuppositions_as_nli",
    "timedial",
    "epistemic_reasoning",
    "play_dialog_same_or_different",
    "metaphor_boolean",
    "question_selection",
)

_DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
}


def format_bigbench_prompt(task: dict, example: dict) -> str:
    settings = {key: task.get(key, default) for key, default in _DEFAULTS.items()}
    text = settings["task_prefix"] + settings["example_input_prefix"] + example["input"]
    if settings["append_choices_to_input"]:
        text += "".join(settings["choice_prefix"] + choice for choice in example["target_scores"])
    return text + settings["example_output_prefix"]


def bigbench_task_data(root: DataRoot, name: str) -> dict:
    if name not in BIGBENCH_TASKS:
        raise MlbenchError(f"unknown BIG-bench task {name!r}; choose from {', '.join(BIGBENCH_TASKS)}")
    if root.is_hub:
        return _hub_task_data(name)
    path = root.file(f"bigbench/{name}/task.json")
    return check_bigbench_task(read_json(path), f"BIG-bench task file {path}")


def check_bigbench_task(data: object, source: str) -> dict:
    """Refuse a task whose shape the formatter cannot use, naming the field or example."""
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise MlbenchError(f"malformed {source}: expected an object with an 'examples' list")
    for key, default in _DEFAULTS.items():
        if key in data and not isinstance(data[key], type(default)):
            kind = "true or false" if isinstance(default, bool) else "text"
            raise MlbenchError(f"malformed {source}: '{key}' must be {kind}, got {data[key]!r}")
    for number, item in enumerate(data["examples"]):
        problem = _example_problem(item)
        if problem:
            raise MlbenchError(f"malformed {source}: example {number}: {problem}")
    return data


def _example_problem(item: object) -> str | None:
    if not isinstance(item, dict):
        return f"expected an object with 'input' and 'target_scores', got {type(item).__name__}"
    if not isinstance(item.get("input"), str):
        return "needs 'input' as text"
    scores = item.get("target_scores")
    if not isinstance(scores, dict) or not scores:
        return "needs 'target_scores' as a non-empty object {choice: score}"
    for choice, score in scores.items():
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            return f"target_scores[{choice!r}] must be a number, got {score!r}"
    return None


def _hub_task_data(name: str) -> dict:
    """The hub copy (tasksource/bigbench) ships prompts already formatted by BIG-bench; wrap them
    as a task with empty prefixes so the formatter above leaves them as they are."""
    from metalora.data.hub import load_hub_rows

    rows = load_hub_rows("tasksource/bigbench", name, "train") + load_hub_rows(
        "tasksource/bigbench", name, "validation"
    )
    examples = [
        {
            "input": row["inputs"],
            "target_scores": dict(zip(row["multiple_choice_targets"], row["multiple_choice_scores"])),
        }
        for row in rows
    ]
    return check_bigbench_task({
        "examples": examples,
        "task_prefix": "",
        "example_input_prefix": "",
        "example_output_prefix": "",
        "append_choices_to_input": False,
    }, f"hub data tasksource/bigbench ({name})")


def bigbench_examples(root: DataRoot, name: str) -> list[Example]:
    task = bigbench_task_data(root, name)
    examples = []
    for number, item in enumerate(task["examples"]):
        scores = item["target_scores"]  # shape checked by check_bigbench_task
        choices = tuple(scores)
        answer = max(range(len(choices)), key=lambda index: scores[choices[index]])
        examples.append(
            Example(
                task=name,
                prompt=format_bigbench_prompt(task, item),
                target=choices[answer],
                choices=choices,
                answer_index=answer,
                meta={"index": number, "input": item["input"]},
            )
        )
    return examples
