"""cost.json's time, throughput and memory sections: written by every run, merged with the trainer's
"training" section, shown by ``mlbench show``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metalora.cli import app
from metalora.runs.meter import RunMeter
from metalora.runs.store import RunStore, write_cost

TIME_KEYS = {"model_load_s", "training_s", "eval_s", "total_s", "cpu_s", "device_s"}
THROUGHPUT_KEYS = {"train_tokens_per_s", "train_examples_per_s", "eval_items_per_s"}


def test_write_cost_keeps_the_other_sections(tmp_path):
    training = {"budget_rule": "matched_compute", "outer_updates": 3}
    write_cost(tmp_path, {"training": training})
    write_cost(tmp_path, {"time": {"total_s": 2.0}, "memory": {"peak_bytes": 5, "device": "cpu"}})
    write_cost(tmp_path, {"time": {"total_s": 3.0}})
    assert json.loads((tmp_path / "cost.json").read_text()) == {
        "training": training, "time": {"total_s": 3.0}, "memory": {"peak_bytes": 5, "device": "cpu"}}


def test_meter_counts_the_steps_trained_in_this_process():
    meter = RunMeter("cpu")
    log = [{"step": step, "loss": 1.0, "tokens": 10 * step, "examples": 2} for step in (1, 2, 3, 4)]
    meter.count_training(log, after_step=2)  # resumed after step 2: steps 3 and 4 trained now
    assert (meter.train_tokens, meter.train_examples) == (70, 4)
    meter.phases["training"] = 2.0
    throughput = meter.sections()["throughput"]
    assert throughput["train_tokens_per_s"] == 35.0 and throughput["train_examples_per_s"] == 2.0

    unknown = RunMeter("cpu")
    unknown.count_training([{"step": 1, "loss": 1.0}])  # a trainer that does not count tokens
    unknown.phases["training"] = 1.0
    assert unknown.sections()["throughput"]["train_tokens_per_s"] is None


def cli(*args):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("method", ["lora", "base"])
def test_a_run_records_phases_throughput_and_memory(tmp_path, tiny_model_dir, data_root, method):
    store = tmp_path / "store"
    result = cli("run", "--method", method, "--model", str(tiny_model_dir), "--scenario", "multilingual",
                 "--tasks", "xcopa_et,xcopa_it", "--shots", "10", "--steps", "10", "--batch-size", "2",
                 "--max-seq-len", "64", "--rank", "2", "--benchmarks", "xcopa", "--eval-limit", "1",
                 "--store", str(store), "--data-root", str(data_root.path), "--profile", "full", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (row,) = RunStore(store).rows()
    folder = store / row.run_id
    cost = json.loads((folder / "cost.json").read_text())
    assert {"time", "throughput", "memory"} <= set(cost)
    time, throughput, memory = cost["time"], cost["throughput"], cost["memory"]
    assert set(time) == TIME_KEYS and set(throughput) == THROUGHPUT_KEYS
    assert set(memory) == {"peak_bytes", "device"}
    timing = json.loads((folder / "eval" / "results.json").read_text())["settings"]["timing"]
    assert set(time["eval_s"]) == {"xcopa"} and time["eval_s"]["xcopa"] == timing["xcopa"]["seconds"]
    assert throughput["eval_items_per_s"] == {"xcopa": timing["xcopa"]["items_per_second"]}
    assert timing["xcopa"]["items"] == 11  # one item for each of XCOPA's 11 languages
    phases = time["model_load_s"] + time["training_s"] + sum(time["eval_s"].values())
    assert 0 < phases <= time["total_s"]
    assert time["cpu_s"] > 0 and time["device_s"] is None  # CPU: no accelerator held
    assert memory["device"].startswith("cpu (peak RSS") and memory["peak_bytes"] > 10 * 2**20

    log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()] \
        if method != "base" else []
    if method == "base":
        assert time["training_s"] == 0.0 and throughput["train_tokens_per_s"] is None
    else:
        assert [r["step"] for r in log] == list(range(1, 11)) and time["training_s"] > 0
        if all("tokens" in r for r in log):  # trainers that count their tokens and examples
            tokens = sum(r["tokens"] for r in log)
            assert throughput["train_tokens_per_s"] == pytest.approx(tokens / time["training_s"])
            assert throughput["train_examples_per_s"] == pytest.approx(
                sum(r["examples"] for r in log) / time["training_s"])

    shown = cli("show", row.run_id, "--store", str(store))
    assert shown.exit_code == 0, shown.output
    assert f"  Training seconds: {time['training_s']:,.1f}\n" in shown.output
    assert f"  Evaluation seconds: xcopa: {time['eval_s']['xcopa']:,.1f}\n" in shown.output
    assert f"  Evaluation items/s: xcopa: {throughput['eval_items_per_s']['xcopa']:,.2f}\n" in shown.output
    assert f"  Peak memory: {memory['peak_bytes'] / 2**20:,.1f} MiB (cpu (peak RSS" in shown.output
    assert f"  Wall seconds: {time['total_s']:,.1f}\n" in shown.output

    (folder / "cost.json").unlink()  # a run from before cost.json existed
    older = cli("show", row.run_id, "--store", str(store))
    assert older.exit_code == 0 and "cost:\n  cost.json: not recorded\n" in older.output


def test_a_graphed_fit_says_so_beside_its_training_seconds():
    from reports.cost import cost_rows

    graphed = {"training": {"budget_rule": "matched_compute", "cuda_graphs": {"shapes_graphed": 52,
                                                                              "graphed_passes": 942}},
               "time": {"training_s": 62.45}}  # fmt: skip
    rows = dict(cost_rows(graphed))
    assert rows["Training seconds"] == "62.5"
    assert rows["Training CUDA graphs"] == "942 decoder passes replayed, 52 batch shapes captured"
    assert "Training CUDA graphs" not in dict(cost_rows({"training": {}, "time": {"training_s": 1.0}}))


def test_the_run_page_says_whether_training_kernels_were_deterministic():
    from reports.cost import cost_rows

    def kernels(training):
        return dict(cost_rows({"training": training, "time": {}})).get("Training kernels")

    assert kernels({"deterministic_kernels": True}) == "deterministic: the same adapter on the same GPU and software"
    assert kernels({"deterministic_kernels": False}).startswith("with atomics (--deterministic-training off)")
    assert kernels({}) is None  # a CPU run (always deterministic), or one from before the record
