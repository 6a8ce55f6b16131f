"""Every method in the table passes the same checks: seeding, the base model given back untouched,
save/load, merged equals live (or a refusal to merge), and bit-identical resume. A new method is
one row in CASES (its options for these tiny runs); a method without a row fails here."""

import pytest
import torch

from metalora.errors import MlbenchError
from metalora.methods import METHODS, adapter_kinds, make_trainer
from metalora.runs.runconfig import ExecutionOptions
from metalora.training.adapters import load_adapter
from metalora.training.checkpoint import FolderCheckpointer, TrainState
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

CASES = {
    "lora": {},
    "hydralora": {"num_heads": 2},
    "metalora": {"inner_steps": 2, "support_size": 4, "query_size": 4},
    "dora": {},
}
TRAINED = [name for name, spec in METHODS.items() if spec.trains]
# dropout on: seeding and resume must also cover torch's RNG stream
CONFIG = TrainConfig(
    rank=4, alpha=8, dropout=0.1, budget_rule="matched_updates", steps=6, batch_size=4, lr=1e-2, seed=2, max_seq_len=64
)
INPUT = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def fit(method, config=CONFIG, model=None, tokenizer=None, **kwargs):
    return make_trainer(method, CASES[method]).fit(
        model or make_tiny_llama(), tokenizer, toy_tasks(per_task=8), config, **kwargs
    )


def test_every_trained_method_has_a_row():
    assert sorted(CASES) == sorted(TRAINED)


@pytest.mark.parametrize("method", TRAINED)
def test_same_seed_same_adapter_and_base_untouched(tokenizer, method):
    model = make_tiny_llama()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    first = fit(method, model=model, tokenizer=tokenizer)
    second = fit(method, tokenizer=tokenizer)
    other = fit(method, TrainConfig(**{**CONFIG.__dict__, "seed": 3}), tokenizer=tokenizer)
    assert first.state.keys() == second.state.keys() and first.state
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert any(not torch.equal(first.state[k], other.state[k]) for k in first.state)
    assert [record["step"] for record in first.training_log] == [1, 2, 3, 4, 5, 6]
    # the caller's model comes back with the same parameters, values and requires_grad flags
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert all(param.requires_grad for param in model.parameters())


@pytest.mark.parametrize("method", TRAINED)
def test_trained_adapter_changes_the_model_and_reloads_bit_for_bit(tmp_path, tokenizer, method):
    adapter = fit(method, tokenizer=tokenizer)
    live = logits(adapter.attach(make_tiny_llama()))
    assert not torch.allclose(live, logits(make_tiny_llama()), atol=1e-4)  # training moved something
    adapter.save(tmp_path / "adapter")
    reloaded = load_adapter(tmp_path / "adapter", adapter_kinds())
    assert type(reloaded) is METHODS[method].adapter and reloaded.kind == adapter.kind
    assert reloaded.config == adapter.config
    assert reloaded.state.keys() == adapter.state.keys()
    assert all(torch.equal(reloaded.state[k], adapter.state[k]) for k in adapter.state)
    assert torch.equal(logits(reloaded.attach(make_tiny_llama())), live)


@pytest.mark.parametrize("method", TRAINED)
def test_merged_equals_live(tokenizer, method):
    adapter = fit(method, tokenizer=tokenizer)
    if not adapter.mergeable:
        with pytest.raises(MlbenchError, match="cannot be merged"):
            adapter.merge(make_tiny_llama())
        return
    live = logits(adapter.attach(make_tiny_llama()))
    merged_model = adapter.merge(make_tiny_llama())
    assert not any("lora" in name for name, _ in merged_model.named_parameters())
    # fp32, float reassociation only
    torch.testing.assert_close(logits(merged_model), live, atol=1e-5, rtol=1e-5)


class Interrupt(Exception):
    pass


def stop_at(step):
    def callback(record):
        if record["step"] == step:
            raise Interrupt()

    return callback


def test_checkpoints_are_due_by_steps_or_by_time_since_the_last_save(tmp_path):
    now = [100.0]
    by_time = FolderCheckpointer(tmp_path / "t", every_s=60, clock=lambda: now[0])
    assert [step for step in range(1, 50) if by_time.due(step, 50)] == []  # no time has passed
    now[0] = 159.9
    assert not by_time.due(7, 50)
    now[0] = 160.0
    assert by_time.due(8, 50) and not by_time.due(50, 50)  # never after the last step
    by_time.save(TrainState(8, {"w": torch.zeros(2)}, {"state": {}, "param_groups": []}, {}, {}, [], {}))
    assert not by_time.due(9, 50)  # the interval counts from the save
    now[0] = 219.0
    assert not by_time.due(10, 50)
    now[0] = 220.0
    assert by_time.due(11, 50)
    by_steps = FolderCheckpointer(tmp_path / "s", every=4, clock=lambda: 1e9)
    assert [step for step in range(1, 13) if by_steps.due(step, 12)] == [4, 8]
    assert not any(FolderCheckpointer(tmp_path / "n", every=0).due(step, 12) for step in range(1, 13))
    assert ExecutionOptions().checkpoint_schedule() == (None, 60.0)
    assert ExecutionOptions(checkpoint_every="500").checkpoint_schedule() == (500, None)
    assert ExecutionOptions(checkpoint_every="2.5s").checkpoint_schedule() == (None, 2.5)


@pytest.mark.parametrize("method", TRAINED)
def test_resume_matches_uninterrupted(tmp_path, tokenizer, method):
    """A run interrupted after a checkpoint and resumed gives the same adapter, bit for bit (CPU)."""
    reference = fit(method, tokenizer=tokenizer)
    checkpointer = FolderCheckpointer(tmp_path / "ckpt", every=2)
    with pytest.raises(Interrupt):
        fit(method, tokenizer=tokenizer, on_step=stop_at(5), checkpointer=checkpointer)
    assert checkpointer.load().step == 4
    steps_seen = []
    resumed = fit(method, tokenizer=tokenizer, on_step=lambda r: steps_seen.append(r["step"]), checkpointer=checkpointer)
    assert steps_seen == [5, 6]  # finished steps are not redone
    assert resumed.state.keys() == reference.state.keys()
    for name in reference.state:
        assert torch.equal(resumed.state[name], reference.state[name]), name
    assert [r["loss"] for r in resumed.training_log] == [r["loss"] for r in reference.training_log]
