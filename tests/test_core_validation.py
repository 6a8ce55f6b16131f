"""Bad configurations are refused before any work, with one line naming what is allowed."""

import pytest

from metalora.config import TrainConfig, config_from_dict
from metalora.errors import MlbenchError
from metalora.experiment import TrainingRequest, plan_training
from metalora.models import resolve_model


def refused(request: TrainingRequest, data_root) -> str:
    with pytest.raises(MlbenchError) as caught:
        plan_training(request)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def base(data_root):
    return TrainingRequest(data_root=str(data_root.path))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"method": "qlora"}, "unknown method 'qlora'; choose from base, lora, hydralora, metalora"),
        ({"tasks": ("strategyqa", "boolean_expressions")}, "unknown training task 'boolean_expressions'; choose from"),
        ({"scenario": "vision"}, "unknown scenario 'vision'; choose from multitask, multilingual"),
        ({"shots": 5}, "shots must be an integer from 10 to 100 or 'full', got 5"),
        ({"shots": 101}, "shots must be an integer from 10 to 100 or 'full', got 101"),
        ({"shots": "many"}, "shots must be an integer from 10 to 100 or 'full', got 'many'"),
        ({"method_options": {"support_size": 8, "query_size": 8}, "shots": 10},
         "support_size + query_size = 16 is larger than task strategyqa's budget of 10 examples"),
        ({"method_options": {"inner_steps": -1}}, "inner_steps must be a non-negative integer, got -1"),
        ({"method_options": {"variant": "third_order"}}, "unknown MeTA-LoRA variant 'third_order'; choose from first_order"),
        ({"method_options": {"k": 3}}, "unknown option(s) k for method metalora; allowed: inner_loop, inner_lr, inner_steps"),
        ({"method": "hydralora", "method_options": {"num_heads": 0}}, "num_heads must be a positive integer, got 0"),
        ({"train": TrainConfig(rank=0)}, "rank must be a positive integer, got 0"),
        ({"train": TrainConfig(steps=0)}, "steps must be a positive integer, got 0"),
        ({"train": TrainConfig(steps=None, epochs=None)}, "set exactly one of steps or epochs"),
        ({"scenario": "multilingual", "held_out_languages": ("xx",)}, "unknown held-out language 'xx'"),
        ({"data_root": "/nonexistent/data"}, "data root /nonexistent/data (from --data-root) is not a folder"),
    ],
)
def test_bad_request_is_refused_with_one_line(base, data_root, change, expected):
    message = refused(TrainingRequest(**{**base.__dict__, **change}), data_root)
    assert message.startswith(expected), message


def test_more_shots_than_a_task_has(base, data_root, tmp_path):
    # A mirror where xcopa_et has only 100 training items: ask for full budgets on a tiny task set.
    message = refused(
        TrainingRequest(**{**base.__dict__, "scenario": "multilingual", "tasks": ("xcopa_et",), "shots": 100,
                           "method_options": {"support_size": 60, "query_size": 60}}),
        data_root,
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


def test_config_from_dict_refuses_unknown_keys():
    with pytest.raises(MlbenchError, match="unknown option\\(s\\) learning_rate for training; allowed: .*lr"):
        config_from_dict({"learning_rate": 1e-3})
    assert config_from_dict({"target_modules": "q_proj,v_proj"}).target_modules == ("q_proj", "v_proj")


def test_valid_request_plans_without_loading_a_model(base):
    plan = plan_training(TrainingRequest(**{**base.__dict__, "model": "some-org/not-downloaded"}))
    assert plan.task_names == ("strategyqa", "social_iqa", "logical_fallacy_detection", "vitaminc_fact_verification", "gsm8k")
    assert [len(b.examples) for b in plan.budgets] == [50] * 5
