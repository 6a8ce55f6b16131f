"""Honest labels: seeds, marks among comparable rows only, identical comparisons, answer collapse,
plots that say what they cannot show, the run page's order, costs and answer-blind reference rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_tasks.records import write_records
from metalora.runs.store import RunStore
from reports import tables
from reports.answers import collapse
from reports.bootstrap import BootstrapConfig
from reports.load import load_store
from reports.paired import comparison_index, paired_comparisons
from reports.plots import series_style
from reports.settings import group_settings
from reports.site import NO_ITEM_DIFFERS, build_report
from tests.report_fixtures import BBH_TASKS, bbh, mmlu, rid, standard_store, write_run

N_ITEMS = 40


def first(right: int) -> list[bool]:
    return [index < right for index in range(N_ITEMS)]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labels")
    store = standard_store(root / "store")
    cost = {
        "training": {"budget_rule": "matched_compute", "outer_updates": 100, "example_passes": 16000,
                     "tokens": 1_234_567, "trainable_parameters": 4_718_592, "min_epochs": 1.0},
        "time": {"total_s": 95.5, "cpu_s": 120.25, "device_s": 80.0, "eval_s": {"bbh": 12.5}},
        "memory": {"peak_bytes": 3 * 2**20, "device": "cuda:0 (torch.cuda.max_memory_allocated)"},
    }
    for number in (20, 21, 22):  # metalora 50/task, seeds 0-2
        (store / rid(number) / "cost.json").write_text(json.dumps(cost))
    references = {"bbh": {"random": {"macro": 0.25, "per_task": {}}, "always_position": {"macro": 0.375},
                          "majority": {"macro": 0.5}}}
    edit_json(store / rid(10) / "eval" / "results.json", lambda r: r.__setitem__("references", references))
    return build_report(store, root / "site")


def leaderboard_row(html: str, text: str) -> str:
    table = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    return next(row for row in table.split("<tr") if text in row)


def test_seeds_column_counts_seeds_and_lists_them_on_hover(built):
    html = built.read_text(encoding="utf-8")
    frame = tables.leaderboard(group_settings(load_store(built.parent.parent / "store").finished))
    lora = frame[(frame["method"] == "lora") & (frame["shots"] == 50)].iloc[0]
    assert lora["seeds"] == 3 and lora["seed_list"] == "0 1 2"
    base = frame[frame["method"] == "base"].iloc[0]
    assert base["seeds"] == 1
    assert 'title="seeds: 0, 1, 2">3</td>' in html


def test_cost_columns_beside_the_scores(built):
    html = built.read_text(encoding="utf-8")
    for label in ("Outer updates", "Example passes", "Training tokens", "Trainable parameters", "GPU seconds",
                  "CPU seconds"):
        assert f">{label}</button>" in html
    header = html.split('id="leaderboard-table"')[1].split("</thead>")[0]
    assert header.index('data-key="bbh"') < header.index('data-key="outer_updates"')
    table = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    metalora = [row for row in table.split("<tr")[1:] if ">metalora<" in row and ">1,234,567<" in row]
    assert len(metalora) == 1
    for text in (">100<", ">16,000<", ">4,718,592<", ">80.0<", ">120.2<", ">95.5<"):
        assert text in metalora[0]
    lora = [row for row in table.split("<tr")[1:] if ">lora<" in row and "not recorded" in row]
    assert lora and lora[0].count(">not recorded<") == 7
    run_page = (built.parent / "runs" / f"{rid(20)}.html").read_text(encoding="utf-8")
    assert "matched_compute" in run_page and "95.5" in run_page
    assert "<th>Training seconds</th><td class=\"num\">not recorded</td>" in run_page  # not in this cost.json
    assert "<th>Evaluation seconds: bbh</th><td class=\"num\">12.5</td>" in run_page
    assert "<th>Peak memory</th><td class=\"num\">3.0 MiB (cuda:0 (torch.cuda.max_memory_allocated))</td>" in run_page
    csv = (built.parent / "tables" / "leaderboard.csv").read_text()
    assert "outer_updates" in csv.splitlines()[0]


def test_answer_blind_reference_rows_from_the_evaluated_items(built):
    html = built.read_text(encoding="utf-8")
    rows = [r for r in html.split("<tr") if 'class="item-reference-row"' in r]
    assert len(rows) == 3
    assert ">random guessing<" in rows[0] and ">25.00<" in rows[0]
    assert ">always the most frequent answer position<" in rows[1] and ">37.50<" in rows[1]
    assert ">each task&#39;s majority answer<" in rows[2] and ">50.00<" in rows[2]
    assert (built.parent / "tables" / "item_references.csv").is_file()


def test_run_page_shows_aggregates_first_and_folds_details(built):
    page = (built.parent / "runs" / f"{rid(20)}.html").read_text(encoding="utf-8")
    assert page.index('id="aggregates"') < page.index('<details id="per-task">')
    assert page.index('<details id="per-task">') < page.index("boolean_expressions")
    assert '<details id="data-hashes">' in page


def test_budget_plot_with_one_budget_says_so(built):
    html = built.read_text(encoding="utf-8")
    assert "MMLU avg vs examples per task (tiny-llama)</strong>: Only one data budget (50 per task)" in html


def test_series_styles_differ():
    styles = [series_style(i) for i in range(8)]
    assert len({s["marker"] for s in styles}) == 8
    assert len({(s["marker"], s["linestyle"]) for s in [series_style(i) for i in range(32)]}) == 8


def test_loss_plot_steps_are_whole_numbers(tmp_path, monkeypatch):
    from reports import plots

    drawn = []

    def keep(figure, folder, name):  # the figure itself, to read its axes
        drawn.append(figure)
        return f"{folder.name}/{name}.svg"

    monkeypatch.setattr(plots, "_save", keep)
    settings = group_settings(load_store(standard_store(tmp_path / "store")).finished)
    assert plots.loss_overview(settings, tmp_path / "plots") is not None
    axes = drawn[0].axes
    assert [a.get_title() for a in axes] == ["lora", "metalora"]  # 3-step logs: 1.0, 1.25, ... unless told
    for a in axes:
        low, high = a.get_xlim()
        ticks = [t for t in a.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def marks_of(store: Path) -> dict[str, str]:
    settings = group_settings(load_store(store).finished)
    comparisons = paired_comparisons(settings, (), BootstrapConfig(resamples=1000))
    board = tables.leaderboard(settings)
    marks = tables.column_marks(board, "bbh", comparison_index(comparisons))
    return {f"{board.iloc[p]['method']}/{board.iloc[p]['evaluation']}": m for p, m in marks.items()}


def gap_store(store: Path, profile: str = "full") -> Path:
    """MeTA-LoRA answers 12 more items of each task than LoRA, over 3 seeds: a clear winner."""
    store.mkdir(parents=True)
    for seed in range(3):
        for number, (method, right) in enumerate((("lora", 10 + seed), ("metalora", 22 + seed))):
            write_run(store, rid(10 * (number + 1) + seed), method=method, seed=seed, profile=profile,
                      correct={"bbh": {t: first(right + i) for i, t in enumerate(BBH_TASKS)}})
    return store


def test_no_mark_among_runs_of_a_profile_that_is_not_comparable(tmp_path):
    assert marks_of(gap_store(tmp_path / "full")) == {"metalora/": "best"}  # the same data, full profile
    assert marks_of(gap_store(tmp_path / "smoke", profile="smoke")) == {}


def test_runs_evaluated_on_other_items_are_not_ranked_together(tmp_path):
    store = gap_store(tmp_path / "store")
    for seed in range(3):  # MeTA-LoRA evaluated with at most 40 items per task: another block
        edit_json(store / rid(20 + seed) / "config.json", lambda d: d["config"].__setitem__("eval_limit", 40))
    assert marks_of(store) == {}


def test_paired_comparison_without_any_differing_item_says_so(tmp_path):
    store = tmp_path / "store"
    for seed in range(2):
        for number, method in enumerate(("lora", "metalora")):
            write_run(store, rid(10 * (number + 1) + seed), method=method, seed=seed,
                      correct={"bbh": bbh(2, 3), "mmlu": mmlu(1, 2)})
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    paired = html.split('id="paired-table"')[1].split("</table>")[0]
    assert NO_ITEM_DIFFERS in paired and "0.00 ± 0.00" not in paired


def collapsed_records(n: int, same: int) -> list[dict]:
    return [
        {"task": "abstract_algebra", "doc_id": i, "prompt": "q", "target": 1, "choices": ["A", "B", "C", "D"],
         "prediction": 0 if i < same else 1, "correct": i % 4 == 0, "metrics": {"acc": 0.0}}
        for i in range(n)
    ]


def test_answer_collapse_threshold():
    assert collapse(collapsed_records(57, 56)).describe() == "the same answer 'A' on 56 of 57 items (98%)"
    assert collapse(collapsed_records(20, 18)) is not None  # exactly 90%
    assert collapse(collapsed_records(20, 17)) is None
    assert collapse(collapsed_records(9, 9)) is None  # too few items to say


def test_answer_collapse_is_flagged_in_the_report(tmp_path):
    store = tmp_path / "store"
    write_run(store, rid(1), method="lora", correct={"mmlu": mmlu(1, 2)})
    write_records(store / rid(1) / "eval" / "samples" / "mmlu.jsonl.gz", collapsed_records(57, 56))
    index = build_report(store, tmp_path / "site")
    html = index.read_text(encoding="utf-8")
    assert "Runs that gave the same answer to nearly every item" in html
    assert "mmlu: the same answer &#39;A&#39; on 56 of 57 items (98%)" in html
    assert "same answer on 98% of items (seed 0)" in leaderboard_row(html, ">lora<")
    run_page = (index.parent / "runs" / f"{rid(1)}.html").read_text(encoding="utf-8")
    assert "the same answer &#39;A&#39; on 56 of 57 items (98%)" in run_page


def test_statuses_read_as_in_ls_and_a_failed_run_says_why(tmp_path):
    store = tmp_path / "store"
    write_run(store, rid(1), method="lora", correct={"bbh": bbh(2, 2)})
    for number in (2, 3, 4):
        write_run(store, rid(number), method="lora", seed=number, correct={"bbh": bbh(2, 2)}, done=False)
    index = RunStore(store)
    config = json.loads((store / rid(2) / "config.json").read_text())["config"]
    for number in (2, 3):
        assert index.claim(rid(number), config)  # this live process holds them
    index.fail(rid(2), "training loss became NaN at step 3; lower --lr")
    words = {row.run_id: row.status for row in index.rows()}  # what mlbench ls prints
    assert words == {rid(1): "done", rid(2): "failed", rid(3): "running", rid(4): "interrupted"}
    site = build_report(store, tmp_path / "site")
    html = site.read_text(encoding="utf-8")
    runs = html.split('id="runs-table"')[1]
    for number, text in ((1, ">done<"), (2, ">failed: <span class=\"reason\">training loss became NaN at step 3; lower --lr<"),
                         (3, ">running<"), (4, ">interrupted<")):
        row = next(r for r in runs.split("<tr") if rid(number) in r)
        assert text in row, (number, row)
    page = (site.parent / "runs" / f"{rid(2)}.html").read_text(encoding="utf-8")
    assert "Failed: training loss became NaN at step 3; lower --lr" in page


def test_row_lists_every_setting_that_differs_from_the_protocol_defaults(built):
    # Every fixture run trains 10 steps (default 100) with the same options: no sibling differs,
    # yet each trained row says what it changed.
    frame = tables.leaderboard(group_settings(load_store(built.parent.parent / "store").finished))
    changed = "target_modules=[gate_proj], steps=10, epochs=1, lr_schedule=cosine, batch_size=4, max_seq_len=256"
    trained = frame[frame["method"] != "base"]
    assert set(trained[trained["profile"] == "full"]["changed"]) == {changed}
    assert frame[frame["method"] == "base"]["changed"].tolist() == [""]
    smoke = trained[trained["profile"] == "smoke"].iloc[0]  # against the smoke profile's own defaults
    # the smoke profile trains one epoch: a run from before budget rules with epochs=1 matches that
    assert smoke["changed"] == "target_modules=[gate_proj], steps=10, lr_schedule=cosine, max_seq_len=256, full_cap=1000, eval_limit=None, max_gen_tokens=None"
    html = built.read_text(encoding="utf-8")
    assert ">Differs from defaults</button>" in html and f">{changed}<" in html


def test_row_shows_what_the_run_recorded_it_changed_method_options_included(tmp_path):
    """A run's own record (config.json's differs_from_defaults) names its method's options too; a run
    recorded before it existed is read as before (shared options only)."""
    store = tmp_path / "store"
    shared = {"target_modules": ["gate_proj"], "steps": 10, "lr_schedule": "cosine", "batch_size": 4,
              "max_seq_len": 256}  # what the fixture's config changes (its epochs 1 is a pre-budget-rule field)
    write_run(store, rid(1), method="metalora", method_options={"inner_steps": 5}, correct={"bbh": bbh(2, 3)},
              differs_from_defaults={**shared, "inner_steps": 5})
    write_run(store, rid(2), method="lora", correct={"bbh": bbh(2, 3)})  # no record: an older run
    frame = tables.leaderboard(group_settings(load_store(store).finished))
    assert dict(zip(frame["method"], frame["changed"])) == {
        "metalora": "target_modules=[gate_proj], steps=10, lr_schedule=cosine, batch_size=4, max_seq_len=256, "
                    "inner_steps=5",
        "lora": "target_modules=[gate_proj], steps=10, epochs=1, lr_schedule=cosine, batch_size=4, max_seq_len=256",
    }
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert (">target_modules=[gate_proj], steps=10, lr_schedule=cosine, batch_size=4, max_seq_len=256, inner_steps=5<"
            in leaderboard_row(html, ">metalora<"))


def test_budget_knobs_of_other_rules_are_not_listed_as_changes():
    from metalora.runs.runconfig import build_run_config
    from reports.defaults import non_defaults
    from reports.settings import flatten

    def changed(options, profile="full"):
        return non_defaults(flatten(build_run_config({**options, "profile": profile}).to_dict()), profile)

    assert changed({}) == ""  # matched_compute with compute_epochs 32, steps and epochs unset
    assert changed({"steps": 100}) == "budget_rule=matched_updates, steps=100"
    assert changed({"budget_rule": "epochs", "epochs": 16, "loss_weighting": "token"}) == (
        "budget_rule=epochs, epochs=16.0, loss_weighting=token"
    )
    assert changed({"compute_epochs": 4}) == "compute_epochs=4.0"
    assert changed({}, "smoke") == ""  # its own default: one epoch over every budget
    assert changed({"budget_rule": "matched_compute"}, "smoke") == "budget_rule=matched_compute, compute_epochs=1.0"
