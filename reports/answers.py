"""Answer collapse: a run that gives the same answer to (nearly) every item of a benchmark.

A small model often answers "A" to almost every MMLU question; its accuracy is then the share of
items whose gold answer is "A", whatever the method, and rows that differ in training look equal.
From the per-sample records: the answer of an item is the chosen option's text for a
multiple-choice record (``choices[prediction]``; its position when there is no text) and the
extracted ``prediction`` of a generated one. A benchmark is flagged when one answer covers at
least ``THRESHOLD`` of at least ``MIN_ITEMS`` items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

THRESHOLD = 0.9
MIN_ITEMS = 10  # below this a shared answer says little


@dataclass(frozen=True)
class Collapse:
    answer: str
    count: int
    total: int

    @property
    def share(self) -> float:
        return self.count / self.total

    def describe(self) -> str:
        return f"the same answer {self.answer!r} on {self.count} of {self.total} items ({self.share:.0%})"


def answer(record: dict) -> str | None:
    prediction = record.get("prediction")
    choices = record.get("choices")
    if isinstance(prediction, int) and not isinstance(prediction, bool) and isinstance(choices, list):
        if 0 <= prediction < len(choices) and isinstance(choices[prediction], str) and choices[prediction].strip():
            return choices[prediction].strip()
        return f"option {prediction + 1}"
    return None if prediction is None else str(prediction)


def collapse(records: Sequence[dict]) -> Collapse | None:
    answers = [a for record in records if (a := answer(record)) is not None]
    if len(answers) < MIN_ITEMS:
        return None
    top, count = Counter(answers).most_common(1)[0]
    return Collapse(top, count, len(answers)) if count >= THRESHOLD * len(answers) else None
