"""Evaluating a finished run without retraining: the run id covers training only, `mlbench run`,
`mlbench sweep` and `mlbench eval` add evaluations to the same run (tiny local model, real data)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from baselines.lora import LoraTrainer
from metalora.cli import app
from metalora.runs.runconfig import build_run_config
from metalora.runs.runner import prepare_run
from metalora.runs.store import RunStore, write_config

RUN = ["--method", "lora", "--scenario", "multilingual", "--tasks", "xcopa_et,xcopa_it", "--shots", "10",
       "--steps", "10", "--batch-size", "2", "--max-seq-len", "64", "--rank", "2", "--eval-limit", "1",
       "--profile", "full", "--device", "cpu"]


def cli(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def _never_train(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def _records(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, data_root):
    """A LoRA run trained and evaluated on xcopa (first item per language)."""
    store = tmp_path_factory.mktemp("store")
    common = [*RUN, "--model", tiny_model_dir, "--store", store, "--data-root", data_root.path]
    result = cli("run", *common, "--benchmarks", "xcopa")
    assert result.exit_code == 0, result.output
    (row,) = RunStore(store).rows()
    return store, row.run_id, common


def test_the_run_id_depends_on_training_settings_only(tiny_model_dir, data_root):
    base = {"method": "lora", "model": str(tiny_model_dir), "scenario": "multilingual",
            "tasks": "xcopa_et,xcopa_it", "shots": 10, "steps": 10}
    execution_root = {"data_root": str(data_root.path)}
    from metalora.runs.runconfig import ExecutionOptions

    execution = ExecutionOptions(**execution_root)

    def run_id(**changes):
        return prepare_run(build_run_config({**base, **changes}), execution).run_id

    first = run_id(benchmarks=("xcopa",))
    assert run_id(benchmarks=("xcopa", "xwinograd"), eval_limit=3, max_gen_tokens=7) == first
    assert run_id(benchmarks=("xcopa",), lr=1e-3) != first
    assert run_id(benchmarks=("xcopa",), seed=1) != first
    assert run_id(benchmarks=("xcopa",), shots=20) != first


def test_run_with_another_benchmark_evaluates_only(finished_run, monkeypatch):
    store, run_id, common = finished_run
    folder = store / run_id
    adapter_bytes = (folder / "adapter" / "adapter.safetensors").read_bytes()
    xcopa_bytes = (folder / "eval" / "samples" / "xcopa.jsonl.gz").read_bytes()
    done_before = json.loads((folder / "DONE").read_text())
    monkeypatch.setattr(LoraTrainer, "fit", _never_train)

    result = cli("run", *common, "--benchmarks", "xcopa,xwinograd")
    assert result.exit_code == 0, result.output
    assert "evaluation only" in result.output and "xwinograd (not evaluated yet)" in result.output
    assert [row.run_id for row in RunStore(store).rows()] == [run_id]  # the same run, no new one
    assert (folder / "adapter" / "adapter.safetensors").read_bytes() == adapter_bytes
    assert (folder / "eval" / "samples" / "xcopa.jsonl.gz").read_bytes() == xcopa_bytes  # not recomputed
    results = json.loads((folder / "eval" / "results.json").read_text())
    assert results["benchmarks"] == ["xcopa", "xwinograd"]
    assert sorted({t["benchmark"] for t in results["tasks"]}) == ["xcopa", "xwinograd"]
    assert len([t for t in results["tasks"] if t["benchmark"] == "xcopa"]) == 11
    assert {t["task"] for t in results["tasks"] if t["benchmark"] == "xwinograd"} == {"en", "fr", "jp", "pt", "ru", "zh"}
    assert set(results["settings"]["evaluations"]) == {"xcopa", "xwinograd"}
    assert len(_records(folder / "eval" / "samples" / "xwinograd.jsonl.gz")) == 6  # one item per language
    assert results["sample_files"]["xwinograd"] == str(folder / "eval" / "samples" / "xwinograd.jsonl.gz")
    config = json.loads((folder / "config.json").read_text())
    assert config["run_id"] == run_id and config["config"]["benchmarks"] == ["xcopa", "xwinograd"]
    assert any(name.startswith("xwinograd/") for name in config["data_hashes"])
    done = json.loads((folder / "DONE").read_text())
    assert done["finished"] == done_before["finished"]
    assert set(done["headline"]) == {"xcopa/acc", "xwinograd/acc"}
    assert RunStore(store).rows()[0].headline == done["headline"]
    assert not list((folder / "eval").glob(".pending-*"))

    again = cli("run", *common, "--benchmarks", "xcopa,xwinograd")
    assert again.exit_code == 0 and "already finished, not redone" in again.output

    # A sweep naming the same training with a third benchmark plans it as evaluation only.
    sweep = store.parent / "sweep.yaml"
    model, data_root = (common[common.index(flag) + 1] for flag in ("--model", "--data-root"))
    defaults = {"method": "lora", "model": str(model), "scenario": "multilingual", "tasks": ["xcopa_et", "xcopa_it"],
                "shots": 10, "steps": 10, "batch_size": 2, "max_seq_len": 64, "rank": 2, "eval_limit": 1,
                "profile": "full", "benchmarks": ["xcopa", "xwinograd", "bbh_mc"]}
    sweep.write_text(yaml.safe_dump({"defaults": defaults, "grid": {"seed": [0]}}))
    dry = cli("sweep", sweep, "--store", store, "--data-root", data_root, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{run_id}  eval only" in dry.output and "0 to run, 1 finished but to evaluate on more" in dry.output


def test_eval_command_adds_items_and_benchmarks(finished_run, monkeypatch):
    store, run_id, common = finished_run
    folder = store / run_id
    data_root = common[common.index("--data-root") + 1]
    adapter_bytes = (folder / "adapter" / "adapter.safetensors").read_bytes()
    monkeypatch.setattr(LoraTrainer, "fit", _never_train)
    before = json.loads((folder / "eval" / "results.json").read_text())

    nothing = cli("eval", run_id[:6], "--benchmarks", "xcopa", "--store", store, "--data-root", data_root)
    assert nothing.exit_code == 0 and "nothing to evaluate" in nothing.output
    assert json.loads((folder / "eval" / "results.json").read_text()) == before

    more = cli("eval", run_id, "--eval-limit", "2", "--store", store, "--data-root", data_root, "--device", "cpu")
    assert more.exit_code == 0, more.output
    results = json.loads((folder / "eval" / "results.json").read_text())
    # A changed limit re-evaluates every benchmark of the run, so they share their items.
    assert results["settings"]["limit"] == 2 and results["benchmarks"] == before["benchmarks"]
    assert all(task["n_evaluated"] == 2 for task in results["tasks"])
    assert len(_records(folder / "eval" / "samples" / "xcopa.jsonl.gz")) == 22
    assert json.loads((folder / "config.json").read_text())["config"]["eval_limit"] == 2
    assert (folder / "adapter" / "adapter.safetensors").read_bytes() == adapter_bytes

    forced = cli("eval", run_id, "--benchmarks", "xcopa", "--force", "--store", store, "--data-root", data_root,
                 "--device", "cpu")
    assert forced.exit_code == 0 and "xcopa (asked again)" in forced.output
    again = json.loads((folder / "eval" / "results.json").read_text())
    assert again["benchmarks"] == results["benchmarks"]  # xwinograd kept, xcopa recomputed
    assert [t for t in again["tasks"] if t["benchmark"] == "xcopa"] == [
        t for t in results["tasks"] if t["benchmark"] == "xcopa"
    ]  # the same adapter on the same items gives the same scores


def test_eval_bad_input_is_one_line(finished_run, tmp_path):
    store, run_id, _ = finished_run
    unknown_run = cli("eval", "ffff", "--store", store)
    assert unknown_run.exit_code == 2 and "no run in" in unknown_run.stderr
    assert len(unknown_run.stderr.strip().splitlines()) == 1
    unknown_benchmark = cli("eval", run_id, "--benchmarks", "xcopa,nope", "--store", store)
    assert unknown_benchmark.exit_code == 2 and "unknown benchmark 'nope'" in unknown_benchmark.stderr
    negative = cli("eval", run_id, "--eval-limit", "-1", "--store", store)
    assert negative.exit_code == 2 and "eval_limit must be" in negative.stderr

    # A run that has not finished (claimed, config written, no DONE) is refused.
    unfinished = RunStore(tmp_path / "store")
    config = json.loads((store / run_id / "config.json").read_text())
    assert unfinished.claim("0123456789abcdef", config["config"])
    write_config(unfinished.run_dir("0123456789abcdef"), "0123456789abcdef", config["config"], {}, None)
    refused = cli("eval", "0123", "--store", unfinished.root)
    assert refused.exit_code == 2 and "is not finished" in refused.stderr
    assert not (unfinished.run_dir("0123456789abcdef") / "eval").exists()


def test_plan_reevaluates_only_what_changed():
    from metalora.runs.evaluation import EvalRequest, plan_evaluation

    stored = {"benchmarks": ["xcopa", "bbh"], "data_files": {"xcopa/data/et/test.et.jsonl": "a"},
              "settings": {"limit": 1, "max_gen_tokens": {"bbh": 128}}}
    request = EvalRequest(("xcopa", "bbh"), (), eval_limit=1)
    assert plan_evaluation(stored, request, {"xcopa/data/et/test.et.jsonl": "a"}).evaluate == ()
    # A new benchmark only; the stored ones are kept.
    plan = plan_evaluation(stored, EvalRequest(("mgsm",), (), eval_limit=1), {})
    assert plan.evaluate == ("mgsm",) and plan.kept == ("xcopa", "bbh")
    # A new generation cap re-evaluates the generative benchmarks only, requested or not.
    plan = plan_evaluation(stored, EvalRequest(("xcopa",), (), eval_limit=1, max_gen_tokens=32), {})
    assert plan.evaluate == ("bbh",) and plan.reasons["bbh"] == "max_gen_tokens 128 -> 32"
    # Changed data files re-evaluate their benchmark; a new limit re-evaluates everything.
    plan = plan_evaluation(stored, request, {"xcopa/data/et/test.et.jsonl": "b"})
    assert plan.evaluate == ("xcopa",) and plan.reasons["xcopa"] == "its data files changed"
    plan = plan_evaluation(stored, EvalRequest(("xcopa",), (), eval_limit=None), {})
    assert plan.evaluate == ("xcopa", "bbh") and plan.kept == ()
    assert plan_evaluation(stored, EvalRequest(("bbh",), (), eval_limit=1, force=True), {}).evaluate == ("bbh",)
    assert plan_evaluation(None, request, {}).evaluate == ("xcopa", "bbh")


def test_a_run_keeps_its_adapter_in_peft_format_and_exports_it(finished_run, tmp_path):
    from peft import PeftConfig

    store, run_id, common = finished_run
    model = Path(common[common.index("--model") + 1]).resolve()
    peft_dir = store / run_id / "adapter" / "peft"
    assert json.loads((peft_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model)
    assert PeftConfig.from_pretrained(str(peft_dir)).r == 2

    out = tmp_path / "exported"
    result = cli("export", run_id[:5], "--out", out, "--store", store)
    assert result.exit_code == 0, result.output
    exported, kept = (load_file(folder / "adapter_model.safetensors") for folder in (out, peft_dir))
    assert exported.keys() == kept.keys() and all(torch.equal(exported[k], kept[k]) for k in kept)
    assert any(torch.count_nonzero(kept[k]) for k in kept if "lora_B" in k)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    refused = cli("export", run_id, "--out", tmp_path / "busy", "--store", store)
    assert refused.exit_code == 2 and "holds other files" in refused.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def _capture_evaluated_models(monkeypatch, fail_first: bool = False) -> list:
    """Record the model each evaluation is handed, with its module types and LoRA B tensors as they
    are during the call (the worker detaches the adapter afterwards), optionally failing the first."""
    from eval_tasks import harness

    seen, real = [], harness.evaluate

    def evaluate(model, *args, **kwargs):
        seen.append((model, [type(module) for module in model.modules()],
                     [p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n]))
        if fail_first and len(seen) == 1:
            raise RuntimeError("evaluation interrupted")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(harness, "evaluate", evaluate)
    return seen


def test_the_trained_adapter_is_what_gets_evaluated(tmp_path, tiny_model_dir, data_root, monkeypatch):
    """HydraLoRA (no peft format) and a LoRA adapter reused after an interrupted evaluation are
    evaluated with their adapter attached, never as the bare base model."""
    from peft import PeftModel

    from baselines.hydralora import HydraLoraLinear
    from metalora.runs.runconfig import ExecutionOptions
    from metalora.runs.runner import execute_run

    execution = ExecutionOptions(data_root=str(data_root.path), device="cpu")
    options = {"model": str(tiny_model_dir), "scenario": "multilingual", "tasks": "xcopa_et,xcopa_it",
               "shots": 10, "steps": 10, "batch_size": 2, "max_seq_len": 64, "rank": 2, "eval_limit": 1,
               "benchmarks": ("xcopa",), "profile": "full"}
    store = RunStore(tmp_path / "store")

    seen = _capture_evaluated_models(monkeypatch)
    hydra = prepare_run(build_run_config({**options, "method": "hydralora"}), execution)
    assert execute_run(hydra, store, execution) == "done"
    assert HydraLoraLinear in seen[-1][1]
    assert not (store.run_dir(hydra.run_id) / "adapter" / "peft").exists()

    seen = _capture_evaluated_models(monkeypatch, fail_first=True)
    lora = prepare_run(build_run_config({**options, "method": "lora"}), execution)
    with pytest.raises(RuntimeError, match="evaluation interrupted"):
        execute_run(lora, store, execution)
    assert (store.run_dir(lora.run_id) / "adapter" / "peft" / "adapter_config.json").is_file()
    monkeypatch.setattr(LoraTrainer, "fit", _never_train)
    assert execute_run(lora, store, execution) == "done"  # reuses the saved adapter
    assert isinstance(seen[-1][0], PeftModel)
    assert seen[-1][2] and any(torch.count_nonzero(p) for p in seen[-1][2])
