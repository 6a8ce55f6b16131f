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
        ({"inner_loop": "parallel"}, "inner_loop must be one of sequential, batched, stacked, got 'parallel'"),
        ({"k": 3}, "unknown option(s) k; allowed: alpha, batch_size, benchmarks"),
        ({"method": "hydralora", "num_heads": 0}, "num_heads must be a positive integer, got 0"),
        ({"rank": 0}, "rank must be a positive integer, got 0"),
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"budget_rule": "flops"}, "budget_rule must be one of matched_compute, matched_updates, epochs, got 'flops'"),
        ({"budget_rule": "matched_compute", "steps": 30},
         "steps does not apply under budget_rule matched_compute, which reads compute_epochs only"),
        ({"steps": 30, "epochs": 2}, "steps and epochs belong to different budget rules"),
        ({"budget_rule": "epochs", "epochs": 0.5}, "epochs must be at least 1 so that every example is seen"),
        ({"loss_weighting": "example"}, "loss_weighting must be one of task, token, got 'example'"),
        ({"method": "lora", "steps": 20},
         ("under budget_rule=matched_updates lora gets 20 updates of 8 example passes, too few to see every one "
          "of the 50 examples of its largest task at least once (it needs 32 updates); raise steps to at least 32")),
        ({"inner_steps": 10, "compute_epochs": 4},
         ("under budget_rule=matched_compute metalora gets 3 updates of 440 example passes, too few to see every one "
          "of the 50 examples of its largest task at least once (it needs 4 updates); raise compute_epochs to at "
          "least 7.04")),
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


def test_each_budget_rule_reads_its_own_knob():
    with pytest.raises(MlbenchError, match="budget_rule matched_updates needs steps; give it a value"):
        TrainConfig(budget_rule="matched_updates", steps=None).validate()
    # an explicit knob picks its rule; the knobs of the other rules are unset (not in the run id)
    train = build_run_config({"epochs": 2}).train
    assert (train.budget_rule, train.epochs, train.steps, train.compute_epochs) == ("epochs", 2.0, None, None)
    train = build_run_config({}).train
    assert (train.budget_rule, train.compute_epochs, train.steps, train.epochs) == ("matched_compute", 32.0, None, None)
    assert build_run_config({"compute_epochs": 32}).train == train  # 32 and 32.0: one run


def test_budget_rule_and_loss_weighting_change_the_run_id(base):
    ids = {
        plan(options, base).run_id
        for options in ({}, {"budget_rule": "matched_updates"}, {"budget_rule": "epochs", "epochs": 16},
                        {"loss_weighting": "token"}, {"compute_epochs": 16})
    }
    assert len(ids) == 5
    assert plan({"compute_epochs": 32}, base).run_id == plan({}, base).run_id


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
    # MeTA-LoRA at its defaults under matched_compute: 8,000 passes of 5 x (3 x 8 + 8) per iteration
    assert (prepared.budget.rule, prepared.budget.updates, prepared.budget.passes) == ("matched_compute", 50, 8000)
    lora = plan({"model": "smollm2-135m", "method": "lora"}, base).budget
    assert (lora.updates, lora.passes, lora.min_epochs) == (1000, 8000, 32.0)
