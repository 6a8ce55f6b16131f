"""Bad configurations are refused before any work, with one line naming what is allowed."""

import pytest

from metalora.errors import MlbenchError
from metalora.methods import METHODS
from metalora.models import resolve_model
from metalora.options import options_from_dict
from metalora.runs.runconfig import ExecutionOptions, build_run_config
from metalora.runs.runner import prepare_run
from metalora.training.config import TrainConfig


def plan(options: dict, data_root: str):
    """The one path from flat options to a checked run: build (values), prepare (data)."""
    return prepare_run(build_run_config(options), ExecutionOptions(device="cpu", data_root=data_root))


def refused(options: dict, data_root: str) -> str:
    with pytest.raises(MlbenchError) as caught:
        plan(options, data_root)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def base(data_root):
    return str(data_root.path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"method": "qlora"}, f"unknown method 'qlora'; choose from {', '.join(METHODS)}"),
        ({"tasks": ("strategyqa", "boolean_expressions")}, "unknown training task 'boolean_expressions'; choose from"),
        ({"tasks": "strategyqa,boolean_expressions"}, "unknown training task 'boolean_expressions'; choose from"),
        ({"scenario": "vision"}, "unknown scenario 'vision'; choose from multitask, multilingual"),
        ({"shots": 5}, "shots must be an integer from 10 to 100 or 'full', got 5"),
        ({"shots": 101}, "shots must be an integer from 10 to 100 or 'full', got 101"),
        ({"shots": "many"}, "shots must be an integer from 10 to 100 or 'full', got 'many'"),
        ({"support_size": 8, "query_size": 8, "shots": 10},
         "support_size + query_size = 16 is larger than task strategyqa's budget of 10 examples"),
        ({"tasks_per_iteration": 6}, "tasks_per_iteration is 6 but only 5 tasks are trained; use at most 5"),
        ({"inner_steps": -1}, "inner_steps must be a non-negative integer, got -1"),
        ({"variant": "third_order"}, "unknown MeTA-LoRA variant 'third_order'; choose from first_order"),
        ({"inner_loop": "parallel"}, "inner_loop must be one of sequential, batched, got 'parallel'"),
        ({"k": 3}, "unknown option(s) k; allowed: alpha, batch_size, benchmarks"),
        ({"method": "hydralora", "num_heads": 0}, "num_heads must be a positive integer, got 0"),
        ({"rank": 0}, "rank must be a positive integer, got 0"),
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"eval_limit": 0}, "eval_limit must be a positive integer, got 0"),
        ({"dtype": "int4"}, "dtype must be one of auto, float32, bfloat16, float16, got 'int4'"),
        ({"model": " "}, "model name is empty"),
        ({"benchmarks": ""}, "benchmarks is empty; name at least one"),
        ({"scenario": "multilingual", "held_out_languages": ("xx",)}, "unknown held-out language 'xx'"),
    ],
)
def test_bad_options_are_refused_with_one_line(base, change, expected):
    message = refused(change, base)
    assert message.startswith(expected), message


def test_bad_data_root_is_refused(base):
    message = refused({}, "/nonexistent/data")
    assert message.startswith("data root /nonexistent/data (from --data-root) is not a folder"), message


def test_steps_and_epochs_exclude_each_other():
    with pytest.raises(MlbenchError, match="set exactly one of steps or epochs"):
        TrainConfig(steps=None, epochs=None).validate()
    # an explicit epochs replaces the default step count
    assert build_run_config({"epochs": 2.0}).train.steps is None


def test_more_shots_than_a_task_has(base):
    # A mirror where xcopa_et has only 100 training items: ask for full budgets on a tiny task set.
    message = refused(
        {"scenario": "multilingual", "tasks": ("xcopa_et",), "shots": 100, "support_size": 60, "query_size": 60},
        base,
    )
    assert message.startswith("support_size + query_size = 120 is larger than task xcopa_et's budget of 100")


def test_draw_refuses_more_shots_than_pool():
    from metalora.data.budgets import draw_budget
    from metalora.data.example import Example

    pool = [Example(task="t", prompt=str(i), target="x") for i in range(30)]
    with pytest.raises(MlbenchError, match="task t has 30 training items, fewer than --shots 50; use at most 30"):
        draw_budget("t", pool, 50, seed=0)


def test_unknown_model_names_the_hub_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MlbenchError) as caught:
        resolve_model("no-such-org/no-such-model", cache=tmp_path)
    assert str(caught.value).startswith(
        "model 'no-such-org/no-such-model' is not in the local HF cache and the hub is unreachable "
        "(HF_HUB_OFFLINE is set): pass a local folder, a .gguf, or a cached alias (smollm2-135m, "
    )
    with pytest.raises(MlbenchError, match="model file .*missing.gguf does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"), cache=tmp_path)


def test_options_from_dict_refuses_unknown_keys():
    with pytest.raises(MlbenchError, match="unknown option\\(s\\) learning_rate for training; allowed: .*lr"):
        options_from_dict(TrainConfig, {"learning_rate": 1e-3}, what="training")
    assert options_from_dict(TrainConfig, {"target_modules": "q_proj,v_proj"}, what="training").target_modules == (
        "q_proj", "v_proj")


def test_valid_options_plan_without_loading_a_model(base):
    prepared = plan({"model": "smollm2-135m"}, base)
    assert prepared.config.tasks == (
        "strategyqa", "social_iqa", "logical_fallacy_detection", "vitaminc_fact_verification", "gsm8k")
    assert [len(b.examples) for b in prepared.budgets] == [50] * 5
