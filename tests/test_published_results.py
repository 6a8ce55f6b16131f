"""The committed ``results/<model>/`` folders: what README's published tables stand on.

Each folder is a store written by ``mlbench publish``. A report built from it must render exactly
the Markdown tables committed beside its runs (``tables/*.md``), and its HTML leaderboard must show
the same numbers; every run must say which code revision and machine produced it, and carry no
weights. A change to how the report renders its tables makes the first test fail until
``make republish`` re-renders the committed ones (and the diff shows what changed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reports.load import load_store
from reports.site import build_report

RESULTS = Path(__file__).resolve().parent.parent / "results"
FOLDERS = sorted(path for path in RESULTS.iterdir() if path.is_dir()) if RESULTS.is_dir() else []


def leaderboard_scores(markdown: str) -> list[str]:
    """The score cells ("54.00 ± 9.86 (n=3)") of a Markdown leaderboard."""
    return [
        cell.strip().split(" (n=")[0]
        for line in markdown.splitlines()[2:]
        for cell in line.split("|")
        if "(n=" in cell
    ]


def test_there_is_a_published_table():
    assert [folder.name for folder in FOLDERS] == ["qwen2.5-coder-1.5b"]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda path: path.name)
def test_the_report_renders_the_committed_tables(folder, tmp_path):
    site = tmp_path / "site"
    index = build_report(folder, site)
    committed = sorted(path.name for path in (folder / "tables").glob("*.md"))
    assert "leaderboard.md" in committed and "paired.md" in committed
    for name in committed:
        assert (site / "tables" / name).read_text(encoding="utf-8") == (folder / "tables" / name).read_text(
            encoding="utf-8"
        ), name
    html = index.read_text(encoding="utf-8")
    scores = leaderboard_scores((folder / "tables" / "leaderboard.md").read_text(encoding="utf-8"))
    assert len(scores) >= 4 * 9  # four benchmarks, nine settings
    assert all(score.replace("±", "&plusmn;") in html or score in html for score in scores)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda path: path.name)
def test_every_run_records_its_revision_and_machine_and_holds_no_weights(folder):
    store = load_store(folder)
    assert store.runs and len(store.finished) == len(store.runs) and store.skipped == ()
    for run in store.runs:
        env = json.loads((run.path / "env.json").read_text(encoding="utf-8"))
        assert len(env["code_revision"].split()[0]) == 40 and env["code_dirty"] is False
        assert env["device"].startswith("cuda (NVIDIA")
    assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("index.sqlite"))


def test_readme_table_is_copied_from_the_committed_leaderboard():
    readme = (RESULTS.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- published-table:")
    block = readme[start : readme.index("<!-- /published-table -->", start)]
    quoted = re.findall(r"\| (\d+\.\d\d(?: ± \d+\.\d\d)?) (?=\|)", block)
    scores = leaderboard_scores((RESULTS / "qwen2.5-coder-1.5b" / "tables" / "leaderboard.md").read_text("utf-8"))
    assert len(quoted) == 9 * 4 and set(quoted) <= set(scores)
