"""`mlbench report` never deletes what it did not write, says one line on bad input, and its
exports cannot smuggle formulas or markup; odd numbers (inf, NaN) are shown, not fatal."""

from __future__ import annotations

import csv
import errno
import gzip
import json
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from eval_tasks.records import write_records
from metalora.cli import app
from metalora.errors import MlbenchError
from reports import output, site, tables
from reports.site import build_report
from tests.report_fixtures import bbh, mmlu, rid, standard_store, write_run


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("mlbench: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_store_inside_the_report_folder_is_never_deleted(tmp_path):
    site_dir = tmp_path / "site"
    build_report(standard_store(tmp_path / "first"), site_dir)  # site/ is a report now
    store = standard_store(site_dir / "runs-store")
    before = tree(store)
    result = cli("report", "--store", str(store), "--out", str(site_dir))
    one_line_error(result, "is inside --out")
    assert tree(store) == before


def test_files_a_person_added_to_a_report_folder_are_kept(tmp_path):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    (index.parent / "notes.txt").write_text("mine")
    (index.parent / "runs" / "keep.html").write_text("mine too")
    result = cli("report", "--store", str(store), "--out", str(index.parent))
    one_line_error(result, "holds files the report did not write (notes.txt, runs/keep.html)")
    assert (index.parent / "notes.txt").read_text() == "mine"
    assert (index.parent / "runs" / "keep.html").read_text() == "mine too"


def test_non_empty_folder_that_is_not_a_report_is_refused_in_one_line(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    result = cli("report", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "docs"))
    one_line_error(result, "is a non-empty folder that is not an mlbench report")
    assert tree(tmp_path / "docs") == {"thesis.tex": b"precious"}


def test_rebuild_removes_only_pages_it_wrote(tmp_path):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    assert (index.parent / "runs" / f"{rid(70)}.html").is_file()
    marker = json.loads((index.parent / output.MARKER).read_text())
    assert "index.html" in marker["files"] and f"runs/{rid(70)}.html" in marker["files"]
    shutil.rmtree(store / rid(70))
    build_report(store, index.parent)
    assert not (index.parent / "runs" / f"{rid(70)}.html").exists()  # its own stale page: replaced


def test_a_report_from_before_the_file_list_is_still_replaced(tmp_path):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    (index.parent / output.MARKER).write_text("built by mlbench report; this folder is replaced on every build\n")
    build_report(store, index.parent)
    assert json.loads((index.parent / output.MARKER).read_text())["files"]


def test_missing_store_is_named_and_not_created(tmp_path):
    result = cli("report", "--store", str(tmp_path / "typo"), "--out", str(tmp_path / "site"))
    one_line_error(result, f"run store {tmp_path / 'typo'} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unwritable_out_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    store = standard_store(tmp_path / "store")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output.tempfile, "mkdtemp", read_only)
    result = cli("report", "--store", str(store), "--out", str(tmp_path / "site"))
    one_line_error(result, "cannot write the report to")
    assert "Read-only file system" in result.stderr and "choose a writable --out folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_disk_full_during_the_build_keeps_the_previous_site(tmp_path, monkeypatch):
    store = standard_store(tmp_path / "store")
    index = build_report(store, tmp_path / "site")
    before = tree(index.parent)

    def full(self):
        (self.root / "index.html").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(site.Site, "write", full)
    with pytest.raises(MlbenchError, match=r"No space left on device\); choose a writable --out"):
        build_report(store, index.parent)
    assert tree(index.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]


def test_infinite_and_nan_scores_are_shown_not_fatal(tmp_path):
    store = tmp_path / "store"
    for number, value in ((1, float("inf")), (2, float("-inf")), (3, float("nan"))):
        folder = write_run(store, rid(number), method="lora", shots=10 * number, correct={"bbh": bbh(2, 2)})
        results = json.loads((folder / "eval" / "results.json").read_text())
        for aggregate in results["aggregates"]:
            aggregate["value"] = value
        results["tasks"][0]["metrics"]["exact_match"] = value
        (folder / "eval" / "results.json").write_text(json.dumps(results))  # json writes Infinity, NaN
    index = build_report(store, tmp_path / "site")
    html = index.read_text(encoding="utf-8")
    assert ">+inf (n=1)<" in html.replace('data-sort="Infinity">', ">")
    assert ">-inf (n=1)<" in html.replace('data-sort="-Infinity">', ">")
    assert "NaN (n=1)" in html
    board = pd.read_csv(index.parent / "tables" / "leaderboard.csv", keep_default_na=False)
    assert board["bbh_mean"].tolist() == ["inf", "-inf", "NaN"] and board["bbh_n"].tolist() == [1, 1, 1]
    run_page = (index.parent / "runs" / f"{rid(3)}.html").read_text(encoding="utf-8")
    assert ">NaN<" in run_page


def test_csv_export_defuses_spreadsheet_formulas(tmp_path):
    frame = pd.DataFrame(
        {
            "model": ['=HYPERLINK("http://x","y")', "+1", "-cmd", "@SUM(A1)", "\tx", "\rx", "plain"],
            "difference": [-1.5, 2.0, -3.0, 0.0, 1.0, 1.0, 1.0],
        }
    )
    files = tables.export(frame, tmp_path, "t")
    with open(tmp_path / files["CSV"], newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1:] == [
        ['\'=HYPERLINK("http://x","y")', "-1.5"],  # numbers stay numbers, negative ones too
        ["'+1", "2.0"],
        ["'-cmd", "-3.0"],
        ["'@SUM(A1)", "0.0"],
        ["'\tx", "1.0"],
        ["'\rx", "1.0"],
        ["plain", "1.0"],
    ]


def test_markdown_export_escapes_html(tmp_path):
    frame = pd.DataFrame({"model": ['<img src=x onerror="alert(1)">', "a|b\nc"], "n": [1, 2]})
    files = tables.export(frame, tmp_path, "t")
    markdown = (tmp_path / files["Markdown"]).read_text()
    assert "<img" not in markdown and '&lt;img src=x onerror="alert(1)"&gt;' in markdown
    assert "a\\|b c" in markdown and len(markdown.splitlines()) == 4  # header, rule, two rows


def test_sample_records_are_readable_by_others(tmp_path):
    path = tmp_path / "bbh.jsonl.gz"
    write_records(path, [{"task": "t", "doc_id": 0}])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unreadable_sample_file_is_reported_not_dropped(tmp_path, monkeypatch):
    store = tmp_path / "store"
    write_run(store, rid(1), method="lora", correct={"bbh": bbh(2, 2), "mmlu": mmlu(1, 1)})
    locked = store / rid(1) / "eval" / "samples" / "bbh.jsonl.gz"
    real_open = gzip.open

    def as_other_user(path, *args, **kwargs):  # tests run as root, where chmod 000 still reads
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(gzip, "open", as_other_user)
    index = build_report(store, tmp_path / "site")
    html = index.read_text(encoding="utf-8")
    assert "Per-sample records that could not be read" in html
    assert "eval/samples/bbh.jsonl.gz could not be read (Permission denied)" in html
    run_page = (index.parent / "runs" / f"{rid(1)}.html").read_text(encoding="utf-8")
    assert "eval/samples/bbh.jsonl.gz could not be read (Permission denied)" in run_page
    assert (index.parent / "runs" / f"{rid(1)}_mmlu.html").is_file()
    assert not (index.parent / "runs" / f"{rid(1)}_bbh.html").exists()
