"""`mlbench run --method metalora --shots 50` on CPU, as a user types it, on the real SmolLM2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def mlbench(*args, store: Path, data_root: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLBENCH_STORE": str(store),
           "MLBENCH_DATA_DIR": str(data_root), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "metalora.cli", *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_run_metalora_50_shots_on_cpu_and_list_it(tmp_path, data_root):
    store = tmp_path / "runs"
    result = mlbench("run", "--method", "metalora", "--shots", "50", store=store, data_root=data_root.path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.startswith("CPU only: the quick profile (1 pass over every budget, ")
    [run_dir] = [path for path in store.iterdir() if path.is_dir()]
    # progress and a summary; lm-eval's and transformers' output went to the run's log
    assert f"run {run_dir.name}: done" in result.stderr.splitlines() and "Custom kwargs" not in result.stderr
    assert len(result.stderr.splitlines()) < 30, result.stderr
    assert "Custom kwargs" in (run_dir / "run.log").read_text()
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert (config["method"], config["shots"], config["profile"]) == ("metalora", 50, "quick")
    assert config["tasks"] == ["strategyqa", "social_iqa", "logical_fallacy_detection",
                               "vitaminc_fact_verification", "gsm8k"]
    log = [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text().splitlines()]
    # quick: one pass over every budget; 50 examples per task in draws of 2 + 2 take 13 iterations
    assert [r["step"] for r in log] == list(range(1, 14)) and all(r["query_loss"] > 0 for r in log)
    cost = json.loads((run_dir / "cost.json").read_text())["training"]
    assert (cost["budget_rule"], cost["outer_updates"], cost["example_passes"]) == ("epochs", 13, 13 * 5 * (2 + 2))
    assert cost["min_epochs"] >= 1
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["benchmarks"] == ["heldout", "bbh", "bbh_mc", "mmlu"]
    assert sum(t["n_evaluated"] for t in results["tasks"] if t["benchmark"] == "heldout") == 5
    assert sum(t["n_evaluated"] for t in results["tasks"] if t["benchmark"] == "bbh_mc") == 23
    assert sum(t["n_evaluated"] for t in results["tasks"] if t["benchmark"] == "bbh") == 27
    assert sum(t["n_evaluated"] for t in results["tasks"] if t["benchmark"] == "mmlu") == 57
    assert (run_dir / "eval" / "samples" / "bbh.jsonl.gz").is_file()
    assert (run_dir / "DONE").is_file()

    listing = mlbench("ls", store=store, data_root=data_root.path)
    assert listing.returncode == 0
    assert run_dir.name in listing.stdout and "done" in listing.stdout and "metalora" in listing.stdout
