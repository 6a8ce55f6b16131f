"""GSM8K: ``gsm8k/{train,test}.jsonl`` rows ``{"question", "answer"}``; answers end ``#### N``.

Trained as question -> full worked answer (the reasoning is the useful signal); the final number
is kept in ``meta`` for exact-match scoring.
"""

from __future__ import annotations

from metalora.data.example import Example
from metalora.data.root import DataRoot, read_jsonl, row_problem
from metalora.errors import MlbenchError

GSM8K_SCHEMA = {"question": str, "answer": str}


def gsm8k_final_answer(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def gsm8k_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def gsm8k_row_problem(row: dict) -> str | None:
    if "####" not in row["answer"]:
        return "field 'answer' must end with '#### <number>'"
    return None


def gsm8k_examples(root: DataRoot, split: str, task_name: str = "gsm8k") -> list[Example]:
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        rows = load_hub_rows("openai/gsm8k", "main", split)
        for number, row in enumerate(rows, start=1):
            problem = row_problem(row, GSM8K_SCHEMA) or gsm8k_row_problem(row)
            if problem:
                raise MlbenchError(f"malformed hub data openai/gsm8k ({split}) row {number}: {problem}")
    else:
        rows = read_jsonl(root.file(f"gsm8k/{split}.jsonl"), GSM8K_SCHEMA, gsm8k_row_problem)
    return [
        Example(
            task=task_name,
            prompt=gsm8k_prompt(row["question"]),
            target=" " + row["answer"].strip(),
            meta={"final_answer": gsm8k_final_answer(row["answer"])},
        )
        for row in rows
    ]
