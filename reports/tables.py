"""The report's tables as pandas DataFrames, and their CSV, Markdown and LaTeX exports.

Numbers are in percent. Each measured cell is the mean over a setting's seeds with a 95% interval
from reports.stats; the CSV keeps full precision (``<column>_mean``, ``_ci_low``, ``_ci_high``,
``_n``), while Markdown and LaTeX show ``mean ± half-width (n=seeds)`` rounded for reading.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from eval_tasks.registry import BENCHMARKS
from reports.ablations import Ablation
from reports.columns import COLUMNS, HEADLINE, MULTILINGUAL_BENCHMARKS, Column, task_values
from reports.cost import COST_COLUMNS, cost_fields, cost_text
from reports.defaults import setting_changes
from reports.reference import REFERENCE_ROWS
from reports.settings import BASE, Setting
from reports.stats import Interval, mean_ci

if TYPE_CHECKING:  # reports.paired imports this module
    from reports.paired import Comparison

DECIMALS = 2  # as the paper prints its accuracies
SETTING_FIELDS = (
    "setting",
    "model",
    "scenario",
    "method",
    "shots",
    "variant",
    "changed",
    "profile",
    "comparable",
    "published",
    "evaluation",
    "seeds",
    "seed_list",
)
STAT_FIELDS = ("mean", "ci_low", "ci_high", "n")
COST_KEYS = {column.key: column for column in COST_COLUMNS}


def setting_fields(setting: Setting) -> dict:
    return {
        "setting": setting.key,
        "model": setting.model,
        "scenario": setting.scenario,
        "method": setting.method,
        "shots": setting.shots,
        "variant": setting.label,
        "changed": setting_changes(setting.runs[0].differs_from_defaults, setting.identity, setting.profile),
        "profile": setting.profile,
        "comparable": setting.comparable,
        "published": all(run.published is not None for run in setting.runs),
        "evaluation": evaluation(setting.config),
        "seeds": len(setting.runs),  # runs averaged: one per training seed
        "seed_list": " ".join(str(seed) for seed in setting.seeds),
    }


EVALUATION_KEYS = ("eval_limit", "max_gen_tokens")  # what changes the evaluated items or answers


def evaluation(config: Mapping) -> str:
    """How a setting was evaluated, where it differs from the complete benchmarks ("" if not):
    rows evaluated differently are never ranked against each other."""
    return ", ".join(f"{key}={config[key]}" for key in EVALUATION_KEYS if config.get(key) is not None)


def over_seeds(setting: Setting, value: Callable[[Mapping], float | None]) -> Interval | None:
    values = [v for run in setting.runs if (v := value(run.results)) is not None]
    if not values:
        return None
    if not all(math.isfinite(v) for v in values):
        # A NaN or infinite score is shown as it is (NaN, +inf, -inf), with no interval; plain
        # float arithmetic gives the mean such values have (inf + -inf is NaN).
        return Interval(sum(values) / len(values), None, None, len(values))
    return mean_ci(values)


def stat_fields(prefix: str, interval: Interval | None) -> dict:
    if interval is None:
        return {f"{prefix}_{name}": None for name in STAT_FIELDS}
    return {
        f"{prefix}_mean": interval.mean,
        f"{prefix}_ci_low": interval.low,
        f"{prefix}_ci_high": interval.high,
        f"{prefix}_n": interval.n,
    }


def leaderboard(settings: Sequence[Setting], keep: Sequence[str] = ()) -> pd.DataFrame:
    """One row per setting; only the columns some setting has a number for, plus ``keep``."""
    rows = [
        setting_fields(s)
        | {k: v for c in COLUMNS.values() for k, v in stat_fields(c.key, over_seeds(s, c.value)).items()}
        for s in settings
    ]
    frame = pd.DataFrame(rows, columns=[*SETTING_FIELDS, *_stat_columns(COLUMNS)])
    present = [c for c in COLUMNS if c in keep or frame[f"{c}_mean"].notna().any()]
    costs = pd.DataFrame(
        [cost_fields([run.cost for run in s.runs]) for s in settings],
        columns=[c.key for c in COST_COLUMNS],
        index=frame.index,
        dtype=object,
    )
    return _typed(pd.concat([frame[[*SETTING_FIELDS, *_stat_columns(present)]], costs], axis=1))


def present_columns(frame: pd.DataFrame) -> list[Column]:
    return [column for key, column in COLUMNS.items() if f"{key}_mean" in frame.columns]


BEST = "best"  # the block's highest mean, significantly above the runner-up after correction
TIED = "tied"  # highest, or not significantly below the highest: no single best can be claimed
MARK_GROUP = ("model", "profile", "scenario", "shots", "evaluation")  # a block: what the mark ranks within


def column_marks(
    frame: pd.DataFrame, key: str, tests: Mapping[tuple[str, frozenset], Comparison]
) -> dict[int, str]:
    """Positions of marked rows in one column: BEST for a significant winner, else TIED rows.

    Rows compete only within their block (same model, profile, scenario and examples per task,
    trained settings only): a smoke run never outranks a full one, a 10-shot row never a 50-shot
    one, and the base model is a reference, not a competitor. In a block of two or more measured
    rows, the highest mean is BEST when its paired comparison with the runner-up
    (``tests[(key, {setting, setting})]``, Holm-adjusted within its family, or the sweep's declared
    primary comparison) is significant in its favour. Otherwise the highest row and every row whose
    comparison with it is not significant in its favour (or could not be tested) are TIED.
    """
    means = frame[f"{key}_mean"]
    # Only rows of a comparable profile compete (a smoke or quick run is never marked).
    measured = frame[(frame["method"] != BASE) & means.notna() & frame["comparable"].astype(bool)]
    marks: dict[int, str] = {}
    positions = {index: position for position, index in enumerate(frame.index)}
    for _, block in measured.groupby([frame[c].map(repr) for c in MARK_GROUP], sort=False):
        if len(block) < 2:
            continue
        ranked = block.sort_values(f"{key}_mean", ascending=False, kind="stable")
        best, *others = ranked["setting"].tolist()

        def beats(winner: str, other: str) -> bool:
            test = tests.get((key, frozenset((winner, other))))
            return test is not None and test.better(winner)

        if beats(best, others[0]):
            marks[positions[ranked.index[0]]] = BEST
            continue
        for index, setting in zip(ranked.index, ranked["setting"]):
            if setting == best or not beats(best, setting):
                marks[positions[index]] = TIED
    return marks


def with_marks(
    frame: pd.DataFrame, marks: Mapping[str, Mapping[int, str]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame with its marks, for export: a ``<key>_mark`` column ("best", "tied" or empty)
    after each marked column's numbers for the CSV, and "(best)" / "(tied)" after the number in the
    readable form (Markdown, LaTeX; plain ASCII so that the LaTeX compiles anywhere)."""
    readable = for_reading(frame)
    data = frame.copy()
    for key, rows in marks.items():
        if not rows:
            continue
        values = [rows.get(position, "") for position in range(len(frame))]
        data.insert(data.columns.get_loc(f"{key}_n") + 1, f"{key}_mark", values)
        readable[key] = [f"{text} ({mark})" if mark else text for text, mark in zip(readable[key], values)]
    return data, readable


def reference_table() -> pd.DataFrame:
    keys = [key for key in COLUMNS if any(key in row.values for row in REFERENCE_ROWS)]
    rows = [
        {"source": r.source, "model": r.model, "method": r.method, "shots": r.shots, "note": r.note}
        | {key: r.values.get(key) for key in keys}
        for r in REFERENCE_ROWS
    ]
    return pd.DataFrame(rows, columns=["source", "model", "method", "shots", "note", *keys])


def task_table(settings: Sequence[Setting], benchmark: str) -> pd.DataFrame:
    """Mean over seeds of each task's primary metric: the heatmap's numbers."""
    rows = []
    for s in settings:
        per_run = [task_values(run.results, benchmark) for run in s.runs]
        per_run = [values for values in per_run if values]
        if not per_run:
            continue
        tasks = [t for t in BENCHMARKS[benchmark].subtasks if all(t in values for values in per_run)]
        rows.append(
            {"name": s.name, **setting_fields(s)}
            | {t: sum(v[t] for v in per_run) / len(per_run) for t in tasks}
        )
    return _typed(pd.DataFrame(rows))


def language_status(config: Mapping, language: str) -> str:
    """ "seen" (trained on as an XCOPA task), "held-out" (declared never trained on) or "other"."""
    seen = {task.split("_", 1)[1] for task in config.get("tasks") or () if task.startswith("xcopa_")}
    if language in seen and config.get("method") != "base":
        return "seen"
    if language in (config.get("held_out_languages") or ()) and config.get("method") != "base":
        return "held-out"
    return "other"


def language_table(settings: Sequence[Setting]) -> pd.DataFrame:
    """Per setting, benchmark and language: mean over seeds, with its seen/held-out status."""
    rows = []
    for s in settings:
        for benchmark in MULTILINGUAL_BENCHMARKS:
            # each run's scores read once, not once per language (thousands of runs in a large store)
            per_run = {id(run.results): task_values(run.results, benchmark) for run in s.runs}
            if not any(per_run.values()):
                continue
            for language in BENCHMARKS[benchmark].subtasks:
                interval = over_seeds(s, lambda results, lang=language, found=per_run: found[id(results)].get(lang))
                if interval is not None:
                    rows.append(
                        {
                            "name": s.name,
                            **setting_fields(s),
                            "benchmark": benchmark,
                            "language": language,
                            "status": language_status(s.config, language),
                        }
                        | stat_fields("acc", interval)
                    )
    return _typed(pd.DataFrame(rows))


def seen_heldout_table(settings: Sequence[Setting]) -> pd.DataFrame:
    """Per setting and benchmark: the mean over its seen languages and over its held-out ones."""
    rows = []
    for s in settings:
        for benchmark in MULTILINGUAL_BENCHMARKS:
            row = {"name": s.name, **setting_fields(s), "benchmark": benchmark}
            found = False
            for status in ("seen", "held-out"):
                interval = over_seeds(
                    s, partial(_group_mean, benchmark=benchmark, config=s.config, status=status)
                )
                found |= interval is not None
                row |= stat_fields(status.replace("-", "_"), interval)
            if found:
                rows.append(row)
    return _typed(pd.DataFrame(rows))


def _group_mean(results: Mapping, benchmark: str, config: Mapping, status: str) -> float | None:
    values = [
        v for lang, v in task_values(results, benchmark).items() if language_status(config, lang) == status
    ]
    return sum(values) / len(values) if values else None


def ablation_table(ablation: Ablation) -> pd.DataFrame:
    rows = []
    for value, s in ablation.points:
        row = {"axis": ablation.spec.field, "value": value, **setting_fields(s)}
        for key in HEADLINE:
            row |= stat_fields(key, over_seeds(s, COLUMNS[key].value))
        rows.append(row)
    frame = pd.DataFrame(rows)
    keep = [c for c in frame.columns if not c.endswith("_mean") or frame[c].notna().any()]
    dropped = {c[: -len("_mean")] for c in frame.columns if c not in keep}
    return _typed(frame[[c for c in keep if not any(c.startswith(f"{d}_") for d in dropped)]])


def number(value: float) -> str:
    """A measured number for reading: NaN and infinities spelled out, never left blank."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.{DECIMALS}f}"


def format_interval(mean, low, high, n) -> str:
    """'39.53 ± 1.20 (n=3)'; with one seed the interval is not available, said so, not zero.

    ``n`` None means not measured (blank); a measured mean that is NaN reads "NaN (n=...)".
    """
    if n is None:
        return ""
    if mean is None or not math.isfinite(mean):
        return f"{number(mean)} (n={int(n)})"
    if low is None:
        return f"{number(mean)} (n={int(n)}, CI n/a)"
    return f"{number(mean)} ± {number(high - mean)} (n={int(n)})"


def for_reading(frame: pd.DataFrame) -> pd.DataFrame:
    """Each ``<x>_mean/_ci_low/_ci_high/_n`` group folded into one ``x`` text column."""
    prefixes = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    folded = {f"{p}_{name}" for p in prefixes for name in STAT_FIELDS}
    out = {}
    for column in frame.columns:
        if column in folded and column.endswith("_mean"):
            prefix = column[: -len("_mean")]
            parts = [[None if pd.isna(v) else v for v in frame[f"{prefix}_{name}"]] for name in STAT_FIELDS]
            out[prefix] = [format_interval(*values) for values in zip(*parts)]
        elif column in COST_KEYS:
            out[column] = [cost_text(COST_KEYS[column], None if pd.isna(v) else v) for v in frame[column]]
        elif column not in folded:
            out[column] = [_readable(value) for value in frame[column]]
    return pd.DataFrame(out, columns=list(out))


def _readable(value):
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return number(value) if isinstance(value, float) else value


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets take as the start of a formula


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula get a leading apostrophe (OWASP's
    rule); numbers stay numbers. A measured NaN mean is written "NaN", a missing one left empty."""
    out = frame.copy()
    for column in out.columns:
        if column.endswith("_mean") and f"{column[: -len('_mean')]}_n" in out.columns:
            measured_nan = out[f"{column[: -len('_mean')]}_n"].notna() & out[column].isna()
            if measured_nan.any():
                out[column] = out[column].astype(object).where(~measured_nan, "NaN")
        if not pd.api.types.is_numeric_dtype(out[column]):
            safe = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v for v in out[column]]
            out[column] = pd.Series(safe, index=out.index, dtype=object)
    return out


def markdown_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text that Markdown renderers would pass through as HTML, or that would break the table's
    row (a "|" or a line break), is escaped."""
    def escape(value):
        if not isinstance(value, str):
            return value
        text = html.escape(value, quote=False).replace("|", "\\|")
        return " ".join(text.splitlines())

    return frame.map(escape)


def export(
    frame: pd.DataFrame, folder: Path, name: str, readable: pd.DataFrame | None = None
) -> dict[str, str]:
    """Write name.csv (full precision), name.md and name.tex (rounded); returns format -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    readable = for_reading(frame) if readable is None else readable
    files = {"CSV": f"{name}.csv", "Markdown": f"{name}.md", "LaTeX": f"{name}.tex"}
    # RFC 4180 line ends: the writer then quotes any cell holding a line break, "\r" included.
    csv_safe(frame).to_csv(folder / files["CSV"], index=False, lineterminator="\r\n")
    markdown = markdown_safe(readable).to_markdown(index=False, disable_numparse=True)
    (folder / files["Markdown"]).write_text(markdown + "\n", encoding="utf-8")
    (folder / files["LaTeX"]).write_text(latex_table(readable), encoding="utf-8")
    return files


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
LATEX_ESCAPE = str.maketrans(LATEX_SPECIAL)


def latex_table(frame: pd.DataFrame) -> str:
    """A booktabs tabular, as pandas' ``to_latex(escape=True)`` writes it, without its Styler
    (which took most of a large report's export time); every cell escaped."""

    def text(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return ""
        return (number(value) if isinstance(value, float) else str(value)).translate(LATEX_ESCAPE)

    align = "".join(
        "r" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) else "l"
        for c in frame.columns
    )
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(text(c) for c in frame.columns) + " \\\\"]
    lines.append("\\midrule")
    lines += [" & ".join(text(v) for v in row) + " \\\\" for row in frame.itertuples(index=False, name=None)]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def _stat_columns(keys) -> list[str]:
    return [f"{key}_{name}" for key in keys for name in STAT_FIELDS]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    # Seed counts as integers in the CSV ("3", not "3.0"), missing ones left empty; budgets mix
    # numbers, "full" and None (base model), which pandas would otherwise turn into floats.
    for column in ("shots", "value"):
        if column in frame.columns:
            values = pd.Series([_as_budget(v) for v in frame[column]], index=frame.index, dtype=object)
            frame = frame.assign(**{column: values})
    for column in frame.columns:
        if column.endswith("_n"):
            frame = frame.assign(**{column: frame[column].astype("Int64")})
    return frame


def _as_budget(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None if isinstance(value, float) and pd.isna(value) else value
