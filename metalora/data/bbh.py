"""BIG-Bench Hard: ``bbh/bbh/<task>.json`` items and ``bbh/cot-prompts/<task>.txt`` exemplars.

Items are ``{"input", "target"}`` as in the official repository. Each prompt file holds a canary
header, a ``-----`` line, a one-line task description and three ``Q: ... / A: Let's think step by
step. ... So the answer is X.`` exemplars; the answer-only exemplars are the same three with the
reasoning removed (Suzgun et al.'s answer-only prompts). The exemplars are not among the 6,511
evaluated items (checked by the tests), so every item can be evaluated.

Hub fallback: items come from ``lukaemon/bbh`` (same schema). That dataset has no prompt files, so
the exemplars are read from the chain-of-thought task configs shipped inside the installed
``lm_eval`` package (``tasks/bbh/cot_fewshot/<task>.yaml``, the official text except that lm-eval
always starts the reasoning on a new line, where sports_understanding's file continues the "A:" line)
and rewritten into the prompt-file layout, so one parser serves both sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from metalora.data.root import DataRoot, read_json, read_text
from metalora.errors import MlbenchError

BBH_TASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

# Official item counts (250 per task except these three); 6,511 in all.
BBH_ITEM_COUNTS = {task: 250 for task in BBH_TASKS} | {
    "causal_judgement": 187,
    "penguins_in_a_table": 146,
    "snarks": 178,
}

COT_OPENER = "Let's think step by step."
_ANSWER_MARK = "So the answer is "


@dataclass(frozen=True)
class BbhExemplar:
    """One prompt-file exemplar: the question, its reasoning, and the bare answer."""

    input: str
    reasoning: str  # verbatim text after "Let's think step by step." (from its "\n" or " "), answer included
    answer: str  # the text after "So the answer is", without the final period


@dataclass(frozen=True)
class BbhPrompt:
    description: str
    exemplars: tuple[BbhExemplar, ...]


def bbh_item_file(task: str) -> str:
    return f"bbh/bbh/{task}.json"


def bbh_prompt_file(task: str) -> str:
    return f"bbh/cot-prompts/{task}.txt"


def _check_task(task: str) -> None:
    if task not in BBH_TASKS:
        raise MlbenchError(f"unknown BBH task {task!r}; choose from {', '.join(BBH_TASKS)}")


def bbh_items(root: DataRoot, task: str) -> list[dict]:
    """The task's evaluation items as ``{"input", "target"}`` dicts, in file order."""
    _check_task(task)
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        return parse_bbh_items(
            {"examples": load_hub_rows("lukaemon/bbh", task, "test")}, f"lukaemon/bbh ({task})"
        )
    path = root.file(bbh_item_file(task))
    return parse_bbh_items(read_json(path), str(path))


def parse_bbh_items(data: object, source: str) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise MlbenchError(
            f"malformed BBH file {source} at line 1: expected an object with an 'examples' list"
        )
    items = []
    for number, example in enumerate(data["examples"], start=1):
        if not (
            isinstance(example, dict)
            and isinstance(example.get("input"), str)
            and isinstance(example.get("target"), str)
        ):
            raise MlbenchError(
                f"malformed BBH file {source} at line 1, example {number}: expected string 'input' and 'target'"
            )
        items.append({"input": example["input"], "target": example["target"]})
    return items


def bbh_prompt(root: DataRoot, task: str) -> BbhPrompt:
    """The task's official three-exemplar chain-of-thought prompt."""
    _check_task(task)
    if root.is_hub:
        return parse_bbh_prompt(_prompt_text_from_lm_eval(task), f"lm_eval bbh/cot_fewshot/{task}.yaml")
    path = root.file(bbh_prompt_file(task))
    return parse_bbh_prompt(read_text(path), str(path))


def parse_bbh_prompt(text: str, source: str) -> BbhPrompt:
    # The canary header ends at the first "-----" line; it must never reach a prompt.
    header, separator, body = text.partition("\n-----\n")
    if not separator:
        raise MlbenchError(f"malformed BBH prompt file {source} at line 1: no '-----' line after the header")
    first_body_line = header.count("\n") + 3
    description, *blocks = re.split(r"\n\n(?=Q: )", body.strip("\n"))
    exemplars = []
    for block in blocks:
        line = first_body_line + body[: body.index(block)].count("\n")
        question, marker, answer_text = block.partition(f"\nA: {COT_OPENER}")
        if not marker or not question.startswith("Q: ") or _ANSWER_MARK not in answer_text:
            raise MlbenchError(
                f"malformed BBH prompt file {source} at line {line}: expected 'Q: ...' then "
                f"'A: {COT_OPENER} ... {_ANSWER_MARK}X.'"
            )
        reasoning = answer_text.rstrip("\n")
        answer = reasoning.rsplit(_ANSWER_MARK, 1)[1].strip().removesuffix(".")
        exemplars.append(BbhExemplar(input=question[3:], reasoning=reasoning, answer=answer))
    if len(exemplars) != 3 or not description.strip():
        raise MlbenchError(
            f"malformed BBH prompt file {source} at line {first_body_line}: expected a task description "
            f"and 3 exemplars, found {len(exemplars)}"
        )
    return BbhPrompt(description=description.strip(), exemplars=tuple(exemplars))


def _prompt_text_from_lm_eval(task: str) -> str:
    """Rebuild the official prompt file from lm-eval's copy of it (for the hub fallback)."""
    import lm_eval
    import yaml

    path = Path(lm_eval.__file__).parent / "tasks" / "bbh" / "cot_fewshot" / f"{task}.yaml"
    if not path.is_file():
        raise MlbenchError(
            f"BBH prompt for {task} not found in the installed lm_eval ({path}); set MLBENCH_DATA_DIR or "
            "--data-root to a local mirror laid out like shared/data"
        )
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    samples = config["fewshot_config"]["samples"]
    blocks = [f"Q: {sample['input']}\nA: {COT_OPENER}\n{sample['target']}" for sample in samples]
    return "canary (not stored)\n-----\n" + config["description"].strip() + "\n\n" + "\n\n".join(blocks)
