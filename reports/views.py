"""Tables as the templates see them: rows of cells with display text and a sort key.

Kept apart from the DataFrames so that the exported numbers and the page's numbers come from the
same frame, and the templates never format a number themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from reports.cost import COST_COLUMNS, CostColumn, cost_text
from reports.tables import STAT_FIELDS, format_interval, number

HEADERS = {
    "model": "Model",
    "scenario": "Scenario",
    "method": "Method",
    "shots": "Examples / task",
    "variant": "Variant",
    "changed": "Differs from defaults",
    "profile": "Profile",
    "seeds": "Seeds",
    **{column.key: column.label for column in COST_COLUMNS},
    "name": "Setting",
    "benchmark": "Benchmark",
    "language": "Language",
    "status": "Status",
    "a": "A",
    "b": "B",
    "runs_a": "Runs A",
    "runs_b": "Runs B",
    "a_better": "Items A better",
    "b_better": "Items B better",
    "difference": "A − B (points, 95% CI, n = seeds)",
    "column": "Column",
    "family": "Family (Holm)",
    "items": "Items",
    "tasks": "Tasks",
    "se": "SE",
    "se_seeds": "SE seeds",
    "se_items": "SE items",
    "df": "df",
    "p": "p",
    "p_holm": "p (Holm)",
    "mdd": "MDD",
    "significant": "Significant",
    "seen": "Seen languages",
    "held_out": "Held-out languages",
    "value": "Value",
    "axis": "Axis",
    "source": "Source",
    "note": "Note",
}


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str = ""  # a number as text for numeric columns, "" when missing (sorted last)
    mark: str = ""  # "best" or "tied" (reports.tables.column_marks), shown as ★ or ≈
    badge: str = ""  # e.g. "smoke run: not comparable to the paper"
    title: str = ""  # shown on hover


@dataclass(frozen=True)
class Header:
    key: str
    label: str
    numeric: bool
    description: str = ""


@dataclass(frozen=True)
class TableView:
    headers: list[Header]
    rows: list[list[Cell]]


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA


def sort_key(value) -> str:
    """What the page's script sorts a number by: parseFloat reads "Infinity"; NaN sorts as missing."""
    if _is_missing(value) or math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def plain_cell(value) -> Cell:
    if _is_missing(value):
        return Cell("")
    if isinstance(value, bool):
        return Cell("yes" if value else "no", "1" if value else "0")
    if isinstance(value, (int, float)):
        return Cell(number(value) if isinstance(value, float) else str(value), sort_key(value))
    return Cell(str(value), "")


def budget_cell(value) -> Cell:
    """Examples per task sort as numbers, "full" after every number, the base model's none last."""
    if _is_missing(value):
        return Cell("")
    if isinstance(value, (int, float)):
        return Cell(str(value), repr(float(value)))
    return Cell(str(value), "Infinity" if value == "full" else "")


def p_cell(value) -> Cell:
    """p-values to two significant digits; below 0.001 as "< 0.001"."""
    if _is_missing(value):
        return Cell("")
    return Cell("< 0.001" if value < 0.001 else f"{value:.2g}", repr(float(value)))


def df_cell(value) -> Cell:
    if _is_missing(value):
        return Cell("")
    return Cell("∞", "Infinity") if value == float("inf") else Cell(f"{value:.1f}", repr(float(value)))


def cost_cell(column: CostColumn):
    def make(value) -> Cell:
        value = None if _is_missing(value) else float(value)
        return Cell(cost_text(column, value), "" if value is None else repr(value))

    return make


CELL_MAKERS = {  # columns whose cells are not plain values
    "shots": budget_cell,
    "p": p_cell,
    "p_holm": p_cell,
    "df": df_cell,
    **{column.key: cost_cell(column) for column in COST_COLUMNS},
}
HOVER = {"seeds": ("seed_list", "seeds: {}")}  # column -> (the column its hover text comes from, format)


def frame_view(
    frame: pd.DataFrame,
    hide: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    descriptions: dict[str, str] | None = None,
    marks: dict[str, dict[int, str]] | None = None,
) -> TableView:
    """Fold ``x_mean/_ci_low/_ci_high/_n`` into one interval cell; other columns as they are."""
    labels = {**HEADERS, **(labels or {})}
    stat_prefixes = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    folded = {f"{p}_{name}" for p in stat_prefixes for name in STAT_FIELDS}
    keys = [c for c in frame.columns if c not in hide and (c not in folded or c.endswith("_mean"))]
    headers = []
    for key in keys:
        base = key[: -len("_mean")] if key in folded else key
        numeric = (
            key in folded
            or key in CELL_MAKERS
            or (pd.api.types.is_numeric_dtype(frame[key]) and not pd.api.types.is_bool_dtype(frame[key]))
        )
        headers.append(
            Header(base, labels.get(base, base), bool(numeric), (descriptions or {}).get(base, ""))
        )
    rows = []
    for position, record in enumerate(frame.to_dict("records")):
        row = []
        for key, header in zip(keys, headers):
            if key in folded:
                values = [record[f"{header.key}_{name}"] for name in STAT_FIELDS]
                mean = values[0]
                row.append(
                    Cell(
                        format_interval(*[None if _is_missing(v) else v for v in values]),
                        sort_key(mean),
                        mark=(marks or {}).get(header.key, {}).get(position, ""),
                    )
                )
            else:
                cell = CELL_MAKERS.get(key, plain_cell)(record[key])
                if key in HOVER and HOVER[key][0] in record and not _is_missing(record[HOVER[key][0]]):
                    source, text = HOVER[key]
                    cell = replace(cell, title=text.format(", ".join(str(record[source]).split())))
                row.append(cell)
        rows.append(row)
    return TableView(headers, rows)
