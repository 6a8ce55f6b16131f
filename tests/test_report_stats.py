"""Honest statistics: the paired two-level bootstrap, Holm's correction, the MDD and the best mark.

The bootstrap is checked three ways: its variance parts against their closed forms on fixed data,
its interval's coverage on synthetic data whose true difference is known, and its behaviour on
identical methods. The mark is checked on stores built so that one difference is clearly real and
another is within the noise.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from reports import tables
from reports.bootstrap import BootstrapConfig, Draws, Items, difference, item_draws, macro_weights
from reports.bootstrap import point_estimates as estimand_of
from reports.load import load_store
from reports.paired import ALPHA, BETWEEN, block_mdd, comparison_index, mdd_table, paired_comparisons
from reports.primary import Primary, read_primaries
from reports.settings import group_settings
from reports.stats import holm, minimum_detectable_difference
from reports.tables import BEST, TIED
from tests.report_fixtures import BBH_TASKS, rid, standard_store, write_run


def compare(a: np.ndarray, b: np.ndarray, items: Items, config: BootstrapConfig, seeded=(True, True)):
    ra, rb = item_draws(items, [a, b], config)
    return difference(
        Draws(estimand_of(items, a), ra, seeded[0]),
        Draws(estimand_of(items, b), rb, seeded[1]),
        items,
        config,
    )


def item_variance(x: np.ndarray, items: Items) -> float:
    """Closed form of the within-task item bootstrap's variance of the weighted mean of x."""
    return sum(
        w**2 * np.var(x[items.task_of == t]) / n for t, (w, n) in enumerate(zip(items.weights, items.counts))
    )


# --- the bootstrap against closed forms ------------------------------------------------------------


def test_variance_parts_match_their_closed_forms():
    rng = np.random.default_rng(7)
    task_of = np.repeat([0, 1, 2], [30, 50, 20])
    items = Items(task_of, macro_weights(3))
    a = (rng.random((4, 100)) < 0.6).astype(float)
    b = (rng.random((4, 100)) < 0.5).astype(float)
    result = compare(a, b, items, BootstrapConfig(resamples=20000, seed=3))

    d = a - b
    per_seed = np.array([sum(d[s, task_of == t].mean() / 3 for t in range(3)) for s in range(4)])
    assert result.estimate == pytest.approx(per_seed.mean(), abs=1e-12)  # macro of per-task means
    assert result.se_seeds**2 == pytest.approx(per_seed.var(ddof=1) / 4, rel=0.05)
    v_mean = item_variance(d.mean(axis=0), items)
    v_single = np.mean([item_variance(d[s], items) for s in range(4)])
    assert result.se_items**2 == pytest.approx(max((4 * v_mean - v_single) / 3, 0.0), rel=0.05, abs=1e-6)
    assert result.seeds == 4 and result.n_items == 100 and result.n_tasks == 3


def test_pooled_weights_and_the_base_model_side():
    task_of = np.repeat([0, 1], [2, 6])
    items = Items(task_of, np.array([2 / 8, 6 / 8]))  # pooled: every item weighs 1/8
    a = np.array([[1, 1, 0, 0, 0, 0, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1]], dtype=float)
    base = np.array([[0, 0, 0, 0, 0, 0, 1, 1]], dtype=float)
    result = compare(a, base, items, BootstrapConfig(resamples=4000), seeded=(True, False))
    # seed 0: 4/8 − 2/8, seed 1: 5/8 − 2/8
    assert result.estimate == pytest.approx((2 / 8 + 3 / 8) / 2)
    assert result.seeds == 2 and result.testable
    # the base model is one deterministic evaluation: only the trained side's seeds vary
    assert result.se_seeds**2 == pytest.approx(np.var([2 / 8, 3 / 8], ddof=1) / 2, rel=0.08)


def test_deterministic_given_the_seed():
    rng = np.random.default_rng(1)
    items = Items(np.repeat([0, 1], [40, 40]), macro_weights(2))
    a, b = (rng.random((3, 80)) < 0.5).astype(float), (rng.random((3, 80)) < 0.5).astype(float)
    first = compare(a, b, items, BootstrapConfig(resamples=500, seed=11))
    assert compare(a, b, items, BootstrapConfig(resamples=500, seed=11)) == first
    other = compare(a, b, items, BootstrapConfig(resamples=500, seed=12))
    assert other.se != first.se and other.estimate == first.estimate


# --- coverage on synthetic data with a known difference ---------------------------------------------

SIZES = (40, 80, 120, 60)  # items per task
DELTA = np.array([-0.06, -0.02, 0.03, 0.09])  # B − A in each task's success probability


def synthetic(rng, seeds: int, delta: np.ndarray, seed_sd: float, item_sd: float):
    """Crossed seeds x items with binary scores. Per item a base probability p_i; B adds the task's
    delta plus an item-by-method effect u_i (mean 0); each (method, seed, task) gets its own shift
    (mean 0). The true macro difference A − B over the item and seed populations is −mean(delta)."""
    task_of = np.repeat(np.arange(len(SIZES)), SIZES)
    n = task_of.size
    p = rng.uniform(0.25, 0.75, n)
    u = rng.uniform(-item_sd, item_sd, n)
    shift = lambda: rng.uniform(-seed_sd, seed_sd, (seeds, len(SIZES)))[:, task_of]
    a = (rng.random((seeds, n)) < p + shift()).astype(float)
    b = (rng.random((seeds, n)) < p + delta[task_of] + u + shift()).astype(float)
    return Items(task_of, macro_weights(len(SIZES))), a, b


@pytest.mark.parametrize(
    ("seed_sd", "item_sd"),
    [(0.08, 0.10), (0.0, 0.12)],
    ids=["seed-variance-large", "item-variance-only"],
)
def test_interval_covers_the_known_difference(seed_sd, item_sd):
    rng = np.random.default_rng(2024)
    truth = -DELTA.mean()
    covered = 0
    for simulation in range(200):
        items, a, b = synthetic(rng, 5, DELTA, seed_sd, item_sd)
        result = compare(a, b, items, BootstrapConfig(resamples=300, seed=simulation))
        covered += result.low <= truth <= result.high
    assert covered >= 186  # >= 93% of 200 95%-intervals
    assert covered <= 199  # and not by being uselessly wide, as an interval that always covers


def test_identical_methods_show_no_difference():
    rng = np.random.default_rng(5)
    items, a, _ = synthetic(rng, 5, np.zeros(4), 0.05, 0.1)
    same = compare(a, a.copy(), items, BootstrapConfig(resamples=300))
    assert same.estimate == 0 and same.p_value == 1.0 and (same.low, same.high) == (0.0, 0.0)
    assert not same.significant()
    # Two methods drawn from one process, with seed effects as large as item noise: a false
    # difference at most about 5% of the time. A standard error from items alone (the seed-averaged
    # scores treated as one deterministic run each) claims one about a quarter of the time here.
    false_claims = items_only_claims = 0
    for simulation in range(200):
        items, a, b = synthetic(rng, 5, np.zeros(4), 0.15, 0.0)
        config = BootstrapConfig(resamples=300, seed=simulation)
        false_claims += compare(a, b, items, config).significant()
        a1, b1 = a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True)
        items_only_claims += compare(a1, b1, items, config, seeded=(False, False)).significant()
    assert false_claims <= 14  # 7% of 200 (observed 8)
    assert items_only_claims >= 30  # observed 48: the seed level is what keeps the claims honest


# --- Holm and the MDD by hand ----------------------------------------------------------------------


def test_holm_on_hand_worked_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.3]) == pytest.approx([0.6, 0.6])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_minimum_detectable_difference_by_hand():
    # z(0.975) + z(0.8) = 1.959964 + 0.841621
    assert minimum_detectable_difference(1.0, math.inf) == pytest.approx(2.801585, abs=1e-6)
    assert minimum_detectable_difference(0.5, math.inf) == pytest.approx(1.400793, abs=1e-6)
    # t(0.975, 4) + t(0.8, 4) = 2.776445 + 0.940965 (standard t table)
    assert minimum_detectable_difference(1.0, 4) == pytest.approx(3.717410, abs=1e-6)
    # at that difference a two-sided z test at 0.05 rejects with probability 0.8
    mdd = minimum_detectable_difference(1.3, math.inf)
    power = norm.sf(1.959964 - mdd / 1.3) + norm.cdf(-1.959964 - mdd / 1.3)
    assert power == pytest.approx(0.8, abs=1e-5)


# --- the leaderboard's marks -----------------------------------------------------------------------

N_ITEMS = 60  # per BBH task


def first(right: int) -> list[bool]:
    return [index < right for index in range(N_ITEMS)]


def marks_store(store, gap: int):
    """LoRA, HydraLoRA and MeTA-LoRA at 50/task over 3 seeds; MeTA-LoRA answers ``gap`` more items
    of each task than LoRA give or take 2 from seed to seed, HydraLoRA about one fewer than LoRA.
    Plus a base run and a smoke MeTA-LoRA run that scores everything right."""
    store.mkdir(parents=True)
    write_run(store, rid(1), method="base", correct={"bbh": {t: first(10) for t in BBH_TASKS}})
    for seed in range(3):
        lora = 20 + 2 * seed
        methods = (("lora", lora), ("hydralora", lora - seed), ("metalora", lora + gap + (0, -2, 2)[seed]))
        for number, (method, right) in enumerate(methods):
            write_run(
                store,
                rid(10 * (number + 1) + seed),
                method=method,
                seed=seed,
                correct={"bbh": {t: first(right + i) for i, t in enumerate(BBH_TASKS)}},
            )
    write_run(
        store,
        rid(90),
        method="metalora",
        profile="smoke",
        correct={"bbh": {t: first(N_ITEMS) for t in BBH_TASKS}},
    )
    return store


def board_marks(store, primaries=()):
    settings = group_settings(load_store(store).finished)
    comparisons = paired_comparisons(settings, primaries, BootstrapConfig(resamples=1000))
    board = tables.leaderboard(settings)
    marks = tables.column_marks(board, "bbh", comparison_index(comparisons))
    return (
        board,
        {board.iloc[p]["method"] + "/" + board.iloc[p]["profile"]: m for p, m in marks.items()},
        comparisons,
    )


def test_best_mark_on_a_clear_difference(tmp_path):
    _, marks, comparisons = board_marks(marks_store(tmp_path / "store", gap=15))
    assert marks == {"metalora/full": BEST}  # not the smoke run's 100, not the base model
    test = next(
        c for c in comparisons if {c.a.method, c.b.method} == {"lora", "metalora"} and c.column == "bbh"
    )
    assert abs(test.difference.estimate) == pytest.approx(25.0)  # 15 of 60 items per task on average
    assert test.significant and test.p_adjusted < ALPHA


def test_marks_travel_with_the_exports(tmp_path):
    board, _, comparisons = board_marks(marks_store(tmp_path / "store", gap=15))
    positions = tables.column_marks(board, "bbh", comparison_index(comparisons))
    data, readable = tables.with_marks(board, {"bbh": positions})
    files = tables.export(data, tmp_path / "out", "leaderboard", readable)
    with open(tmp_path / "out" / files["CSV"], newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))  # cells may hold commas ("Differs from defaults")
    assert header[header.index("bbh_n") + 1] == "bbh_mark"
    assert [row[header.index("bbh_mark")] for row in rows].count("best") == 1
    latex = (tmp_path / "out" / files["LaTeX"]).read_text()
    assert latex.count("(best)") == 1 and "62.50" in latex.split("(best)")[0].rsplit("&", 1)[-1]
    assert "bbh_mark" not in readable.columns


def test_no_best_mark_on_a_difference_within_the_noise(tmp_path):
    _, marks, comparisons = board_marks(marks_store(tmp_path / "store", gap=1))
    test = next(
        c for c in comparisons if {c.a.method, c.b.method} == {"lora", "metalora"} and c.column == "bbh"
    )
    assert not test.significant
    assert BEST not in marks.values()
    assert marks["metalora/full"] == TIED and marks["lora/full"] == TIED
    assert "metalora/smoke" not in marks and "base/full" not in marks


def test_primary_is_uncorrected_and_the_rest_holm_corrected(tmp_path):
    store = marks_store(tmp_path / "store", gap=3)
    (store / "sweeps").mkdir()
    primary = {"a": "metalora", "b": "lora", "shots": 50, "benchmarks": ["heldout", "bbh"]}
    (store / "sweeps" / "table2.json").write_text(
        json.dumps({"name": "table2", "description": "", "compare": {"primary": primary}})
    )
    (store / "sweeps" / "broken.json").write_text("{not json")
    assert load_store(store).skipped == ()  # the sweeps folder is not a broken run folder
    declared = read_primaries(store)
    assert [p.a for p in declared.primaries] == ["metalora"] and declared.problems[0].startswith(
        "broken.json"
    )
    _, _, comparisons = board_marks(store, declared.primaries)
    bbh = [c for c in comparisons if c.column == "bbh" and c.kind == BETWEEN and c.a.profile == "full"]
    main = [c for c in bbh if c.primary]
    assert [(c.a.method, c.b.method) for c in main] == [("metalora", "lora")]  # oriented as declared
    assert main[0].p_adjusted == main[0].difference.p_value
    family = [c for c in bbh if not c.primary]
    assert len(family) == 2 and len({c.family for c in family}) == 1
    assert [c.p_adjusted for c in family] == holm([c.difference.p_value for c in family])
    # the pooled column's same pair is not primary: it is corrected in its own family
    pooled = [
        c for c in comparisons if c.column == "bbh_pooled" and c.kind == BETWEEN and c.a.profile == "full"
    ]
    assert not any(c.primary for c in pooled) and len(pooled) == 3


def test_block_mdd_is_the_formula_on_the_pairs(tmp_path):
    _, _, comparisons = board_marks(marks_store(tmp_path / "store", gap=1))
    mdd = block_mdd(comparisons)
    pairs = [c for c in comparisons if c.column == "bbh" and c.kind == BETWEEN and c.a.profile == "full"]
    value, se, seeds = mdd[(("tiny-llama", "full", "multitask", 50), "bbh")]
    assert se == pytest.approx(math.sqrt(sum(c.difference.se**2 for c in pairs) / 3))
    assert value == pytest.approx(minimum_detectable_difference(se, min(c.difference.df for c in pairs)))
    assert seeds == 3


def test_paired_comparison_on_the_standard_store(tmp_path):
    settings = group_settings(load_store(standard_store(tmp_path / "store")).finished)
    comparisons = paired_comparisons(settings, config=BootstrapConfig(resamples=20000))
    pair = next(
        c
        for c in comparisons
        if (c.a.method, c.b.method, c.a.shots, c.b.label, c.column) == ("lora", "metalora", 50, "", "bbh")
    )
    # Every seed's macro difference is exactly −12.5 (BBH 50, 62.5, 75 against 62.5, 75, 87.5), so
    # the seed part is zero; per item, seed-averaged differences are task 1: 0, 0, −1/3, −1/3 and
    # task 2: 0, 0, −1/3, 0 (x100), single seeds one −100 each where LoRA missed.
    assert pair.difference.estimate == pytest.approx(-12.5) and pair.difference.seeds == 3
    assert pair.difference.se_seeds == 0
    items = Items(np.repeat([0, 1], 4), macro_weights(2))
    d_mean = np.array([0, 0, -1 / 3, -1 / 3, 0, 0, -1 / 3, 0]) * 100
    d_seeds = (
        np.array([[0, 0, -1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, -1, 0], [0, 0, 0, -1, 0, 0, 0, 0]]) * 100
    )
    v_single = np.mean([item_variance(row, items) for row in d_seeds])
    expected = max((3 * item_variance(d_mean, items) - v_single) / 2, 0.0)
    assert pair.difference.se_items**2 == pytest.approx(expected, rel=0.05)
    assert expected == 0 and not pair.difference.testable  # 8 items cannot show their own noise
    one_seed = [c for c in comparisons if c.b.label or c.a.label]
    assert one_seed and all(not c.difference.testable and c.p_adjusted is None for c in one_seed)


def test_tested_pairs_grow_linearly_with_ablations(tmp_path):
    # 50/task block of the standard store: LoRA, MeTA-LoRA and MeTA-LoRA with k = 1 (an ablation).
    # Tested: the two methods' defaults, the variant against its own default; LoRA against the
    # variant only if one of them were the column's best (MeTA-LoRA is, in both columns).
    settings = group_settings(load_store(standard_store(tmp_path / "store")).finished)
    comparisons = paired_comparisons(settings, config=BootstrapConfig(resamples=200))
    for column in ("bbh", "mmlu"):
        tested = {
            frozenset((c.a.name, c.b.name))
            for c in comparisons
            if c.column == column and c.kind == BETWEEN and c.a.shots == 50 and c.a.scenario == "multitask"
        }
        assert tested == {
            frozenset(("lora 50/task", "metalora 50/task")),
            frozenset(("metalora 50/task", "metalora 50/task [inner_steps=1]")),
        }
    table = mdd_table(comparisons)
    # bbh: every seed differs by exactly 12.5 (no estimable noise), k = 1 has one seed: no MDD there
    assert set(zip(table["shots"], table["column"])) == {(50, "mmlu"), (50, "mmlu_pooled")}


def test_site_shows_the_mark_the_mdd_and_the_primary(tmp_path):
    from reports.site import build_report

    store = marks_store(tmp_path / "store", gap=15)
    (store / "sweeps").mkdir()
    primary = {"a": "metalora", "b": "lora", "shots": 50, "benchmarks": ["bbh"]}
    (store / "sweeps" / "table2.json").write_text(
        json.dumps({"name": "table2", "compare": {"primary": primary}})
    )
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert html.count('class="num best"') == 2  # BBH avg and BBH pooled: MeTA-LoRA's row
    assert 'class="num tied"' not in html
    assert "MDD · tiny-llama, multitask, 50/task, full" in html
    assert "<strong>metalora − lora</strong> at 50/task on bbh (sweep table2)" in html
    assert "primary, declared by sweep table2" in html  # the paired table's family column
    assert "Bootstrap: 2000 resamples, seed 0." in html


def test_tasks_the_macro_leaves_out_are_left_out_of_its_test(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from reports import paired

    settings = group_settings(load_store(standard_store(tmp_path / "store")).finished)
    runs = [run for s in settings if s.scenario == "multilingual" for run in s.runs]
    assert paired.outside_macro(runs, ("xcopa",)) == set()  # the registry sets no minimum for XCOPA
    # Each xcopa language of the fixture has 4 items available: a minimum of 5 leaves all out, of 4 none.
    for minimum, expected in ((5, {("xcopa", "et"), ("xcopa", "id"), ("xcopa", "sw")}), (4, set())):
        registry = dict(paired.BENCHMARKS) | {"xcopa": SimpleNamespace(min_items_for_macro=minimum)}
        monkeypatch.setattr(paired, "BENCHMARKS", registry)
        assert paired.outside_macro(runs, ("xcopa",)) == expected


def test_primary_on_the_heldout_column(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for seed in range(3):
        for number, (method, right) in enumerate((("lora", 20 + seed), ("metalora", 30 + 2 * seed))):
            heldout = {task: first(right) for task in ("strategyqa", "gsm8k")}
            write_run(
                store, rid(10 * (number + 1) + seed), method=method, seed=seed, correct={"heldout": heldout}
            )
    primary = Primary("table2", "metalora", "lora", 50, ("heldout", "bbh"))
    settings = group_settings(load_store(store).finished)
    comparisons = paired_comparisons(settings, (primary,), BootstrapConfig(resamples=500))
    [main] = [c for c in comparisons if c.column == "heldout"]
    assert main.primary and (main.a.method, main.b.method) == ("metalora", "lora")
    # per seed MeTA-LoRA answers 10, 11, 12 more of each task's 60 items: 11/60 on average
    assert main.difference.estimate == pytest.approx(100 * 11 / 60)
    assert main.significant and main.p_adjusted == main.difference.p_value


def control_store(store):
    """The published Qwen store's shape: MeTA-LoRA's control (variant phase2_only) at both budgets
    outnumbers MeTA-LoRA itself, whose options are left out at 50/task and written out at 10/task,
    where both draw 5 + 5 support and query examples.
    MeTA-LoRA answers 3 more items of each task than LoRA, the control 5 fewer."""
    store.mkdir(parents=True)
    cells = [
        ("lora", 50, {}, 0),
        ("metalora", 50, None, 3),  # options left out, as a sweep grid that names no variant
        ("metalora", 50, {"variant": "phase2_only"}, -5),
        ("lora", 10, {}, 0),
        ("metalora", 10, {"variant": "first_order", "support_size": 5, "query_size": 5}, 3),
        ("metalora", 10, {"variant": "phase2_only", "support_size": 5, "query_size": 5}, -5),
    ]
    for number, (method, shots, options, gap) in enumerate(cells):
        for seed in range(3):
            folder = write_run(
                store,
                rid(10 * (number + 1) + seed),
                method=method,
                seed=seed,
                shots=shots,
                method_options=options,
                correct={"bbh": {t: first(20 + 2 * seed + gap + i) for i, t in enumerate(BBH_TASKS)}},
            )
            if options is None:
                config = json.loads((folder / "config.json").read_text())
                config["config"]["method_options"] = {}
                (folder / "config.json").write_text(json.dumps(config))
    (store / "sweeps").mkdir()
    primary = {"a": "metalora", "b": "lora", "shots": 50, "benchmarks": ["bbh"]}
    (store / "sweeps" / "t.json").write_text(json.dumps({"name": "t", "compare": {"primary": primary}}))
    return store


def test_the_control_is_labelled_and_never_stands_for_its_method(tmp_path):
    store = control_store(tmp_path / "store")
    settings = group_settings(load_store(store).finished)
    labels = sorted((s.method, s.shots, s.label, s.ablation, len(s.runs)) for s in settings)
    sizes = "query_size=5, support_size=5"
    assert labels == [
        ("lora", 10, "", "", 3),
        ("lora", 50, "", "", 3),
        ("metalora", 10, sizes, "", 3),  # fitted to the budget, as every setting there: the method
        ("metalora", 10, f"{sizes}, variant=phase2_only", "variant=phase2_only", 3),
        ("metalora", 50, "", "", 3),  # options left out: the defaults
        ("metalora", 50, "variant=phase2_only", "variant=phase2_only", 3),
    ]
    comparisons = paired_comparisons(settings, read_primaries(store).primaries, BootstrapConfig(resamples=200))
    main = [c for c in comparisons if c.primary and c.column == "bbh"]
    assert len(main) == 1 and (main[0].a.label, main[0].b.method) == ("", "lora")
    assert {run.config["method_options"].get("variant") for run in main[0].a.runs} == {None}
    assert main[0].difference.estimate == pytest.approx(3 / N_ITEMS * 100)  # MeTA-LoRA's gap, not -5
    at_10 = {(c.a.method, c.a.ablation, c.b.method, c.b.ablation) for c in comparisons if c.a.shots == 10}
    assert at_10 == {("lora", "", "metalora", ""), ("metalora", "variant=phase2_only", "metalora", "")}
