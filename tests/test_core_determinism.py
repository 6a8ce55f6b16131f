"""Deterministic training (``--deterministic-training``): PyTorch's deterministic kernels for the fit
on CUDA, cuBLAS's reproducible workspace asked for by the CLI, the process's settings put back, and
every method's fit inside it. (Whether it makes fits that share a GPU agree is measured on the GPU:
``bench/train_determinism.py``.)"""

import os
from contextlib import contextmanager

import pytest
import torch
import torch.utils.deterministic as memory
from typer.testing import CliRunner

from metalora.cli import app
from metalora.errors import MlbenchError
from metalora.methods import make_trainer
from metalora.runs.runconfig import TRAIN_EXECUTION_FIELDS, build_run_config, run_id_for
from metalora.training.config import TrainConfig
from metalora.training.determinism import (
    CUBLAS_WORKSPACE_VARIABLE,
    deterministic_training,
    request_cublas_workspace,
)
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

READY = {CUBLAS_WORKSPACE_VARIABLE: ":4096:8"}


def process_settings():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            memory.fill_uninitialized_memory)  # fmt: skip


@pytest.fixture
def restored():
    """Whatever a test does to the process-wide switches is undone after it."""
    before = process_settings()
    yield before
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    memory.fill_uninitialized_memory = before[2]


def test_on_cuda_the_fit_runs_with_deterministic_kernels_and_the_process_gets_its_settings_back(restored):
    torch.use_deterministic_algorithms(True, warn_only=True)  # a caller's own choice, to be put back
    memory.fill_uninitialized_memory = True
    with deterministic_training("on", torch.device("cuda"), READY) as deterministic:
        # warn_only would leave attention's split-key atomics in place: it must be off
        assert process_settings() == (True, False, False) and deterministic is True
    assert process_settings() == (True, True, True)
    with pytest.raises(RuntimeError, match="boom"), deterministic_training("on", "cuda:1", READY):
        raise RuntimeError("boom")
    assert process_settings() == (True, True, True)  # also after a failure inside


@pytest.mark.parametrize(("setting", "device", "recorded"), [("off", "cuda", False), ("on", "cpu", None),
                                                              ("off", "cpu", None)])
def test_off_or_on_a_cpu_nothing_changes(restored, setting, device, recorded):
    with deterministic_training(setting, torch.device(device), environ={}) as deterministic:  # no cuBLAS needed
        assert process_settings() == restored and deterministic is recorded


def test_an_operation_without_a_deterministic_kernel_stops_the_fit_in_one_line(restored):
    pytorch_says = ("index_reduce_cuda does not have a deterministic implementation, but you set "
                    "'torch.use_deterministic_algorithms(True)'. You can turn off determinism ...")  # fmt: skip
    with pytest.raises(MlbenchError) as caught, deterministic_training("on", "cuda", READY):
        raise RuntimeError(pytorch_says)
    assert str(caught.value) == (
        "training reached index_reduce_cuda, which has no deterministic CUDA kernel; rerun with "
        "--deterministic-training off (the run is then not reproducible bit for bit)"
    )
    assert process_settings() == restored


def test_without_the_cublas_workspace_the_fit_stops_in_one_line(restored):
    with pytest.raises(MlbenchError) as caught, deterministic_training("on", "cuda", environ={}):
        pass
    message = str(caught.value)
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in message and "--deterministic-training off" in message
    assert "\n" not in message and process_settings() == restored
    with pytest.raises(MlbenchError), deterministic_training("on", "cuda", {CUBLAS_WORKSPACE_VARIABLE: ":0:0"}):
        pass


def test_the_cli_asks_for_the_workspace_and_keeps_a_users_own(monkeypatch):
    environ = {}
    request_cublas_workspace(environ)
    assert environ == READY
    environ = {CUBLAS_WORKSPACE_VARIABLE: ":16:8"}
    request_cublas_workspace(environ)
    assert environ == {CUBLAS_WORKSPACE_VARIABLE: ":16:8"}
    monkeypatch.setenv(CUBLAS_WORKSPACE_VARIABLE, "unset below")  # so that the test's end restores the original
    monkeypatch.delenv(CUBLAS_WORKSPACE_VARIABLE)
    result = CliRunner().invoke(app, ["data", "--help"])  # any command: the app's callback runs first
    assert result.exit_code == 0
    assert os.environ.get(CUBLAS_WORKSPACE_VARIABLE) == ":4096:8"


def test_the_setting_is_validated_recorded_and_not_in_the_run_id():
    with pytest.raises(MlbenchError, match="deterministic_training must be one of on, off, got 'yes'"):
        TrainConfig(deterministic_training="yes").validate()
    assert TrainConfig().deterministic_training == "on" and "deterministic_training" in TRAIN_EXECUTION_FIELDS
    base = {"method": "lora", "tasks": ["strategyqa"], "shots": 10}
    on, off = build_run_config(base), build_run_config(base | {"deterministic_training": "off"})
    assert off.to_dict()["train"]["deterministic_training"] == "off"  # config.json records it
    assert run_id_for(on, {"f": "1"}, "m") == run_id_for(off, {"f": "1"}, "m")


@pytest.mark.parametrize("method", ["lora", "hydralora", "dora", "metalora"])
def test_every_methods_fit_runs_inside_the_block(tokenizer, monkeypatch, method):
    entered = []

    @contextmanager
    def recorder(setting, device, environ=None):
        entered.append((setting, torch.device(device).type))
        yield

    monkeypatch.setattr("metalora.training.supervised.deterministic_training", recorder)
    monkeypatch.setattr("metalora.methods.meta.deterministic_training", recorder)
    options = {"support_size": 2, "query_size": 2, "inner_steps": 1} if method == "metalora" else {}
    config = TrainConfig(rank=2, target_modules=("q_proj",), batch_size=4, budget_rule="matched_updates", steps=8,
                         deterministic_training="off").validate()  # fmt: skip
    adapter = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, toy_tasks(2, 8), config)
    assert entered == [("off", "cpu")]
    assert "deterministic_kernels" not in adapter.training_cost  # recorded on CUDA only


@pytest.mark.parametrize("method", ["lora", "metalora"])
def test_a_fit_on_cuda_records_whether_its_kernels_were_deterministic(tokenizer, monkeypatch, method):
    @contextmanager
    def on_cuda(setting, device, environ=None):  # what the block yields on a GPU
        yield setting == "on"

    monkeypatch.setattr("metalora.training.supervised.deterministic_training", on_cuda)
    monkeypatch.setattr("metalora.methods.meta.deterministic_training", on_cuda)
    options = {"support_size": 2, "query_size": 2, "inner_steps": 1} if method == "metalora" else {}
    for setting, recorded in (("on", True), ("off", False)):
        config = TrainConfig(rank=2, target_modules=("q_proj",), batch_size=4, budget_rule="matched_updates",
                             steps=8, deterministic_training=setting).validate()  # fmt: skip
        adapter = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, toy_tasks(2, 8), config)
        assert adapter.training_cost["deterministic_kernels"] is recorded


def test_env_json_records_the_cublas_setting_on_a_gpu(monkeypatch):
    from metalora.provenance import environment_record

    monkeypatch.setenv(CUBLAS_WORKSPACE_VARIABLE, ":16:8")
    assert environment_record("cuda:0")["cublas_workspace_config"] == ":16:8"
    assert environment_record("cpu")["cublas_workspace_config"] is None  # not used on a CPU
