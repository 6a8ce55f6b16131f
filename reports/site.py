"""Build the static report: ``build_report(store, out)`` writes a self-contained site.

The site opens from the file system: no server, no CDN, one local stylesheet, inline JS, figures as SVG files
beside the pages, tables exported as CSV, Markdown and LaTeX. It is built in a temporary folder
next to ``out`` and renamed into place, so a failed build leaves the previous site (or none),
never half of one, and only a folder the report wrote itself is ever replaced (reports/output.py).
Every text from the store goes through Jinja's autoescaping; a Content Security Policy that only
admits the page's own script (by hash) backs that up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from eval_tasks.registry import BENCHMARKS
from metalora.runs.profiles import PROFILES
from metalora.runs.store import (
    CONFIG_FILE,
    COST_FILE,
    DONE_FILE,
    ENV_FILE,
    FAILED_FILE,
    RESULTS_FILE,
    SAMPLES_DIR,
    TRAINING_LOG_FILE,
)
from reports import plots, tables
from reports.ablations import find_ablations
from reports.answers import Collapse, collapse
from reports.bootstrap import __doc__ as BOOTSTRAP_DOC
from reports.chance import item_references
from reports.columns import COLUMNS
from reports.columns import __doc__ as COLUMNS_DOC
from reports.cost import cost_rows
from reports.load import Run, Store, load_store
from reports.numerics import mixed_numerics
from reports.output import MARKER, publish
from reports.paired import (
    DEFAULT_BOOTSTRAP,
    Comparison,
    block_mdd,
    block_name,
    comparison_index,
    mdd_table,
    paired_comparisons,
    paired_table,
)
from reports.paired import __doc__ as PAIRED_DOC
from reports.primary import read_primaries
from reports.reference import REFERENCE_ROWS
from reports.settings import Setting, flatten, group_settings
from reports.sparkline import sparkline
from reports.stats import FORMULA, MDD_FORMULA
from reports.status import Status, index_statuses, run_status
from reports.views import Cell, TableView, frame_view, plain_cell, sort_key

TEMPLATES = Path(__file__).resolve().parent / "templates"
PROMPT_TAIL_CHARS = 1500  # few-shot prompts repeat their exemplars; the question is at the end
# Each page inlines only the script it needs (a few kB on each of thousands of pages).
SCRIPTS = {"sort": "sort.js", "samples": "samples.js"}
RUN_PAGE = re.compile(r"^runs/[0-9a-f]{16}(_[a-z0-9_]+)?\.html$")  # what a run's pages are called
STYLE_FILE = "report.css"  # one shared stylesheet: inline in every page it cost ~2.5 kB a page


def build_report(store: Path, out: Path) -> Path:
    """Render the run store at ``store`` into ``out``; returns the path of ``index.html``.

    ``out`` is replaced only when it is new, empty or a report this function wrote (reports.output).
    """
    data = load_store(Path(store))
    out = Path(out).absolute()
    # publish() has checked that an existing ``out`` is a report this function wrote: its pages of
    # runs whose inputs did not change are reused (hard links) instead of being rendered again.
    previous = out if (out / MARKER).is_file() else None
    publish(out, data.path, lambda folder: Site(data, folder, previous).write())
    return out / "index.html"


PAGES_FILE = ".mlbench-pages.json"  # run id -> the key of its pages' inputs, the files, the notes
_RUN_INPUTS = (CONFIG_FILE, ENV_FILE, RESULTS_FILE, DONE_FILE, FAILED_FILE, COST_FILE, TRAINING_LOG_FILE)


def code_key() -> str:
    """The report's own code and templates: a new version renders every page again."""
    digest = hashlib.sha256()
    for path in sorted([*TEMPLATES.iterdir(), *Path(__file__).resolve().parent.glob("*.py")]):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def inputs_key(run: Run, status: Status, code: str) -> str:
    """What a run's pages are made of, by file size and modification time (nothing is read): a run
    whose files did not change keeps its pages. The status comes from the index (running or not)."""
    parts = [code, status.text]
    paths = [run.path / name for name in _RUN_INPUTS]
    samples = run.path / SAMPLES_DIR
    if samples.is_dir():
        paths += sorted(samples.iterdir())
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            parts.append(f"{path.name}:-")
            continue
        parts.append(f"{path.relative_to(run.path)}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def read_pages(site: Path | None) -> dict:
    if site is None:
        return {}
    try:
        pages = json.loads((site / PAGES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return pages if isinstance(pages, dict) else {}


def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def script_policy(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


class Site:
    """One build: reads the loaded store, writes pages, figures and tables under ``root``."""

    def __init__(self, store: Store, root: Path, previous: Path | None = None):
        self.store = store
        self.root = root
        self.previous = previous  # the site this build replaces, whose unchanged run pages it reuses
        self.previous_pages = read_pages(previous)
        self.pages: dict[str, dict] = {}  # what this build writes to PAGES_FILE
        self.code = code_key()
        self.reused = 0
        self.env = environment()
        self.statuses = index_statuses(store.path)
        self.scripts = {
            name: (text, script_policy(text))
            for name, file in SCRIPTS.items()
            for text in [(TEMPLATES / file).read_text(encoding="utf-8")]
        }
        self.common = {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}

    def status(self, run: Run) -> Status:
        return run_status(run, self.statuses.get(run.run_id))

    def render(self, template: str, path: Path, root: str, script: str = "sort", **context) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text, digest = self.scripts[script]
        html = self.env.get_template(template).render(
            root=root, script=text, script_hash=digest, **self.common, **context
        )
        path.write_text(html, encoding="utf-8")

    def write(self) -> None:
        self.run_keys = {run.run_id: inputs_key(run, self.status(run), self.code) for run in self.store.runs}
        self.data_key = hashlib.sha256(json.dumps([self.code, sorted(self.run_keys.items())]).encode()).hexdigest()
        (self.root / STYLE_FILE).write_bytes((TEMPLATES / STYLE_FILE).read_bytes())
        # The run pages are rendered (by forked processes when there are many) while this process
        # computes the leaderboard, the paired comparisons and the figures: neither needs the other.
        run_pages = self.start_run_pages()
        try:
            context = self.index_context()
        except BaseException:
            run_pages.abandon()
            raise
        notes = run_pages.finish()
        self.write_index(context, notes)

    def index_context(self) -> dict:
        settings = group_settings(self.store.finished)
        figures = self.start_figures(settings)
        try:
            declared = read_primaries(self.store.path)
            comparisons = paired_comparisons(settings, declared.primaries)
            context = self.index_sections(settings, declared, comparisons)
        except BaseException:
            figures.abandon()
            raise
        context |= self.figures_and_tables(settings, comparisons, figures.result())
        return context | {"settings": settings}

    def index_sections(self, settings: list[Setting], declared, comparisons: list[Comparison]) -> dict:
        context = {
            "store": str(self.store.path),
            "runs": [run_row(run, self.status(run)) for run in self.store.runs],
            "skipped": self.store.skipped,
            "n_finished": len(self.store.finished),
            "formula": FORMULA,
            "columns_doc": COLUMNS_DOC.strip(),
            "paired_doc": PAIRED_DOC.strip(),
            "bootstrap_doc": BOOTSTRAP_DOC.strip(),
            "mdd_formula": MDD_FORMULA,
            "bootstrap": DEFAULT_BOOTSTRAP,
            "primaries": declared.primaries,
            "sweep_problems": declared.problems,
            "profiles": {name: p.description for name, p in PROFILES.items() if not p.comparable},
            "mixed_numerics": mixed_numerics(settings),
        }
        return context | self.leaderboard(settings, comparisons)

    def write_index(self, context: dict, notes: dict[str, RunNotes]) -> None:
        settings = context.pop("settings")
        unreadable = [(run_id, problem) for run_id, note in notes.items() for problem in note.unreadable]
        collapsed = [
            {"run": run.run_id, "benchmark": benchmark, "text": found.describe(), "setting": setting.name}
            for setting in settings
            for run in setting.runs
            for benchmark, found in notes[run.run_id].collapsed
        ]
        flag_collapsed(context["leaderboard"], settings, notes)
        (self.root / PAGES_FILE).write_text(json.dumps(self.pages), encoding="utf-8")
        self.render(
            "index.html.j2", self.root / "index.html", "", unreadable=unreadable, collapsed=collapsed, **context
        )

    def export(self, frame, name: str, readable=None) -> dict[str, str]:
        files = tables.export(frame, self.root / "tables", name, readable)
        return {fmt: f"tables/{file}" for fmt, file in files.items()}

    def leaderboard(self, settings: list[Setting], comparisons: list[Comparison]) -> dict:
        # Columns with a reported number are kept even before anything measured them.
        frame = tables.leaderboard(settings, keep=[key for row in REFERENCE_ROWS for key in row.values])
        columns = tables.present_columns(frame)
        tests = comparison_index(comparisons)
        marks = {c.key: tables.column_marks(frame, c.key, tests) for c in columns}
        view = frame_view(
            frame,
            hide=("setting", "comparable", "published", "evaluation", "seed_list"),
            labels={c.key: c.label for c in columns},
            descriptions={c.key: c.description for c in columns},
            marks=marks,
        )
        profile_index = [h.key for h in view.headers].index("profile")
        method_index = [h.key for h in view.headers].index("method")
        for row, comparable, published in zip(view.rows, frame["comparable"], frame["published"]):
            if not comparable:
                cell = row[profile_index]
                row[profile_index] = replace(cell, badge="not comparable to the paper")
            if published:  # runs that mlbench publish copied into a committed results folder
                row[method_index] = replace(row[method_index], badge="published")
        reference = tables.reference_table()
        reference_rows = []
        for row in REFERENCE_ROWS:
            cells = {h.key: Cell("") for h in view.headers}
            cells |= {
                "model": Cell(row.model),
                "method": Cell(row.method),
                "shots": plain_cell(row.shots),
                "variant": Cell(row.note),
                "profile": Cell("reported"),
                "seeds": Cell(""),
            }
            cells |= {key: Cell(f"{value:.2f}") for key, value in row.values.items() if key in cells}
            reference_rows.append({"source": row.source, "cells": [cells[h.key] for h in view.headers]})
        items = item_references(settings)
        item_rows = []
        for strategy in items:
            cells = {h.key: Cell("") for h in view.headers}
            cells |= {
                "method": Cell(strategy.label),
                "scenario": Cell(strategy.scenario or ""),
                "variant": Cell(strategy.evaluation or "complete benchmarks"),
                "profile": Cell("from the evaluated items"),
            }
            cells |= {
                key: Cell(tables.number(value), sort_key(value))
                for key, value in strategy.values.items()
                if key in cells and key in COLUMNS
            }
            item_rows.append({"cells": [cells[h.key] for h in view.headers]})
        item_frame = pd.DataFrame(
            [
                {"strategy": r.row, "scenario": r.scenario, "evaluation": r.evaluation} | r.values
                for r in items
            ]
        )
        marked, readable = tables.with_marks(frame, marks)
        mdd = block_mdd(comparisons)
        mdd_frame = mdd_table(comparisons)
        mdd_rows = []
        for block in dict.fromkeys(block for block, _ in mdd):
            cells = [
                Cell(f"{mdd[(block, h.key)][0]:.2f} (n={mdd[(block, h.key)][2]})")
                if (block, h.key) in mdd
                else Cell("")
                for h in view.headers
            ]
            mdd_rows.append({"block": block_name(block), "cells": cells})
        return {
            "leaderboard": view,
            "mdd_rows": mdd_rows,
            "mdd_files": None if mdd_frame.empty else self.export(mdd_frame, "mdd"),
            "reference_rows": reference_rows,
            "item_reference_rows": item_rows,
            "item_reference_files": None if item_frame.empty else self.export(item_frame, "item_references"),
            "leaderboard_files": self.export(marked, "leaderboard", readable),
            "reference_files": self.export(reference, "reference"),
        }

    def figures(self, settings: list[Setting]) -> dict[str, PlotValue]:
        """Every figure of the index by name (drawn, or reused from the previous site)."""
        folder = self.root / "plots"
        drawn = {"budget": self.plot("budget", lambda: plots.budget_curves(settings, folder))}
        for benchmark in ("bbh", "bbh_cot", "bbh_mc"):
            frame = tables.task_table(settings, benchmark)
            if not frame.empty:
                name = f"heatmap_{benchmark}"
                drawn[name] = self.plot(name, partial(plots.task_heatmap, frame, benchmark, folder))
        for ablation in find_ablations(settings):
            name = f"ablation_{ablation.slug}"
            drawn[name] = self.plot(name, partial(plots.ablation_plot, ablation, folder))
        drawn["loss"] = self.plot("loss", lambda: plots.loss_overview(settings, folder))
        languages = tables.language_table(settings)
        drawn["languages"] = self.plot("languages", lambda: plots.language_bars(languages, folder))
        return drawn

    def start_figures(self, settings: list[Setting]) -> Pending | Children:
        """The figures, drawn by a forked process beside this one's work when the store is large
        (matplotlib's drawing is a large part of a first build); returns what ``result`` gives them."""
        cached = self.previous_pages.get(PLOTS_KEY)
        unchanged = (  # every figure is reused from the previous site: nothing to draw
            self.previous is not None
            and isinstance(cached, dict)
            and all(isinstance(entry, dict) and entry.get("key") == self.data_key for entry in cached.values())
        )
        if unchanged or len(self.store.runs) < 2 * RUNS_PER_WORKER or usable_cpus() < 2 or not hasattr(os, "fork"):
            return Pending(lambda: self.figures(settings))

        def draw() -> dict:
            drawn = self.figures(settings)
            return {"figures": {name: encode_plots(value) for name, value in drawn.items()},
                    "pages": self.pages.get(PLOTS_KEY, {})}

        def received(outcomes: list) -> dict[str, PlotValue]:
            (outcome,) = outcomes
            if outcome["pages"]:
                self.pages[PLOTS_KEY] = outcome["pages"]
            return {name: decode_plots(value) for name, value in outcome["figures"].items()}

        return fork_jobs(self.root / ".figures", [draw], received)

    def figures_and_tables(
        self, settings: list[Setting], comparisons: list[Comparison], drawn: dict[str, PlotValue]
    ) -> dict:
        sections = {"budget_plots": drawn["budget"]}
        heatmaps, task_files = [], {}
        for benchmark in ("bbh", "bbh_cot", "bbh_mc"):
            frame = tables.task_table(settings, benchmark)
            if frame.empty:
                continue
            if drawn[f"heatmap_{benchmark}"]:
                heatmaps.append(drawn[f"heatmap_{benchmark}"])
            task_files[benchmark] = self.export(frame, f"tasks_{benchmark}")
        sections |= {"heatmaps": heatmaps, "task_files": task_files}

        ablations = []
        for ablation in find_ablations(settings):
            frame = tables.ablation_table(ablation)
            ablations.append(
                {
                    "title": f"{ablation.spec.title}: {ablation.model}, {ablation.shots} per task, {ablation.profile}",
                    "plot": drawn[f"ablation_{ablation.slug}"],
                    "table": frame_view(
                        frame,
                        hide=("setting", "comparable", "axis"),
                        labels={k: COLUMNS[k].label for k in COLUMNS},
                    ),
                    "files": self.export(frame, ablation.slug),
                }
            )
        sections["ablations"] = ablations
        sections["loss_plot"] = drawn["loss"]

        languages = tables.language_table(settings)
        seen = tables.seen_heldout_table(settings)
        sections["language_plots"] = drawn["languages"]
        sections["seen_table"] = (
            None if seen.empty else frame_view(seen, hide=("setting", "comparable", "name"))
        )
        sections["seen_files"] = None if seen.empty else self.export(seen, "multilingual_seen_heldout")
        sections["language_files"] = (
            None if languages.empty else self.export(languages, "multilingual_languages")
        )

        paired = paired_table(comparisons)
        sections["paired"] = None if paired.empty else identical_said(frame_view(paired, hide=("a_setting", "b_setting")), paired)
        sections["paired_files"] = None if paired.empty else self.export(paired, "paired")
        return sections

    def start_run_pages(self) -> RunPages:
        """Every run's page and per-sample pages: reused from the previous site where their inputs did
        not change; the others rendered, by forked processes (started now) when there are many, else
        by this process when ``finish`` is called."""
        self.kept_notes, todo = {}, []
        for run in self.store.runs:
            key = self.run_keys[run.run_id]
            reused = self.reuse(run.run_id, key)
            if reused is None:
                todo.append(run)
                continue
            self.kept_notes[run.run_id] = reused
            self.pages[run.run_id] = pages_entry(key, self.previous_pages[run.run_id]["files"], reused)
        workers = min(MAX_WORKERS, usable_cpus(), len(todo) // RUNS_PER_WORKER)
        if workers < 2 or not hasattr(os, "fork"):
            rendered = Pending(lambda: [self.render_run_pages(run) for run in todo])
        else:
            rendered = render_forked(self, todo, workers)
        return RunPages(self, todo, rendered)

    def run_pages_done(self, todo: list[Run], rendered: list[tuple[RunNotes, list[str]]]) -> dict[str, RunNotes]:
        """What the index should say of every run's pages, with the rendered ones recorded."""
        notes = dict(self.kept_notes)
        for run, (run_notes, files) in zip(todo, rendered):
            notes[run.run_id] = run_notes
            self.pages[run.run_id] = pages_entry(self.run_keys[run.run_id], files, run_notes)
        return {run.run_id: notes[run.run_id] for run in self.store.runs}

    def plot(self, name: str, make: Callable[[], PlotValue]) -> PlotValue:
        """A figure (or several) drawn from the store's runs: the previous site's SVG files are reused
        when no run and no code changed (matplotlib's drawing is most of such a rebuild's time)."""
        cached = self.previous_pages.get(PLOTS_KEY)
        entry = cached.get(name) if isinstance(cached, dict) else None
        if self.previous is not None and isinstance(entry, dict) and entry.get("key") == self.data_key:
            try:
                files = [str(file) for file in entry["files"]]
                if any(not PLOT_FILE.match(file) for file in files):
                    raise ValueError("not a plot file name")
                value = decode_plots(entry["value"])
                (self.root / "plots").mkdir(exist_ok=True)
                for file in files:
                    try:
                        os.link(self.previous / file, self.root / file)
                    except OSError:
                        shutil.copy2(self.previous / file, self.root / file)
                self.pages.setdefault(PLOTS_KEY, {})[name] = entry
                return value
            except (OSError, KeyError, TypeError, ValueError):
                pass  # drawn again below, over any file linked already
        folder = self.root / "plots"
        before = set(os.listdir(folder)) if folder.is_dir() else set()
        value = make()
        after = set(os.listdir(folder)) if folder.is_dir() else set()
        self.pages.setdefault(PLOTS_KEY, {})[name] = {
            "key": self.data_key, "files": [f"plots/{file}" for file in sorted(after - before)], "value": encode_plots(value),
        }
        return value

    def reuse(self, run_id: str, key: str) -> RunNotes | None:
        """Hard-link the run's pages from the previous site when they were made from the same inputs."""
        entry = self.previous_pages.get(run_id)
        if self.previous is None or not isinstance(entry, dict) or entry.get("key") != key:
            return None
        try:
            files = [str(name) for name in entry["files"]]
            if not files or any(not RUN_PAGE.match(name) for name in files):
                return None  # only names this report writes
            notes = notes_from(entry)
            (self.root / "runs").mkdir(exist_ok=True)
            for name in files:
                try:
                    os.link(self.previous / name, self.root / name)
                except OSError:
                    shutil.copy2(self.previous / name, self.root / name)  # no hard links here
        except (OSError, KeyError, TypeError, ValueError):
            for name in entry["files"] if isinstance(entry.get("files"), list) else ():
                if isinstance(name, str) and RUN_PAGE.match(name):
                    (self.root / name).unlink(missing_ok=True)
            return None
        self.reused += 1
        return notes

    def render_run_pages(self, run: Run) -> tuple[RunNotes, list[str]]:
        """Render the run's pages; returns what the index should say of them and the files written."""
        loss = [(key, line) for key in plots.LOSS_KEYS if (line := sparkline(plots.series(run, key)))]
        sample_pages, unreadable, collapsed = [], [], []
        for benchmark in run.sample_benchmarks():
            if benchmark not in BENCHMARKS:
                continue  # only names the registry knows become file names and links
            records, problem = run.read_samples(benchmark)
            if problem:
                unreadable.append(problem)
                continue
            page = f"{run.run_id}_{benchmark}.html"
            wrong = sum(1 for r in records if not r.get("correct"))
            found = collapse(records)
            if found:
                collapsed.append((benchmark, found))
            sample_pages.append(
                {
                    "benchmark": benchmark,
                    "file": page,
                    "count": len(records),
                    "wrong": wrong,
                    "collapse": found.describe() if found else "",
                }
            )
            self.render(
                "samples.html.j2",
                self.root / "runs" / page,
                "../",
                script="samples",
                run=run_row(run, self.status(run)),
                benchmark=benchmark,
                records_json=records_json([sample_row(r) for r in records]),
                count=len(records),
                tasks=sorted({str(r.get("task")) for r in records}),
                tail=PROMPT_TAIL_CHARS,
            )
        results = run.results or {}
        task_scores, aggregates = task_rows(results), aggregate_rows(results)
        self.render(
            "run.html.j2",
            self.root / "runs" / f"{run.run_id}.html",
            "../",
            run=run_row(run, self.status(run)),
            config=sorted(flatten(run.config).items()),
            data_hashes=sorted(run.data_hashes.items()),
            env={k: v for k, v in run.env.items() if k != "packages"},
            packages=sorted((run.env.get("packages") or {}).items()),
            task_scores=task_scores,
            task_scores_html=table_rows(TASK_ROW, task_scores),
            aggregates=aggregates,
            aggregates_html=table_rows(AGGREGATE_ROW, aggregates),
            protocols=sorted((results.get("protocols") or {}).items()),
            loss=loss,
            cost=cost_rows(run.cost),
            sample_pages=sample_pages,
            problems=(*run.problems, *unreadable),
        )
        files = [f"runs/{run.run_id}.html"] + [f"runs/{page['file']}" for page in sample_pages]
        return RunNotes(tuple(unreadable), tuple(collapsed)), files


PLOTS_KEY = "plots"  # in PAGES_FILE beside the run ids: name -> the plot's data key, files, return value
PLOT_FILE = re.compile(r"^plots/[A-Za-z0-9_.-]+\.svg$")
PlotValue = plots.Plot | list[plots.Plot] | None


def encode_plots(value: PlotValue):
    if isinstance(value, list):
        return [encode_plots(item) for item in value]
    return None if value is None else {"file": value.file, "title": value.title, "description": value.description}


def decode_plots(value) -> PlotValue:
    if isinstance(value, list):
        return [decode_plots(item) for item in value]
    if value is None:
        return None
    if value["file"] and not PLOT_FILE.match(str(value["file"])):  # "" where there was nothing to draw
        raise ValueError("not a plot file name")
    return plots.Plot(str(value["file"]), str(value["title"]), str(value["description"]))


MAX_WORKERS = 8
RUNS_PER_WORKER = 100  # below this, starting a process costs more than it saves


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pages_entry(key: str, files: list[str], notes: RunNotes) -> dict:
    return {
        "key": key,
        "files": list(files),
        "unreadable": list(notes.unreadable),
        "collapsed": [[benchmark, c.answer, c.count, c.total] for benchmark, c in notes.collapsed],
    }


def notes_from(entry: dict) -> RunNotes:
    return RunNotes(
        tuple(str(problem) for problem in entry["unreadable"]),
        tuple((str(b), Collapse(str(a), int(c), int(t))) for b, a, c, t in entry["collapsed"]),
    )


class Pending:
    """Run pages still to render in this process: rendered when ``result`` is called."""

    def __init__(self, render: Callable[[], list[tuple[RunNotes, list[str]]]]):
        self.render = render

    def result(self) -> list[tuple[RunNotes, list[str]]]:
        return self.render()

    def abandon(self) -> None:
        pass


@dataclass(frozen=True)
class RunPages:
    site: Site
    todo: list[Run]
    rendered: Pending | Children

    def finish(self) -> dict[str, RunNotes]:
        return self.site.run_pages_done(self.todo, self.rendered.result())

    def abandon(self) -> None:
        self.rendered.abandon()


def render_forked(site: Site, runs: list[Run], workers: int) -> Children:
    """Start rendering runs' pages in ``workers`` forked processes (each inherits the loaded store, so
    nothing is pickled); each writes its share of pages and says what it wrote."""
    shares = [runs[index::workers] for index in range(workers)]
    jobs = [
        partial(lambda share: [pages_entry("", files, notes) for notes, files in map(site.render_run_pages, share)], share)
        for share in shares
    ]

    def received(outcomes: list) -> list[tuple[RunNotes, list[str]]]:
        by_run = {}
        for share, done in zip(shares, outcomes):
            for run, entry in zip(share, done):
                by_run[run.run_id] = (notes_from(entry), entry["files"])
        return [by_run[run.run_id] for run in runs]

    return fork_jobs(site.root / ".render", jobs, received)


def fork_jobs(folder: Path, jobs: list[Callable[[], object]], received: Callable[[list], object]) -> Children:
    """Run each job in a forked process, now; ``result()`` waits for them and gives ``received`` the
    jobs' JSON results in order. Each child writes its result as a JSON file in ``folder``."""
    import traceback

    folder.mkdir()
    children = []
    for number, job in enumerate(jobs):
        pid = os.fork()
        if pid == 0:  # the child: run, report, leave without running the parent's cleanup
            code = 0
            try:
                outcome = {"done": job()}
            except OSError as error:
                outcome, code = {"oserror": [error.errno, error.strerror or str(error)]}, 1
            except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises
                outcome, code = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}, 1
            try:
                (folder / f"{number}.json").write_text(json.dumps(outcome), encoding="utf-8")
            finally:
                os._exit(code)
        children.append(pid)
    return Children(children, len(children), folder, received)


@dataclass
class Children:
    """Processes started by ``fork_jobs``."""

    pids: list[int]  # the processes not waited for yet
    count: int  # the jobs, each with a result file
    folder: Path
    received: Callable[[list], object]

    def wait(self) -> None:
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.pids = []

    def abandon(self) -> None:
        """The build failed elsewhere: let the processes end (what they wrote goes with the build folder)."""
        self.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def result(self):
        """Wait for the processes; a child's disk error comes back as that OSError, anything else as
        a RuntimeError naming the child's exception."""
        self.wait()
        try:
            outcomes = [
                json.loads((self.folder / f"{number}.json").read_text(encoding="utf-8")) for number in range(self.count)
            ]
        except (OSError, ValueError) as error:
            raise RuntimeError(f"a report worker process died without a result ({error})") from None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        for outcome in outcomes:
            if "oserror" in outcome:
                raise OSError(*outcome["oserror"])
            if "error" in outcome:
                raise RuntimeError(f"a report worker failed: {outcome['error']}\n{outcome['trace']}")
        return self.received([outcome["done"] for outcome in outcomes])


@dataclass(frozen=True)
class RunNotes:
    unreadable: tuple[str, ...]  # sample files that could not be read, with the reason
    collapsed: tuple[tuple[str, Collapse], ...]  # (benchmark, the answer given to nearly every item)


def flag_collapsed(view: TableView, settings: list[Setting], notes: dict[str, RunNotes]) -> None:
    """A leaderboard cell whose runs gave one answer to nearly every item carries a badge."""
    columns = {h.key: index for index, h in enumerate(view.headers)}
    for row, setting in zip(view.rows, settings):
        for run in setting.runs:
            for benchmark, found in notes[run.run_id].collapsed:
                if benchmark in columns:
                    cell = row[columns[benchmark]]
                    badge = f"same answer on {found.share:.0%} of items (seed {run.seed})"
                    row[columns[benchmark]] = replace(cell, badge=f"{cell.badge}; {badge}" if cell.badge else badge)


NO_ITEM_DIFFERS = "no item differs: both sides gave the same verdict on every item in every seed"


def identical_said(view: TableView, frame) -> TableView:
    """A comparison whose difference and spread are both exactly zero compared identical answers;
    it says so instead of showing "0.00 ± 0.00"."""
    column = [h.key for h in view.headers].index("difference")
    for row, estimate, se in zip(view.rows, frame["difference_mean"], frame["se"]):
        if estimate == 0 and se == 0:
            row[column] = replace(row[column], text=NO_ITEM_DIFFERS)
    return view


def run_row(run: Run, status: Status) -> dict:
    profile = PROFILES.get(run.profile)
    return {
        "id": run.run_id,
        "status": status.name,  # the store's words: done, failed, running, interrupted
        "reason": status.reason,  # a failed run's one-line reason
        "done": run.done,
        "method": run.method,
        "model": run.model,
        "scenario": run.config.get("scenario"),
        "shots": "" if run.config.get("shots") is None else str(run.config.get("shots")),
        "seed": "" if run.seed is None else str(run.seed),
        "profile": run.profile,
        "comparable": bool(profile and profile.comparable),
        "created": run.created or "",
        "finished": run.finished or "",
        "problems": run.problems,
    }


def task_rows(results: dict) -> list[dict]:
    rows = []
    for score in results.get("tasks", ()):
        for metric, value in sorted((score.get("metrics") or {}).items()):
            stderr = (score.get("stderr") or {}).get(metric)
            rows.append(
                {
                    "benchmark": score.get("benchmark"),
                    "task": score.get("task"),
                    "metric": metric,
                    "value": _percent(value),
                    "stderr": _percent(stderr),
                    "n": score.get("n_evaluated"),
                }
            )
    return rows


def aggregate_rows(results: dict) -> list[dict]:
    return [
        {
            "benchmark": a.get("benchmark"),
            "name": a.get("name"),
            "metric": a.get("metric"),
            "value": _percent(a.get("value")),
            "stderr": _percent(a.get("stderr")),
            "n_tasks": a.get("n_tasks"),
            "n_items": a.get("n_items"),
            "method": a.get("method"),
        }
        for a in results.get("aggregates", ())
    ]


# The run page's two long tables, written here rather than by the template: Jinja's per-cell
# lookups and Markup objects were most of a run page's time (thousands of pages in a large store).
TASK_ROW = (
    '<tr><td>{benchmark}</td><td>{task}</td><td>{metric}</td>\n<td class="num" data-sort="{value}">{value}</td>'
    '<td class="num" data-sort="{stderr}">{stderr}</td><td class="num" data-sort="{n}">{n}</td></tr>\n'
)
AGGREGATE_ROW = (
    '<tr><td>{benchmark}</td><td>{name}</td><td>{metric}</td><td class="num">{value}</td><td class="num">{stderr}</td>'
    '<td class="num">{n_tasks}</td><td class="num">{n_items}</td><td>{method}</td></tr>\n'
)
HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})  # as markupsafe


def table_rows(template: str, rows: list[dict]) -> Markup:
    """``template`` filled with each row's values, every value HTML-escaped (as autoescaping does)."""
    return Markup("".join(template.format_map({k: str(v).translate(HTML_ESCAPES) for k, v in row.items()}) for row in rows))


def _percent(value) -> str:
    return "" if not isinstance(value, (int, float)) else tables.number(value * 100)


def sample_row(record: dict) -> dict:
    prompt = record.get("prompt", "")
    if isinstance(prompt, list):
        prompt = "\n--- next choice's context ---\n".join(str(p) for p in prompt)
    prompt = str(prompt)
    gold = record.get("gold", record.get("target_text", record.get("target")))
    prediction = record.get("prediction")
    choices = record.get("choices")
    if isinstance(prediction, int) and isinstance(choices, list) and 0 <= prediction < len(choices):
        prediction = f"{prediction}: {choices[prediction]}"  # multiple choice: index and its text
    return {
        "task": str(record.get("task")),
        "doc_id": str(record.get("doc_id")),
        "correct": bool(record.get("correct")),
        "prediction": _text(prediction),
        "gold": _text(gold),
        "output": _text(record.get("output", "")),
        "prompt_tail": prompt[-PROMPT_TAIL_CHARS:],
        "truncated": len(prompt) > PROMPT_TAIL_CHARS,
    }


SAMPLE_FIELDS = ("task", "doc_id", "correct", "prediction", "gold", "output", "prompt_tail", "truncated")


def records_json(rows: list[dict]) -> Markup:
    """The page's records as one JSON array of arrays (``SAMPLE_FIELDS`` order) in a data block the
    page's script turns into table rows with ``textContent``. Inline markup written per record cost
    most of a large report's time and size. ``<``, ``>`` and ``&`` are written as JSON escapes, so no
    text can end the data block or read as markup."""
    text = json.dumps([[row[field] for field in SAMPLE_FIELDS] for row in rows], ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
