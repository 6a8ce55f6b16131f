"""``mlbench publish``: a committable store of finished runs, without weights or prompts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metalora.errors import MlbenchError
from reports.load import load_store
from reports.paired import paired_comparisons
from reports.publish import publish_results
from reports.settings import group_settings
from tests.report_fixtures import MODEL, rid, standard_store


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    store = standard_store(root / "store")
    for run in load_store(store).finished:  # what publishing must leave out: weights
        (run.path / "adapter").mkdir()
        (run.path / "adapter" / "adapter.safetensors").write_bytes(b"weights")
    return store, publish_results(store, root / "results" / MODEL, model=MODEL)


def test_every_finished_run_is_published_without_weights_or_prompts(published):
    store, done = published
    source, copy = load_store(store), load_store(done.out)
    finished = sorted(run.run_id for run in source.finished if run.model == MODEL)
    assert sorted(run.run_id for run in copy.finished) == finished == sorted(run.run_id for run in copy.runs)
    assert done.runs == len(finished)
    assert not list(done.out.rglob("adapter*")) and not list(done.out.rglob("index.sqlite"))
    for run in copy.finished:
        original = next(r for r in source.finished if r.run_id == run.run_id)
        assert run.results == original.results and run.config == original.config
        for benchmark in original.sample_benchmarks():
            before, after = original.samples(benchmark), run.samples(benchmark)
            assert len(after) == len(before) > 0
            assert all("prompt" not in record for record in after)
            assert [r["correct"] for r in after] == [r["correct"] for r in before]
    assert copy.skipped == ()  # the tables folder is not mistaken for a run


def test_published_store_gives_the_same_paired_comparisons(published):
    store, done = published

    def differences(path: Path) -> list[tuple]:
        settings = group_settings(load_store(path).finished)
        return [(c.a.key, c.b.key, c.column, c.difference) for c in paired_comparisons(settings, [])]

    assert differences(done.out) == differences(store) != []


def test_markdown_tables_are_rendered_beside_the_runs(published):
    _, done = published
    assert "leaderboard.md" in done.tables
    text = (done.out / "tables" / "leaderboard.md").read_text(encoding="utf-8")
    assert text.startswith("|") and "lora" in text


def test_nothing_to_publish_is_one_line(tmp_path):
    store = standard_store(tmp_path / "store")
    with pytest.raises(MlbenchError, match="no finished runs of model 'other'.*tiny-llama"):
        publish_results(store, tmp_path / "out", model="other")
    assert not (tmp_path / "out").exists()


def test_cli_publish_refuses_a_folder_it_did_not_write(tmp_path):
    store = standard_store(tmp_path / "store")
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "metalora.cli", "publish", "--store", str(store), "--out", str(out)],
        check=False, capture_output=True, text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert rid(1) not in json.dumps(sorted(p.name for p in out.iterdir()))


def test_published_runs_are_marked_in_the_report_and_keep_their_first_marker(published, tmp_path):
    from reports.site import build_report

    store, done = published
    runs = load_store(done.out).finished
    markers = {run.run_id: run.published for run in runs}
    assert markers and all(
        m and m["published_by"] == "mlbench publish" and len(m["code_revision"].split()[0]) == 40
        for m in markers.values()
    )
    assert all(run.published is None for run in load_store(store).finished)  # the source store is not published

    def published_rows(html: str) -> int:
        return html.count('<span class="badge" title="published">published</span>')

    settings = {s.key for s in group_settings(runs)}
    assert published_rows(build_report(done.out, tmp_path / "site").read_text(encoding="utf-8")) == len(settings)
    assert published_rows(build_report(store, tmp_path / "site2").read_text(encoding="utf-8")) == 0
    again = publish_results(done.out, tmp_path / "again", model=MODEL)  # a published store, published again
    assert {run.run_id: run.published for run in load_store(again.out).finished} == markers
    assert "| published " in (done.out / "tables" / "leaderboard.md").read_text(encoding="utf-8")


def test_records_files_are_the_same_bytes_for_the_same_records(tmp_path):
    from eval_tasks.records import read_records, write_records

    records = [{"doc_id": 0, "correct": True, "response": "A"}, {"doc_id": 1, "correct": False, "response": "é"}]
    write_records(tmp_path / "a" / "bbh.jsonl.gz", records)
    write_records(tmp_path / "b" / "bbh.jsonl.gz", records)
    first, second = (tmp_path / d / "bbh.jsonl.gz" for d in "ab")
    assert first.read_bytes() == second.read_bytes() and read_records(first) == records
