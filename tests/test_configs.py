"""Every shipped sweep file loads and every run of it is a valid run configuration (no data or model
is read), so a typo in a config is found by CI, not hours into a GPU sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalora.runs.runconfig import build_run_config
from metalora.runs.sweep import load_sweep

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_shipped_sweep_is_valid(path):
    sweep = load_sweep(path)
    configs = [build_run_config(options) for options in sweep.runs]
    assert configs and sweep.description


def test_model_size_ablation_covers_three_models_with_their_base_rows():
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "ablation_model.yaml")
    configs = [build_run_config(options) for options in sweep.runs]
    models = {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert {c.model for c in configs} == models
    assert {c.model for c in configs if c.method == "base"} == models
    assert len(configs) == 3 * 3 * 3 + 3  # lora, metalora, phase2_only x 3 seeds per model, and the bases
