"""The command line as a person meets it: --version, method names in any case, another method's
options refused in one line, configuration checks before any loading, the data source checked
before the model, counts in proper English."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from metalora.cli import app, plural


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mlbench {version('mlbench')}"


@pytest.mark.parametrize("typed", ["MeTA-LoRA", "METALORA", "MetaLoRA", "meta_lora", "metalora"])
def test_method_names_ignore_case_hyphens_and_underscores(typed):
    from metalora.runs.runconfig import build_run_config

    config = build_run_config({"method": typed, "shots": 20})
    assert config.method == "metalora"
    assert config.to_dict()["method"] == "metalora"  # so the run id is the same whatever was typed


def test_an_unknown_method_is_still_refused_by_name():
    result = cli("run", "--method", "qlora", "--store", "unused")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "mlbench: error: unknown method 'qlora'; choose from base, lora, hydralora, metalora, dora"
    ]


def test_another_methods_option_is_refused_naming_the_option_and_its_method(tmp_path):
    result = cli("run", "--method", "lora", "--inner-steps", "5", "--store", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        ("mlbench: error: 1 option of another method given to --method lora, which would ignore it: "
        "--inner-steps (metalora); drop it or choose that method")
    ]
    assert not (tmp_path / "s").exists()
    two = cli("run", "--method", "LoRA", "--num-heads", "2", "--inner-lr", "0.1", "--store", str(tmp_path / "s"))
    assert two.exit_code == 2
    assert "2 options of another method given to --method lora, which would ignore them: " \
        "--num-heads (hydralora), --inner-lr (metalora); drop them" in two.stderr


def test_foreign_method_options_lists_each_option_with_its_methods():
    from metalora.runs.runconfig import foreign_method_options

    assert foreign_method_options({"method": "lora", "inner_steps": 0, "num_heads": None, "rank": 4}) == {
        "inner_steps": ("metalora",)
    }
    assert foreign_method_options({"method": "metalora", "inner_steps": 3}) == {}


def test_support_plus_query_over_shots_fails_before_any_data_or_model_is_read(tmp_path, monkeypatch):
    from metalora.runs import runner, worker

    def never(*args, **kwargs):
        raise AssertionError("configuration checks must come before any loading")

    monkeypatch.setattr(worker, "load_model", never)  # the worker's model pool loads models
    for name in ("load_budgets", "model_identity", "resolve_data_root"):
        monkeypatch.setattr(runner, name, never)
    result = cli("run", "--method", "metalora", "--shots", "10", "--support-size", "8", "--query-size", "8",
                 "--profile", "full", "--store", str(tmp_path / "s"))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        ("mlbench: error: support_size + query_size = 16 is larger than task strategyqa's budget of 10 "
        "examples; lower them or raise --shots")
    ]
    full = cli("run", "--method", "metalora", "--shots", "full", "--full-cap", "12", "--support-size", "8",
               "--query-size", "8", "--profile", "full", "--store", str(tmp_path / "s"))
    assert full.exit_code == 2
    assert "support_size + query_size = 16 is larger than task strategyqa's budget of 12 examples" in full.stderr
    assert not (tmp_path / "s").exists()


def test_base_without_a_data_root_and_no_hub_fails_before_loading_and_leaves_no_run(
    tmp_path, tiny_model_dir, monkeypatch
):
    from metalora.runs import worker

    def never(*args, **kwargs):
        raise AssertionError("the data source must be checked before the model loads")

    monkeypatch.setattr(worker, "load_model", never)  # the worker's model pool loads models
    monkeypatch.delenv("MLBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = tmp_path / "s"
    result = cli("run", "--method", "base", "--model", str(tiny_model_dir), "--store", str(store), "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "mlbench: error: no data root is set and the hub is unreachable (HF_HUB_OFFLINE is set): pass "
        "--data-root DIR or set MLBENCH_DATA_DIR to a local mirror laid out like shared/data (README: Data)"
    )
    assert not store.exists() or not [p for p in store.iterdir() if p.is_dir()]


def test_plural_counts():
    assert [plural(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert plural(1, "option") == "1 option"


def test_yaml_numbers_in_a_grid_are_numbers(tmp_path):
    from metalora.runs.runconfig import build_run_config
    from metalora.runs.sweep import load_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text("grid: {method: [lora], lr: [1e-4, 2E-4], weight_decay: [1e-2]}\n")
    configs = [build_run_config(options) for options in load_sweep(sweep).runs]
    assert [(c.train.lr, c.train.weight_decay) for c in configs] == [(1e-4, 1e-2), (2e-4, 1e-2)]
    assert all(type(c.train.lr) is float for c in configs)
