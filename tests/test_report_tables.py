"""The report's numbers, from a fixture store whose scores are known by construction.

Expected means are worked out by hand from tests/report_fixtures (per-task right answers out of 4),
and the 95% half-width is t * s / sqrt(n) with Student t quantiles taken from the standard table.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest

from reports import tables
from reports.ablations import find_ablations
from reports.load import load_store
from reports.paired import comparison_index, paired_comparisons
from reports.settings import group_settings
from tests.report_fixtures import rid, standard_store

T_975 = {1: 12.706204736174698, 2: 4.302652729749462, 7: 2.364624251592784}  # t(0.975, df)


def half_width(values: list[float]) -> float:
    return T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return load_store(standard_store(tmp_path_factory.mktemp("report") / "store"))


@pytest.fixture(scope="module")
def settings(store):
    return group_settings(store.finished)


@pytest.fixture(scope="module")
def board(settings):
    return tables.leaderboard(settings)


def row(board, method, shots, variant="", scenario="multitask", profile="full"):
    match = board[
        (board["method"] == method)
        & (board["shots"].map(lambda value: value == shots))
        & (board["variant"] == variant)
        & (board["profile"] == profile)
        & ((board["scenario"] == scenario) if method != "base" else board["scenario"].isna())
    ]
    assert len(match) == 1, match
    return match.iloc[0]


EXPECTED = [  # method, shots, variant, scenario, column, per-seed values
    ("lora", 50, "", "multitask", "bbh", [50.0, 62.5, 75.0]),
    ("lora", 50, "", "multitask", "mmlu", [50.0, 62.5, 75.0]),
    ("metalora", 50, "", "multitask", "bbh", [62.5, 75.0, 87.5]),
    ("metalora", 50, "", "multitask", "mmlu", [75.0, 75.0, 75.0]),
    ("lora", 10, "", "multitask", "bbh", [25.0, 50.0]),
    ("metalora", 10, "", "multitask", "bbh", [37.5, 62.5]),
    ("metalora", 50, "", "multilingual", "xcopa", [50.0, 200 / 3]),
    ("metalora", 50, "", "multilingual", "multilingual", [50.0, 200 / 3]),
]


@pytest.mark.parametrize(("method", "shots", "variant", "scenario", "column", "values"), EXPECTED)
def test_leaderboard_means_and_intervals(board, method, shots, variant, scenario, column, values):
    r = row(board, method, shots, variant, scenario)
    mean = sum(values) / len(values)
    assert r[f"{column}_mean"] == pytest.approx(mean, rel=1e-12)
    assert r[f"{column}_n"] == len(values)
    assert r[f"{column}_ci_low"] == pytest.approx(mean - half_width(values), rel=1e-12, abs=1e-12)
    assert r[f"{column}_ci_high"] == pytest.approx(mean + half_width(values), rel=1e-12, abs=1e-12)


def test_one_seed_has_no_interval(board):
    for r in (row(board, "base", None), row(board, "metalora", 50, "inner_steps=1")):
        assert r["bbh_n"] == 1
        assert pd.isna(r["bbh_ci_low"]) and pd.isna(r["bbh_ci_high"])
    assert row(board, "base", None)["bbh_mean"] == 37.5
    assert row(board, "metalora", 50, "inner_steps=1")["bbh_mean"] == 62.5
    assert tables.format_interval(62.5, None, None, 1) == "62.50 (n=1, CI n/a)"
    assert tables.format_interval(62.5, 31.45, 93.55, 3) == "62.50 ± 31.05 (n=3)"


def test_unfinished_runs_are_left_out_and_smoke_runs_marked(store, board):
    assert rid(80) in {run.run_id for run in store.runs}
    assert rid(80) not in {run.run_id for run in store.finished}
    assert not (board["shots"].map(lambda value: value == 100)).any()
    smoke = row(board, "lora", 10, profile="smoke")
    assert not smoke["comparable"] and row(board, "lora", 10)["comparable"]
    assert len(board) == 8  # base; lora 10, 50; metalora 10, 50, k=1; multilingual; smoke


def test_marks_rank_within_blocks_and_claim_nothing_untestable(settings, board):
    # 50/task: MeTA-LoRA 75 against LoRA 62.5 and the one-seed k=1 row; every seed differs by
    # exactly 12.5 on 8 items, so the data cannot show their noise: no best, the block is tied.
    # The smoke run's 100 is alone in its block and the base model is never ranked.
    marks = tables.column_marks(board, "bbh", comparison_index(paired_comparisons(settings)))
    marked = sorted(
        (board.iloc[p]["method"], board.iloc[p]["shots"], board.iloc[p]["variant"], m)
        for p, m in marks.items()
    )
    assert marked == [
        ("lora", 10, "", tables.TIED),
        ("lora", 50, "", tables.TIED),
        ("metalora", 10, "", tables.TIED),
        ("metalora", 50, "", tables.TIED),
        ("metalora", 50, "inner_steps=1", tables.TIED),
    ]


def test_csv_export_matches_the_leaderboard(board, tmp_path):
    files = tables.export(board, tmp_path, "leaderboard")
    csv = pd.read_csv(tmp_path / files["CSV"], dtype={"shots": str})
    assert list(csv.columns) == list(board.columns)
    for column in board.columns:
        if column.endswith(("_mean", "_ci_low", "_ci_high")):
            assert csv[column].tolist() == pytest.approx(
                board[column].astype(float).tolist(), nan_ok=True, rel=1e-15
            )
    lora = csv[(csv["method"] == "lora") & (csv["shots"] == "50")].iloc[0]
    assert lora["bbh_mean"] == 62.5 and lora["bbh_n"] == 3
    assert lora["bbh_ci_high"] == pytest.approx(62.5 + half_width([50.0, 62.5, 75.0]), rel=1e-15)
    markdown = (tmp_path / files["Markdown"]).read_text()
    assert "62.50 ± 31.05 (n=3)" in markdown and "37.50 (n=1, CI n/a)" in markdown
    latex = (tmp_path / files["LaTeX"]).read_text()
    assert "\\begin{tabular}" in latex and "inner\\_steps=1" in latex


def test_reference_rows_are_the_papers_numbers_and_separate(board):
    reference = tables.reference_table()
    assert set(reference["method"]) <= {"base", "lora", "hydralora", "metalora"}
    paper = reference[reference["source"].str.startswith("MeTA-LoRA paper")]
    bbh = dict(zip(paper["method"], paper["bbh"]))
    assert bbh["metalora"] == 39.53 and bbh["hydralora"] == 37.30 and bbh["lora"] == 31.06
    assert reference[reference["method"] == "base"]["mmlu"].tolist() == [38.88]
    assert "source" not in board.columns and 39.53 not in board["bbh_mean"].tolist()


def test_ablation_of_inner_steps_is_found(settings):
    ablations = find_ablations(settings)
    assert [(a.spec.key, [value for value, _ in a.points]) for a in ablations] == [("k", [1, 3])]
    frame = tables.ablation_table(ablations[0])
    assert frame["bbh_mean"].tolist() == [62.5, 75.0]
    assert frame["bbh_n"].tolist() == [1, 3]


def test_multilingual_seen_versus_held_out(settings):
    frame = tables.seen_heldout_table(settings)
    assert len(frame) == 1
    r = frame.iloc[0]
    # seen et and id: seed 0 (75 + 50) / 2, seed 1 (100 + 50) / 2; held-out sw: 25, 50
    assert r["seen_mean"] == pytest.approx(68.75) and r["seen_n"] == 2
    assert r["held_out_mean"] == pytest.approx(37.5)
    assert r["held_out_ci_high"] - r["held_out_mean"] == pytest.approx(half_width([25.0, 50.0]), rel=1e-12)
    languages = tables.language_table(settings)
    status = dict(zip(languages["language"], languages["status"]))
    assert status == {"et": "seen", "id": "seen", "sw": "held-out"}
