"""Publish finished runs as a small read-only store that can be committed: ``results/<model>/``.

What a reader needs to check every number and rerun any run goes in; what is large, derivable or
not ours to redistribute stays out:

- kept per run: ``config.json`` (config, seeds, data hashes), ``env.json`` (versions, code revision),
  ``cost.json``, ``training_log.jsonl``, ``eval/results.json``, ``DONE``, and the per-item records
  ``eval/samples/*.jsonl.gz`` without their prompts (a prompt is rebuilt from the data and the
  config; keeping them would multiply the size and copy benchmark text into the repository);
- left out: adapters and checkpoints (weights), the SQLite index (rebuilt from the folders);
- added: a ``PUBLISHED`` marker per run (when, and by which code revision), so the report marks the
  run as published wherever the folder is read, also after more runs join it in a resumed sweep.

The published folder is itself a store: ``mlbench report --store results/<model>`` renders it, and
its paired comparisons work, since those read each item's correctness, not its prompt. The
leaderboard's Markdown tables are rendered into ``tables/`` beside the runs. The folder is written
like a report (``reports.output``): built beside ``--out``, swapped in whole, and an existing
folder is replaced only when this command wrote everything in it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eval_tasks.records import write_records
from metalora.errors import MlbenchError
from metalora.files import write_json
from metalora.provenance import code_revision
from metalora.runs.store import PUBLISHED_FILE, now
from reports.load import Run, load_store
from reports.output import publish
from reports.primary import SWEEPS_FOLDER

RUN_FILES = ("config.json", "env.json", "cost.json", "training_log.jsonl", "eval/results.json", "DONE")
SAMPLES = "eval/samples"
DROPPED_FIELDS = ("prompt",)  # per item; rebuilt from the data and the run's config
TABLES = "tables"  # the rendered Markdown tables, beside the run folders (reports.load.NOT_RUNS)


@dataclass(frozen=True)
class Published:
    out: Path
    runs: int
    sample_files: int
    tables: tuple[str, ...]


def publish_results(store: Path, out: Path, *, model: str | None = None) -> Published:
    """Copy the finished runs of ``store`` (only those of ``model`` when given) into ``out``."""
    data = load_store(Path(store))
    runs = [run for run in data.finished if model is None or run.model == model]
    if not runs:
        models = sorted({run.model for run in data.finished})
        which = f" of model {model!r}" if model else ""
        have = f"; finished runs exist for: {', '.join(models)}" if models else ""
        raise MlbenchError(f"the store {data.path} has no finished runs{which} to publish{have}")
    counts = {"samples": 0}
    tables: list[str] = []
    revision, dirty = code_revision()
    marker = {"published_by": "mlbench publish", "published": now(), "code_revision": revision, "code_dirty": dirty}

    def build(folder: Path) -> None:
        for run in runs:
            counts["samples"] += copy_run(run, folder / run.run_id)
            # A run published before keeps its first marker: that is when it became public.
            write_json(folder / run.run_id / PUBLISHED_FILE, run.published or marker)
        sweeps = data.path / SWEEPS_FOLDER
        if sweeps.is_dir():
            shutil.copytree(sweeps, folder / SWEEPS_FOLDER)
        tables.extend(render_tables(folder))

    publish(Path(out), data.path, build)
    return Published(Path(out), len(runs), counts["samples"], tuple(tables))


def copy_run(run: Run, target: Path) -> int:
    """Copy one run's published files; returns how many per-item record files were written."""
    for name in RUN_FILES:
        source = run.path / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)
    written = 0
    for benchmark in run.sample_benchmarks():
        records, problem = run.read_samples(benchmark)
        if problem:
            raise MlbenchError(f"run {run.run_id}: {problem}; rerun its evaluation or leave the run out")
        slim = [{key: value for key, value in record.items() if key not in DROPPED_FIELDS} for record in records]
        write_records(target / SAMPLES / f"{benchmark}.jsonl.gz", slim)
        written += 1
    return written


def render_tables(folder: Path) -> list[str]:
    """Render the report of the published runs and keep its Markdown tables in ``tables/``."""
    from reports.site import build_report  # the site renderer is heavy; only this step needs it

    with tempfile.TemporaryDirectory(prefix=".tables-", dir=folder.parent) as scratch:
        site = Path(scratch) / "site"
        build_report(folder, site)
        names = sorted(path.name for path in (site / TABLES).glob("*.md"))
        (folder / TABLES).mkdir()
        for name in names:
            shutil.copyfile(site / TABLES / name, folder / TABLES / name)
    return names
