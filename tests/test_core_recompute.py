"""Activation checkpointing changes no number: every method trains the same adapter with and
without it (bit for bit on CPU), MeTA-LoRA's inner loop included; it is recorded but not in the
run id; combinations that cannot recompute are refused before any work."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metalora.errors import MlbenchError
from metalora.methods import make_trainer
from metalora.methods.meta import loss_and_grads
from metalora.runs.runconfig import build_run_config, run_id_for
from metalora.training.batching import batch_loss, collate, encode_example
from metalora.training.config import TrainConfig
from metalora.training.lora import new_lora_model
from metalora.training.recompute import activation_checkpointing
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

METHODS = [
    ("lora", {}),
    ("hydralora", {"num_heads": 2}),
    ("metalora", {"support_size": 2, "query_size": 2, "inner_steps": 2}),
    ("metalora", {"support_size": 2, "query_size": 2, "inner_steps": 2, "variant": "reptile"}),
]


def _checkpointing_on(model) -> bool:
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_every_method_trains_the_same_adapter_with_checkpointing(tokenizer, method, options):
    tasks = toy_tasks(3, 4)  # 3 updates of 4 see every example under matched_updates (each method)
    adapters = []
    for checkpointing in (False, True):
        model = make_tiny_llama()
        config = TrainConfig(budget_rule="matched_updates", steps=3, rank=2, batch_size=4, max_seq_len=64,
                             gradient_checkpointing=checkpointing)
        seen = []  # whether checkpointing was on while each step trained
        adapters.append(make_trainer(method, options).fit(
            model, tokenizer, tasks, config, lambda record, model=model, seen=seen: seen.append(_checkpointing_on(model))
        ))
        assert seen == [checkpointing] * 3
        assert not _checkpointing_on(model)  # switched off again: the model goes back as it came
        assert not getattr(model, "_require_grads_hooks", None)
    plain, recomputed = adapters
    assert plain.state.keys() == recomputed.state.keys() and plain.state
    for name in plain.state:
        assert torch.equal(plain.state[name], recomputed.state[name]), name
    assert [r["loss"] for r in plain.training_log] == [r["loss"] for r in recomputed.training_log]


def _adapted_theta(model):
    """Adapter parameters moved away from the live ones, as after an inner step."""
    torch.manual_seed(1)
    return {name: (param.detach() + 0.05 * torch.randn_like(param)).requires_grad_()
            for name, param in model.named_parameters() if param.requires_grad}  # fmt: skip


def test_inner_loop_gradients_equal_with_checkpointing_and_functional_call_would_not(tokenizer):
    from metalora.data.example import Example

    model = new_lora_model(make_tiny_llama(), TrainConfig(rank=2, dropout=0.0))
    batch = collate([encode_example(tokenizer, Example("t", f"item {i}: ", "abc"), 64) for i in range(3)],
                    tokenizer.pad_token_id)  # fmt: skip
    theta = _adapted_theta(model)
    model.train()
    loss, grads = loss_and_grads(model, theta, batch)
    with activation_checkpointing(model, True):
        assert _checkpointing_on(model)
        loss_recomputed, grads_recomputed = loss_and_grads(model, theta, batch)
        # functional_call swaps theta in for the forward only: the recomputation in the backward
        # pass runs with the live parameters and the gradient is wrong. That is why the swap.
        wrong = batch_loss(lambda **inputs: functional_call(model, theta, args=(), kwargs=inputs), batch)
        wrong_grads = torch.autograd.grad(wrong, list(theta.values()))
    assert torch.equal(loss, loss_recomputed)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_recomputed, strict=True))
    # The forward is right (to float32 rounding: functional_call's forward may take other CPU kernels) ...
    torch.testing.assert_close(wrong.detach(), loss.detach(), rtol=1e-6, atol=0)
    # ... its gradient is not, by far more than rounding: every tensor off by over 10% of its norm.
    assert all((a - b).norm() > 0.1 * a.norm() for a, b in zip(grads, wrong_grads, strict=True))


def test_checkpointing_is_recorded_but_not_in_the_run_id():
    base = {"method": "lora", "tasks": ["strategyqa"], "shots": 10}
    plain, recomputed = build_run_config(base), build_run_config(base | {"gradient_checkpointing": True})
    assert recomputed.train.gradient_checkpointing and not plain.train.gradient_checkpointing
    assert recomputed.to_dict()["train"]["gradient_checkpointing"] is True  # config.json records it
    assert plain.identity() == recomputed.identity()
    assert run_id_for(plain, {"f": "1"}, "m") == run_id_for(recomputed, {"f": "1"}, "m")
    other = build_run_config(base | {"rank": 4})
    assert run_id_for(plain, {"f": "1"}, "m") != run_id_for(other, {"f": "1"}, "m")


@pytest.mark.parametrize(("options", "message"), [
    ({"inner_loop": "batched"}, "gradient_checkpointing does not work with inner_loop=batched"),
    ({"variant": "second_order"}, "gradient_checkpointing does not work with variant=second_order"),
])  # fmt: skip
def test_combinations_that_cannot_recompute_are_refused_before_any_work(options, message):
    given = {"method": "metalora", "tasks": ["strategyqa"], "shots": 20, "gradient_checkpointing": True}
    with pytest.raises(MlbenchError, match=message):
        build_run_config(given | options)
    build_run_config(given | options | {"gradient_checkpointing": False})  # fine without it
