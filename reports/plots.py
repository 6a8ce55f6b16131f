"""The report's figures, drawn with matplotlib's object API (no pyplot state) into SVG files.

Text is drawn with mathtext off, so a ``$`` in a model or task name is shown, not interpreted.
SVG is written with a fixed hash salt and no date, so the same store gives the same files.
Figures are linked with ``<img>``, where a browser never runs scripts an SVG might contain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.ablations import Ablation
from reports.columns import COLUMNS, HEADLINE
from reports.load import Run
from reports.settings import BASE, Setting, shots_order
from reports.tables import SETTING_FIELDS, over_seeds

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")
MAX_LEGEND = 16  # more series than this get no legend (it would hide the lines)
NUDGE = 0.03  # relative sideways shift between neighbouring series on a log axis


def series_style(index: int) -> dict:
    """Marker and line style of the index-th series: no two of the first 8 share a marker, and
    marker and dash cycles of different lengths keep later ones apart too."""
    return {"marker": MARKERS[index % len(MARKERS)], "linestyle": DASHES[index % len(DASHES)], "markersize": 5}


RC = {"text.parse_math": False, "svg.hashsalt": "mlbench-report", "svg.fonttype": "path", "font.size": 9}
STATUS_STYLE = {"seen": {"hatch": ""}, "held-out": {"hatch": "///"}, "other": {"hatch": "..."}}


@dataclass(frozen=True)
class Plot:
    file: str  # relative to the site root
    title: str
    description: str


@contextmanager
def _drawing() -> Iterator[type]:
    """matplotlib's Figure class under the report's settings. matplotlib is imported here, when a
    figure is drawn: it is most of the report's start-up, and a rebuild that reuses every figure (or a
    process that only renders run pages) never needs it."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, never need a display
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(RC):
        yield Figure


def _save(figure, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    figure.savefig(folder / f"{name}.svg", format="svg", metadata={"Date": None}, bbox_inches="tight")
    return f"{folder.name}/{name}.svg"


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def _budget_position(shots, numeric: list[float]) -> float:
    # "full" has no number of examples: it is drawn one doubling right of the largest budget.
    return float(shots) if isinstance(shots, (int, float)) else max(numeric or [1.0]) * 2


def budget_curves(settings: Sequence[Setting], folder: Path) -> list[Plot]:
    """Accuracy against examples per task, one line per method (and ablation variant), CI bands."""
    plots = []
    for model in sorted({s.model for s in settings}):
        for key in HEADLINE:
            column = COLUMNS[key]
            series: dict[str, list[tuple]] = defaultdict(list)
            baselines = []
            for s in (s for s in settings if s.model == model):
                interval = over_seeds(s, column.value)
                if interval is None:
                    continue
                if s.method == BASE:
                    baselines.append((s, interval))
                else:
                    label = " ".join(
                        p
                        for p in (
                            s.method,
                            f"[{s.ablation}]" if s.ablation else "",  # one curve across budgets
                            s.scenario or "",
                            "" if s.comparable else f"({s.profile})",
                        )
                        if p
                    )
                    series[label].append((s.shots, interval))
            if not series:
                continue
            numeric = [
                float(x) for points in series.values() for x, _ in points if isinstance(x, (int, float))
            ]
            budgets = sorted({str(x) for points in series.values() for x, _ in points})
            if len(budgets) < 2:
                # One budget gives one dot per method: no curve. Said in words, not drawn.
                plots.append(
                    Plot(
                        "",
                        f"{column.label} vs examples per task ({model})",
                        f"Only one data budget ({budgets[0]} per task) was run for {model}, so there is no "
                        "curve to draw; the leaderboard has these numbers.",
                    )
                )
                continue
            with _drawing() as Figure:
                figure = Figure(figsize=(6.4, 4.0))
                axes = figure.add_subplot()
                ordered = sorted(series.items())
                for index, (label, points) in enumerate(ordered):
                    points.sort(key=lambda point: shots_order(point[0]))
                    # Each series is nudged sideways a little (on the log axis) and has its own
                    # marker and dash, so series with equal numbers stay apart and readable in grey.
                    nudge = 1 + NUDGE * (index - (len(ordered) - 1) / 2)
                    xs = [_budget_position(x, numeric) * nudge for x, _ in points]
                    means = [i.mean for _, i in points]
                    lows = [math.nan if i.low is None else i.low for _, i in points]
                    highs = [math.nan if i.high is None else i.high for _, i in points]
                    line = axes.plot(xs, means, label=label, **series_style(index))[0]
                    axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
                for s, interval in baselines:
                    axes.axhline(
                        interval.mean, linestyle="--", color="grey", label=f"base model ({s.profile})"
                    )
                ticks = sorted(
                    {(_budget_position(x, numeric), str(x)) for pts in series.values() for x, _ in pts}
                )
                axes.set_xscale("log")
                axes.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
                axes.minorticks_off()
                axes.set_ylim(0, 100)  # accuracies; a wide few-seed interval must not squash the lines
                axes.set_xlabel("training examples per task")
                axes.set_ylabel(f"{column.label} (%)")
                axes.set_title(f"{column.label} vs data budget: {model}")
                axes.legend(fontsize=7)
                file = _save(figure, folder, f"budget_{key}_{_digest(model)}")
            plots.append(
                Plot(
                    file,
                    f"{column.label} vs examples per task ({model})",
                    "Mean over seeds; the band is the 95% t interval (absent where one seed).",
                )
            )
    return plots


def task_heatmap(table, benchmark: str, folder: Path) -> Plot | None:
    """Settings by task, colour = mean accuracy over seeds (the numbers are in the exported table)."""
    tasks = [c for c in table.columns if c != "name" and c not in SETTING_FIELDS]
    if table.empty or not tasks:
        return None
    rows = [f"{name} · {model}" for name, model in zip(table["name"], table["model"])]
    values = table[tasks].to_numpy(dtype=float)
    with _drawing() as Figure:
        figure = Figure(figsize=(max(6.0, 0.32 * len(tasks) + 3), max(2.0, 0.35 * len(rows) + 1.8)))
        axes = figure.add_subplot()
        image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        axes.set_xticks(range(len(tasks)), tasks, rotation=90, fontsize=7)
        axes.set_yticks(range(len(rows)), rows, fontsize=7)
        figure.colorbar(image, ax=axes, label="accuracy (%)")
        # y given: the title sits on the axes without measuring every tick label (x labels are below)
        axes.set_title(f"{benchmark}: per-task accuracy, mean over seeds", y=1.0)
        file = _save(figure, folder, f"heatmap_{benchmark}")
    return Plot(file, f"Method × task heatmap ({benchmark})", "Per-task primary metric, mean over seeds.")


def ablation_plot(ablation: Ablation, folder: Path) -> Plot | None:
    keys = [k for k in HEADLINE if any(over_seeds(s, COLUMNS[k].value) for _, s in ablation.points)]
    if not keys:
        return None
    with _drawing() as Figure:
        figure = Figure(figsize=(3.4 * len(keys), 3.2))
        for index, key in enumerate(keys, start=1):
            axes = figure.add_subplot(1, len(keys), index)
            points = [(value, over_seeds(s, COLUMNS[key].value)) for value, s in ablation.points]
            points = [(value, i) for value, i in points if i is not None]
            labels = [str(value) for value, _ in points]
            means = [i.mean for _, i in points]
            errors = [0.0 if i.half_width is None else i.half_width for _, i in points]
            if ablation.spec.numeric:
                axes.errorbar([float(v) for v, _ in points], means, yerr=errors, marker="o", capsize=3)
                axes.set_xticks([float(v) for v, _ in points], labels)  # the values run: whole steps
            else:
                axes.bar(range(len(points)), means, yerr=errors, capsize=3, color="tab:blue")
                axes.set_xticks(range(len(points)), labels, rotation=20)
            axes.set_xlabel(ablation.spec.field.rsplit(".", 1)[-1])
            axes.set_ylabel(f"{COLUMNS[key].label} (%)")
        figure.suptitle(f"{ablation.spec.title}: {ablation.model}, {ablation.shots}/task, {ablation.profile}")
        file = _save(figure, folder, ablation.slug)
    return Plot(
        file,
        f"Ablation: {ablation.spec.title} ({ablation.model}, {ablation.shots} per task)",
        "Mean over seeds; error bars are 95% t intervals (none where one seed).",
    )


LOSS_KEYS = ("loss", "support_loss", "query_loss")


def loss_overview(settings: Sequence[Setting], folder: Path) -> Plot | None:
    """Training loss per step, averaged over a setting's seeds at the steps all of them logged."""
    trained = [s for s in settings if any(run.training_log for run in s.runs)]
    if not trained:
        return None
    methods = sorted({s.method for s in trained})
    with _drawing() as Figure:
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(4.2 * len(methods), 3.4))
        for index, method in enumerate(methods, start=1):
            axes = figure.add_subplot(1, len(methods), index)
            members = [s for s in trained if s.method == method]
            for number, s in enumerate(members):
                logs = [series(run, "loss") for run in s.runs if run.training_log]
                steps = sorted(set.intersection(*(set(log) for log in logs)))
                if steps:
                    axes.plot(
                        steps,
                        [sum(log[x] for log in logs) / len(logs) for x in steps],
                        label=s.name,
                        linewidth=1,
                        markevery=max(1, len(steps) // 8),
                        **series_style(number),
                    )
            axes.set_title(method)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
            axes.set_xlabel("optimizer step")
            axes.set_ylabel("training loss (mean over seeds)")
            if len(members) <= MAX_LEGEND:
                axes.legend(fontsize=6)
            else:  # hundreds of entries would cover the plot; the leaderboard names every setting
                axes.text(0.98, 0.98, f"{len(members)} settings", transform=axes.transAxes, ha="right", va="top")
        file = _save(figure, folder, "training_loss")
    return Plot(file, "Training loss curves", "Loss per optimizer step, mean over the seeds of each setting.")


def series(run: Run, key: str) -> dict[int, float]:
    return {
        e["step"]: float(e[key])
        for e in run.training_log
        if isinstance(e.get(key), (int, float)) and "step" in e
    }


def language_bars(table, folder: Path) -> list[Plot]:
    """Per-language accuracy per setting; hatching tells seen, held-out and never-declared languages."""
    plots = []
    if table.empty:
        return plots
    for benchmark in table["benchmark"].unique():
        part = table[table["benchmark"] == benchmark]
        languages = list(dict.fromkeys(part["language"]))
        names = list(dict.fromkeys(part["name"] + " · " + part["model"]))
        width = 0.8 / len(names)
        with _drawing() as Figure:
            figure = Figure(figsize=(max(6.0, 0.6 * len(languages) * max(1, len(names) / 2)), 3.8))
            axes = figure.add_subplot()
            for offset, name in enumerate(names):
                rows = part[(part["name"] + " · " + part["model"]) == name]
                color = f"C{offset % 10}"
                for _, row in rows.iterrows():
                    x = languages.index(row["language"]) + offset * width - 0.4 + width / 2
                    high = row["acc_ci_high"]
                    error = 0.0 if high is None or pd.isna(high) else high - row["acc_mean"]
                    axes.bar(
                        x,
                        row["acc_mean"],
                        width,
                        yerr=error,
                        capsize=2,
                        color=color,
                        edgecolor="black",
                        linewidth=0.3,
                        **STATUS_STYLE[row["status"]],
                    )
                axes.bar(0, 0, 0, color=color, label=name)  # legend entry for the setting's colour
            for status, style in STATUS_STYLE.items():
                axes.bar(0, 0, 0, color="white", edgecolor="black", label=f"{status} language", **style)
            axes.set_xticks(range(len(languages)), languages)
            axes.set_ylim(0, 100)
            axes.set_ylabel("accuracy (%)")
            axes.set_title(
                f"{benchmark}: accuracy per language (seen = trained on, held-out = never trained on)"
            )
            axes.legend(fontsize=6, ncols=2)
            file = _save(figure, folder, f"languages_{benchmark}")
        plots.append(
            Plot(
                file,
                f"{benchmark}: accuracy per language, seen versus held-out",
                "Mean over seeds with 95% t intervals; solid = seen, /// = held-out, ... = neither.",
            )
        )
    return plots
