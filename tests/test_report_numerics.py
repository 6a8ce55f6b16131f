"""The report lists leaderboard blocks whose runs were evaluated under different numerics
(reports/numerics.py): in bfloat16 the eval shapes, batch size and decode rows change answers at
near-ties, so rows ranked against each other should share them."""

from __future__ import annotations

import json
from pathlib import Path

from metalora.runs.store import write_cost
from reports.site import build_report
from tests.report_fixtures import MODEL, bbh, rid, write_run

HEADING = "Rows ranked against each other whose runs were evaluated under different numerics"


def _evaluated(folder: Path, dtype: str, **settings) -> None:
    """Make a fixture run read as evaluated in ``dtype`` with these result settings."""
    results = folder / "eval" / "results.json"
    data = json.loads(results.read_text())
    data["settings"] |= settings
    results.write_text(json.dumps(data))
    env = folder / "env.json"
    env.write_text(json.dumps(json.loads(env.read_text()) | {"dtype": dtype}))


def _store(tmp_path: Path, numerics: dict[int, tuple[str, dict]]) -> Path:
    store = tmp_path / "store"
    for number, method, seed in ((1, "lora", 0), (2, "lora", 1), (3, "metalora", 0)):
        folder = write_run(store, rid(number), method=method, seed=seed, correct={"bbh": bbh(2, 2)})
        dtype, settings = numerics[number]
        _evaluated(folder, dtype, **settings)
    return store


STOCK = {"eval_backend": "fast", "eval_shapes": "stock", "batch_size": 64, "decode_rows": 64,
         "generation_rule": "hf-generate chunks"}
FAST = {"eval_backend": "fast", "eval_shapes": "fast", "batch_size": 64, "decode_rows": 256,
        "generation_rule": "each row to its own first stop"}


def test_a_block_with_runs_under_other_shapes_in_bfloat16_is_listed_with_its_runs(tmp_path):
    store = _store(tmp_path, {1: ("bfloat16", STOCK), 2: ("bfloat16", FAST), 3: ("bfloat16", STOCK)})
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert HEADING in html
    section = html.split('id="mixed-numerics"')[1].split("</ul></li></ul>")[0]
    assert f"{MODEL}, full, multitask, 50 per task:" in section
    stock_line = section.split("bfloat16, backend fast, shapes stock, batch 64, generation: hf-generate chunks:")[1]
    stock_line = stock_line.split("</li>")[0]
    fast_line = section.split("bfloat16, backend fast, shapes fast, batch 64, 256 rows generating together, "
                              "generation: each row to its own first stop:")[1]
    assert rid(1) in stock_line and rid(3) in stock_line and rid(2) not in stock_line
    assert rid(2) in fast_line.split("</li>")[0]


def test_runs_recorded_before_eval_shapes_read_as_the_fast_path(tmp_path):
    before = {"eval_backend": "fast", "batch_size": 64, "decode_rows": 64}
    store = _store(tmp_path, {1: ("bfloat16", STOCK), 2: ("bfloat16", before), 3: ("bfloat16", STOCK)})
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert "shapes fast (recorded before --eval-shapes existed), batch 64, generation: not recorded:" in html


def test_same_numerics_or_float32_shapes_are_not_listed_but_a_dtype_is(tmp_path):
    same = _store(tmp_path / "a", {1: ("bfloat16", STOCK), 2: ("bfloat16", STOCK), 3: ("bfloat16", STOCK)})
    assert HEADING not in build_report(same, tmp_path / "a" / "site").read_text(encoding="utf-8")
    # float32: another batch gives the same answers to rounding; not a mixed block.
    batch32 = STOCK | {"batch_size": 32, "decode_rows": 32}
    float32 = _store(tmp_path / "b", {1: ("float32", STOCK), 2: ("float32", batch32), 3: ("float32", STOCK)})
    assert HEADING not in build_report(float32, tmp_path / "b" / "site").read_text(encoding="utf-8")
    # Fast shapes cut each row at its own first stop string: other texts in float32 too, so listed.
    rules = _store(tmp_path / "d", {1: ("float32", STOCK), 2: ("float32", FAST), 3: ("float32", STOCK)})
    html = build_report(rules, tmp_path / "d" / "site").read_text(encoding="utf-8")
    assert HEADING in html and "float32, generation: each row to its own first stop:" in html
    # A dtype that differs always is.
    dtypes = _store(tmp_path / "c", {1: ("float32", STOCK), 2: ("bfloat16", STOCK), 3: ("float32", STOCK)})
    html = build_report(dtypes, tmp_path / "c" / "site").read_text(encoding="utf-8")
    assert HEADING in html and "bfloat16, backend fast, shapes stock, batch 64, generation: hf-generate chunks:" in html


def test_stock_shaped_runs_without_a_recorded_generation_rule_are_listed_in_float32_too(tmp_path):
    """Results recorded before settings.generation_rule (stock shapes before f4bd08b cut each row at
    its own stop string): other texts whatever the dtype, so never ranked silently with recorded ones."""
    unrecorded = {key: value for key, value in STOCK.items() if key != "generation_rule"}
    store = _store(tmp_path, {1: ("float32", STOCK), 2: ("float32", unrecorded), 3: ("float32", STOCK)})
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert HEADING in html
    section = html.split('id="mixed-numerics"')[1].split("</ul></li></ul>")[0]
    assert "float32, generation: not recorded:" in section and "float32, generation: hf-generate chunks:" in section
    assert rid(2) in section.split("float32, generation: not recorded:")[1].split("</li>")[0]


def test_runs_whose_gpu_was_shared_under_mps_are_listed_apart_in_any_dtype(tmp_path):
    store = _store(tmp_path, {1: ("float32", STOCK), 2: ("float32", STOCK), 3: ("float32", STOCK)})
    env = store / rid(2) / "env.json"
    env.write_text(json.dumps(json.loads(env.read_text()) | {"cuda_mps_pipe": "/tmp/mlbench-mps-x/pipe"}))
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    assert HEADING in html
    section = html.split('id="mixed-numerics"')[1].split("</ul></li></ul>")[0]
    shared = section.split("float32, generation: hf-generate chunks, GPU shared under MPS:")[1].split("</li>")[0]
    alone = section.split("float32, generation: hf-generate chunks:")[1].split("</li>")[0]
    assert rid(2) in shared and rid(1) not in shared
    assert rid(1) in alone and rid(3) in alone and rid(2) not in alone


def test_runs_under_mps_with_deterministic_training_are_not_listed_apart(tmp_path):
    """Measured on an H200 (README, Scale-out): with deterministic training, sweeps under MPS scored
    the same as time-sliced ones, run for run; only training without it is told apart."""
    store = _store(tmp_path, {1: ("float32", STOCK), 2: ("float32", STOCK), 3: ("float32", STOCK)})
    for number in (2, 3):
        env = store / rid(number) / "env.json"
        env.write_text(json.dumps(json.loads(env.read_text()) | {"cuda_mps_pipe": "/tmp/mlbench-mps-x/pipe"}))
    write_cost(store / rid(2), {"training": {"example_passes": 8, "deterministic_kernels": True}})
    write_cost(store / rid(3), {"training": {"example_passes": 8, "deterministic_kernels": False}})
    html = build_report(store, tmp_path / "site").read_text(encoding="utf-8")
    section = html.split('id="mixed-numerics"')[1].split("</ul></li></ul>")[0]
    shared = section.split("float32, generation: hf-generate chunks, GPU shared under MPS:")[1].split("</li>")[0]
    alone = section.split("float32, generation: hf-generate chunks:")[1].split("</li>")[0]
    assert rid(3) in shared and rid(2) not in shared
    assert rid(1) in alone and rid(2) in alone


def test_runs_evaluated_with_the_lora_unmerged_are_listed_apart_in_bfloat16_only(tmp_path):
    """--eval-merge-lora off rounds otherwise than a merged LoRA in half precision; in float32 the
    answers are the same to rounding, so a float32 block is not listed for it."""
    for dtype, listed in (("bfloat16", True), ("float32", False)):
        store = _store(tmp_path / dtype, {1: (dtype, STOCK), 2: (dtype, STOCK), 3: (dtype, STOCK)})
        env = store / rid(2) / "env.json"
        env.write_text(json.dumps(json.loads(env.read_text()) | {"eval_merge_lora": "off"}))
        html = build_report(store, tmp_path / dtype / "site").read_text(encoding="utf-8")
        assert ('id="mixed-numerics"' in html) is listed
        if listed:
            section = html.split('id="mixed-numerics"')[1].split("</ul></li></ul>")[0]
            unmerged = section.split("batch 64, --eval-merge-lora off, generation: hf-generate chunks:")[1].split("</li>")[0]
            assert rid(2) in unmerged and rid(1) not in unmerged and rid(3) not in unmerged
