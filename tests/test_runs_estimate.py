"""The estimate of a sweep's run time (``metalora.runs.estimate``): seconds per example pass per
method key, profile and model, the rest of a run (load, evaluation, saving) per method key, profile,
model and evaluation, every method's median where a method has none, and a run to do as rest + passes x seconds per pass; the dry run's line and
``bench/sweep_projection.py`` print it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml
from typer.testing import CliRunner

from metalora.cli import app
from metalora.runs.display import estimate_line
from metalora.runs.estimate import (
    Planned,
    estimate,
    estimate_store,
    finished_runs,
    measured_rates,
    method_key,
)
from metalora.runs.store import write_config, write_cost, write_done

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ["heldout", "bbh"]
STACKED = {"variant": "first_order", "inner_loop": "stacked"}
CONTROL = {"variant": "phase2_only", "inner_loop": "stacked"}


def config(method: str, options: dict | None = None, profile: str = "full", model: str = "m",
           eval_limit: int | None = None, shots=50) -> dict:
    """The parts of config.json's "config" the estimate reads, as RunConfig.to_dict() writes them."""
    return {"method": method, "method_options": dict(options or {}), "model": model, "profile": profile,
            "benchmarks": list(BENCHMARKS), "eval_limit": eval_limit, "shots": None if method == "base" else shots,
            "train": {"seed": 0}}


def finish(store: Path, run_id: str, run_config: dict, training_s: float, total_s: float, passes: int | None,
           examples_per_s: float | None = None) -> Path:
    """A finished run as the runner leaves it: config.json, the trainer's "training" section of
    cost.json, the meter's sections beside it, DONE last."""
    folder = store / run_id
    write_config(folder, run_id, run_config, {}, None)
    if passes is not None:
        write_cost(folder, {"training": {"budget_rule": "matched_compute", "outer_updates": passes // 8,
                                         "example_passes": passes, "tokens": passes * 80}})
    if examples_per_s is None and passes and training_s:
        examples_per_s = passes / training_s
    write_cost(folder, {
        "time": {"model_load_s": 2.0, "training_s": training_s, "eval_s": {"heldout": 1.0},
                 "total_s": total_s, "cpu_s": total_s, "device_s": total_s},
        "throughput": {"train_tokens_per_s": None, "train_examples_per_s": examples_per_s, "eval_items_per_s": {}},
        "memory": {"peak_bytes": 1, "device": "cuda:0 (torch.cuda.max_memory_allocated)"},
    })
    write_done(folder, {})
    return folder


def measured_store(store: Path) -> Path:
    """Two lora runs (0.0625 and 0.1875 s per pass), MeTA-LoRA stacked and its phase2_only control,
    the base model; rests 300, 250 (lora), 280, 270 and 200 s."""
    finish(store, "a" * 16, config("lora", shots=25), 62.5, 362.5, 1000)
    finish(store, "b" * 16, config("lora", shots=50), 375.0, 625.0, 2000)
    finish(store, "c" * 16, config("metalora", STACKED), 62.5, 342.5, 1000)
    finish(store, "d" * 16, config("metalora", CONTROL), 31.25, 301.25, 1000)
    finish(store, "e" * 16, config("base"), 0.0, 200.0, None)
    return store


def planned(method: str, passes: int | None, options: dict | None = None, **given) -> Planned:
    run = config(method, options, **given)
    return Planned.of(SimpleNamespace(**{**run, "benchmarks": tuple(run["benchmarks"]), "trains": method != "base"}),
                      passes)


def test_seconds_per_pass_and_the_rest_are_medians_of_the_finished_runs(tmp_path):
    rates = measured_rates(finished_runs(measured_store(tmp_path)))
    lora = rates.per_pass[("lora", "full", "m")]
    assert (lora.seconds, lora.runs) == (0.125, 2)  # median of 62.5/1000 and 375/2000
    # MeTA-LoRA's variants are separate keys; the first_order default is not named.
    assert rates.per_pass[("metalora(inner_loop=stacked)", "full", "m")].seconds == 0.0625
    assert rates.per_pass[("metalora(variant=phase2_only, inner_loop=stacked)", "full", "m")].seconds == 0.03125
    assert ("base", "full", "m") not in rates.per_pass  # it trains nothing
    evaluation = (tuple(BENCHMARKS), None)
    rests = {key[0]: (rate.seconds, rate.runs) for key, rate in rates.rest.items()}
    assert rests == {"lora": (275.0, 2), "metalora(inner_loop=stacked)": (280.0, 1),
                     "metalora(variant=phase2_only, inner_loop=stacked)": (270.0, 1), "base": (200.0, 1),
                     None: (270.0, 5)}  # None: median of 300, 250, 280, 270 and 200, every method, base too
    assert rates.rest_of("hydralora", "full", "m", evaluation) == ((None, "full", "m", evaluation), rates.rest[
        (None, "full", "m", evaluation)])  # a method without finished runs of its own: every method's median


def test_a_run_to_do_is_the_rest_plus_its_passes_at_its_methods_rate(tmp_path):
    store = measured_store(tmp_path)
    found = estimate_store([planned("lora", 20_000, shots="full"), planned("metalora", 8000, CONTROL),
                            planned("metalora", 8000, STACKED), planned("base", None)], store)
    assert [run.seconds for run in found.runs] == [275.0 + 20_000 * 0.125, 270.0 + 8000 * 0.03125,
                                                   280.0 + 8000 * 0.0625, 200.0]
    assert found.total_s == 2775.0 + 520.0 + 780.0 + 200.0 and found.estimated == 4 and found.missing == {}
    assert set(found.per_pass) == {("lora", "full", "m"), ("metalora(inner_loop=stacked)", "full", "m"),
                                   ("metalora(variant=phase2_only, inner_loop=stacked)", "full", "m")}
    assert found.wall_s(4) == found.total_s / 4
    # Without a measured base run, the base model is estimated with every method's rest.
    (tmp_path / ("e" * 16) / "DONE").unlink()
    assert estimate_store([planned("base", None)], store).total_s == 275.0  # median of 300, 250, 280, 270


def test_runs_without_a_record_are_named_and_left_out_of_the_total(tmp_path):
    store = measured_store(tmp_path)
    found = estimate_store([planned("lora", 1000), planned("hydralora", 1000), planned("hydralora", 2000),
                            planned("metalora", 1000),  # sequential inner loop: never measured
                            planned("base", None, model="other"), planned("lora", 1000, eval_limit=40)], store)
    assert found.estimated == 1 and found.total_s == 275.0 + 125.0
    assert found.missing == {"hydralora/full": 2, "metalora/full": 1, "base/full": 1, "lora/full": 1}
    assert [run.lacks for run in found.runs] == [None, "seconds per pass", "seconds per pass", "seconds per pass",
                                                 "rest", "rest"]  # other model; another eval_limit evaluates less
    assert estimate_line(found) == (
        "estimated duration: 6 min 40 s of run time for 1 run of 6 (training scaled by each run's example passes from "
        "the finished runs' seconds per pass; evaluation and load from their median per method); none recorded for 5 runs "
        "(hydralora/full, metalora/full, base/full, lora/full)")


def test_the_line_gives_the_wall_time_of_several_workers(tmp_path):
    found = estimate_store([planned("lora", 20_000), planned("lora", 20_000), planned("base", None)],
                           measured_store(tmp_path))
    assert found.total_s == 2 * 2775.0 + 200.0
    assert estimate_line(found, 1).endswith("evaluation and load from their median per method)")
    assert estimate_line(found, 3) == (
        "estimated duration: 1 h 35 min of run time for 3 runs (training scaled by each run's example passes from the "
        "finished runs' seconds per pass; evaluation and load from their median per method); with 3 workers about 31 min 57 s "
        "of wall time, if the finished runs ran with as many workers per GPU")
    assert estimate_line(estimate([], measured_rates([]))) == "nothing to run"


def test_damaged_and_unfinished_runs_are_skipped(tmp_path):
    store = measured_store(tmp_path)
    broken = finish(store, "f" * 16, config("lora"), 10.0, 20.0, 1000)
    (broken / "cost.json").write_text('{"time": {"total_s": 1')
    finish(store, "g" * 16, config("lora"), 10.0, 20.0, 1000).joinpath("config.json").write_text("[]")
    untimed = finish(store, "h" * 16, config("lora"), 10.0, 20.0, 1000)
    (untimed / "cost.json").write_text(json.dumps({"training": {"example_passes": 1000}}))
    running = finish(store, "i" * 16, config("lora"), 10.0, 20.0, 1000)
    (running / "DONE").unlink()
    (store / ("j" * 16)).mkdir()  # a folder with DONE only
    (store / ("j" * 16) / "DONE").write_text("{}")
    assert sorted(run.folder.name[0] for run in finished_runs(store)) == list("abcde")
    assert measured_rates(finished_runs(store)).per_pass[("lora", "full", "m")].seconds == 0.125


def test_a_resumed_run_counts_the_passes_it_timed_and_a_reused_adapter_only_its_rest(tmp_path):
    # Resumed: 2,000 passes in all, 500 of them (10 per s over 50 s) trained in the process that timed them.
    finish(tmp_path, "a" * 16, config("lora"), 50.0, 250.0, 2000, examples_per_s=10.0)
    reused = finish(tmp_path, "b" * 16, config("lora"), 0.0, 150.0, 2000)
    cost = json.loads((reused / "cost.json").read_text())
    cost["time"]["training_s"] = None  # the saved adapter was reused: no training phase
    (reused / "cost.json").write_text(json.dumps(cost))
    rates = measured_rates(finished_runs(tmp_path))
    assert rates.per_pass[("lora", "full", "m")].seconds == 0.1 and rates.per_pass[("lora", "full", "m")].runs == 1
    rest = rates.rest[("lora", "full", "m", (tuple(BENCHMARKS), None))]
    assert (rest.seconds, rest.runs) == (175.0, 2)  # 200 and 150


def test_run_folders_one_level_deeper_are_read_when_asked(tmp_path):
    finish(tmp_path / "gpus-1-x4-120000", "a" * 16, config("lora"), 62.5, 362.5, 1000)
    finish(tmp_path, "b" * 16, config("lora"), 375.0, 625.0, 2000)
    assert [run.folder.name for run in finished_runs(tmp_path)] == ["b" * 16]
    assert sorted(run.folder.name for run in finished_runs(tmp_path, depth=2)) == ["a" * 16, "b" * 16]


def test_copies_without_done_count_once_cost_json_has_the_total(tmp_path):
    copied = finish(tmp_path, "a" * 16, config("lora"), 62.5, 362.5, 1000)
    (copied / "DONE").unlink()  # bench/results keep a run's JSON files only
    unfinished = finish(tmp_path, "b" * 16, config("lora"), 62.5, 362.5, 1000)
    (unfinished / "DONE").unlink()
    cost = json.loads((unfinished / "cost.json").read_text())
    del cost["time"]["total_s"]  # evaluation not over: the runner writes total_s last, just before DONE
    (unfinished / "cost.json").write_text(json.dumps(cost))
    assert finished_runs(tmp_path) == []
    assert [run.folder.name for run in finished_runs(tmp_path, require_done=False)] == ["a" * 16]


def test_method_keys_name_the_options_that_change_the_cost_of_a_pass():
    assert method_key("lora") == "lora"
    assert method_key("metalora", {"variant": "first_order", "inner_loop": "sequential", "inner_steps": 5}) == \
        "metalora"  # defaults; inner steps change the passes, counted by the budget plan
    assert method_key("metalora", CONTROL) == "metalora(variant=phase2_only, inner_loop=stacked)"
    assert method_key("hydralora", {"num_heads": 2}) == "hydralora(num_heads=2)"


def _sweep(path: Path, model: Path, grid: dict, runs: list | None = None) -> Path:
    defaults = {"model": str(model), "scenario": "multilingual", "tasks": ["xcopa_et"], "benchmarks": ["xcopa"],
                "shots": 10, "profile": "quick"}
    path.write_text(yaml.safe_dump({"defaults": defaults, "grid": grid, "runs": runs or []}))
    return path


def test_the_dry_run_scales_training_by_each_runs_passes(tmp_path, tiny_model_dir, data_root):
    model = str(tiny_model_dir)
    store = tmp_path / "store"
    quick = {"model": model, "profile": "quick", "eval_limit": 1}
    # Measured at 12 passes: 1 s per pass; rests 100 and 50 s (lora: median 75 s), 30 s (base).
    finish(store, "a" * 16, {**config("lora", **quick), "benchmarks": ["xcopa"]}, 12.0, 112.0, 12)
    finish(store, "b" * 16, {**config("lora", **quick), "benchmarks": ["xcopa"]}, 12.0, 62.0, 12)
    finish(store, "c" * 16, {**config("base", **quick), "benchmarks": ["xcopa"]}, 0.0, 30.0, None)
    sweep = _sweep(tmp_path / "s.yaml", tiny_model_dir, {"method": ["lora"], "epochs": [1, 2], "seed": [0, 1]},
                   [{"method": "base"}, {"method": "hydralora"}])
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run", "--store", str(store), "--device", "cpu",
                                      "--data-root", str(data_root.path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    passes = sorted(int(line.split(", ")[-1].split()[0]) for line in lines if line.endswith("example passes"))
    assert passes == [12, 12, 12, 20, 20]  # 10 examples, batch 4: 3 updates at 1 epoch, 5 at 2; hydralora 1
    # lora: 2 x (75 + 12) + 2 x (75 + 20); base: 30.
    assert lines[-1] == (
        "estimated duration: 6 min 34 s of run time for 5 runs of 6 (training scaled by each run's example passes "
        "from the finished runs' seconds per pass; evaluation and load from their median per method); none recorded for 1 run "
        "(hydralora/quick); with 2 workers about 3 min 17 s of wall time, if the finished runs ran with as many "
        "workers per GPU")


def test_the_projection_script_refuses_runs_with_another_eval_limit_unless_allowed(tmp_path, tiny_model_dir,
                                                                                  data_root):
    model = str(tiny_model_dir)
    measured = tmp_path / "measured" / "gpus-1-x4-120000"  # one level deeper, as bench stores copy them
    limited = {"model": model, "profile": "full", "eval_limit": 50}
    finish(measured, "a" * 16, {**config("lora", **limited), "benchmarks": ["xcopa"]}, 12.0, 112.0, 12)
    finish(measured, "b" * 16, {**config("base", **limited), "benchmarks": ["xcopa"]}, 0.0, 40.0, None)
    sweep = _sweep(tmp_path / "s.yaml", tiny_model_dir, {"method": ["lora"], "epochs": [1]}, [{"method": "base"}])
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLBENCH_DATA_DIR": str(data_root.path)}

    def project(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "bench" / "sweep_projection.py"), str(sweep), "--measured",
                               str(tmp_path / "measured"), "--profile", "full", "--device", "cpu", *extra],
                              capture_output=True, text=True, env=env, check=False)

    refused = project()
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"{tmp_path / 'measured'}: 2 measured runs evaluated the first 50 items per task, the config's runs all items: "
        "their evaluation time is not the config's; --allow-eval-limit to project from them anyway")
    out = tmp_path / "projection.json"
    allowed = project("--allow-eval-limit", "--workers", "2", "--out", str(out))
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[0].startswith("evaluation time is underestimated: 2 measured runs evaluated")
    record = json.loads(out.read_text())
    # The full profile's epoch: 10 examples in batches of 8, 2 updates of 8 = 16 passes at 1 s each; rests 100 s
    # (lora) and 40 s (base), each its own method's.
    assert [(g["method"], g["runs"], g["passes"], g["seconds_each"]) for g in record["groups"]] == \
        [("base", 1, 0, 40.0), ("lora", 1, 16, 116.0)]
    assert (record["total_s"], record["wall_s"], record["runs_estimated"]) == (156.0, 78.0, 2)
    assert record["per_pass"] == [{"method": "lora", "profile": "full", "model": model, "seconds_per_pass": 1.0,
                                   "runs": 1}]
    assert "total: 2 min 36 s of run time for 2 runs" in allowed.stdout
