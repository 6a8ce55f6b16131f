"""Reference rows computed from the very items a run evaluated (results.json ``references``).

Each run's results carry, per benchmark, what three answer-blind strategies score on its items:
``random`` (uniform guessing over the options), ``always_position`` (always the gold answer's most
frequent position or option, "always A") and ``majority`` (each task's most frequent gold answer).
Runs that evaluated the same items (same scenario, same evaluation settings) share these numbers,
so the leaderboard shows them once per such group, as rows that are never ranked. Values are the
macro average over tasks, in percent, like the measured columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reports.columns import PERCENT
from reports.settings import BASE, Setting
from reports.tables import evaluation

ROWS = {
    "random": "random guessing",
    "always_position": "always the most frequent answer position",
    "majority": "each task's majority answer",
}


@dataclass(frozen=True)
class ItemReference:
    row: str  # a key of ROWS
    scenario: str | None
    evaluation: str  # reports.tables.evaluation: "" for the complete benchmarks
    values: dict[str, float]  # benchmark -> percent (macro over tasks)

    @property
    def label(self) -> str:
        return ROWS.get(self.row, self.row)


def _macro(entry) -> float | None:
    value = entry.get("macro") if isinstance(entry, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) * PERCENT


def item_references(settings: Sequence[Setting]) -> list[ItemReference]:
    """One row per strategy and group of runs that evaluated the same items; a benchmark's value
    comes from the first run (by the settings' order) that recorded it."""
    groups: dict[tuple, dict[str, dict[str, float]]] = {}
    for setting in settings:
        scenario = None if setting.method == BASE else setting.scenario
        key = (scenario, evaluation(setting.config))
        for run in setting.runs:
            references = (run.results or {}).get("references")
            if not isinstance(references, Mapping):
                continue
            rows = groups.setdefault(key, {})
            for benchmark, by_row in references.items():
                if not isinstance(by_row, Mapping):
                    continue
                for row, entry in by_row.items():
                    value = _macro(entry)
                    if value is not None:
                        rows.setdefault(str(row), {}).setdefault(str(benchmark), value)
    order = list(ROWS)
    return [
        ItemReference(row, scenario, evaluation_key, values)
        for (scenario, evaluation_key), rows in groups.items()
        for row, values in sorted(rows.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]))
    ]
