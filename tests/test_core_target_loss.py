"""The loss computed at target positions only (output head and log-softmax where the next token is
a target) against the full-logits loss at every position: same losses and gradients in float32,
for a single batch and for whole training runs of LoRA, HydraLoRA and MeTA-LoRA."""

import pytest
import torch

from metalora.data.example import Example
from metalora.methods import make_trainer
from metalora.training import batching
from metalora.training.adapters import LoraAdapter
from metalora.training.batching import batch_loss, collate, encode_example, row_losses
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

SHAPE = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["gate_proj", "up_proj", "down_proj", "q_proj"]}


def full_logits(monkeypatch):
    """Every loss as before the target-only head: the model's full logits, given the 2D mask."""
    monkeypatch.setattr(batching, "decoder_and_head", lambda model: None)
    packed = batching.model_inputs  # a packed batch's mask and positions are its meaning, not an optimisation

    def plain(model, batch):
        if "segments" in batch:
            return packed(model, batch)
        return {key: batch[key] for key in ("input_ids", "attention_mask")}

    monkeypatch.setattr(batching, "model_inputs", plain)


def randomized(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def lora_model():
    return randomized(LoraAdapter(SHAPE, {}).attach(make_tiny_llama()))


def hydra_model():
    from baselines.hydralora import inject_hydralora

    model = make_tiny_llama()
    inject_hydralora(model, SHAPE | {"num_heads": 3})
    return randomized(model)


def mixed_batch(tokenizer):
    """Rows of three tasks with prompts and answers of different lengths, in mixed order."""
    rows = [(task, example) for task, budget in enumerate(toy_tasks(2, per_task=3)) for example in budget.examples]
    rows += [(2, Example("long", f"a longer prompt {i}: ", "answer " * (i + 1))) for i in range(3)]
    order = [0, 6, 3, 1, 7, 4, 8, 2, 5]
    picked = [rows[index] for index in order]
    return collate(
        [encode_example(tokenizer, example, 96) for _, example in picked], tokenizer.pad_token_id, "cpu",
        [task for task, _ in picked],
    )  # fmt: skip


def loss_and_grads(model, batch, weighting):
    params = [param for param in model.parameters() if param.requires_grad]
    loss = batch_loss(model, batch, weighting)
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("weighting", ["task", "token"])
@pytest.mark.parametrize("build", [lora_model, hydra_model], ids=["lora", "hydralora"])
def test_target_only_loss_equals_full_logits(tokenizer, monkeypatch, build, weighting):
    batch = mixed_batch(tokenizer)
    model = build()
    head = next(module for name, module in model.named_modules() if name.endswith("lm_head"))
    seen = []
    head.register_forward_hook(lambda module, args, out: seen.append(args[0].dim()))
    fast, fast_grads = loss_and_grads(model, batch, weighting)
    with monkeypatch.context() as patch:
        full_logits(patch)
        full, full_grads = loss_and_grads(model, batch, weighting)
    assert seen == [2, 3]  # target positions only, then every position: two routes compared
    torch.testing.assert_close(fast, full, atol=0, rtol=1e-6)
    for got, expected in zip(fast_grads, full_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)
    assert full.item() > 0 and max(grad.abs().max().item() for grad in full_grads) > 1e-3


def test_the_head_sees_only_target_positions(tokenizer):
    """The output head runs on one hidden state per target token, not on every padded position."""
    batch = mixed_batch(tokenizer)
    model = lora_model()
    seen = []
    handle = model.get_base_model().lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    try:
        sums, counts = row_losses(model, batch)
    finally:
        handle.remove()
    targets = int((batch["labels"][:, 1:] != -100).sum())
    assert seen == [torch.Size([targets, 32])]
    assert batch["counts"].targets == targets and counts.tolist() == (batch["labels"][:, 1:] != -100).sum(1).tolist()
    # a batch without the collated target positions finds them itself: the same numbers
    bare = {key: batch[key] for key in ("input_ids", "attention_mask", "labels", "task_ids")}
    bare_sums, bare_counts = row_losses(model, bare)
    assert torch.equal(bare_sums, sums) and torch.equal(bare_counts, counts)


CASES = {
    "lora": {},
    "hydralora": {"num_heads": 2},
    "metalora": {"inner_steps": 2, "support_size": 3, "query_size": 2},
    "metalora:stacked": {"inner_steps": 2, "support_size": 3, "query_size": 2, "inner_loop": "stacked"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_with_target_only_loss_equals_full_logits(tokenizer, monkeypatch, case):
    """Six updates of every method: the same adapter and the same logged losses."""
    config = TrainConfig(
        rank=4, alpha=8, dropout=0.0, budget_rule="matched_updates", steps=6, batch_size=4, lr=1e-2, seed=2,
        max_seq_len=64,
    )  # fmt: skip

    def train():
        trainer = make_trainer(case.partition(":")[0], CASES[case])
        return trainer.fit(make_tiny_llama(), tokenizer, toy_tasks(3, per_task=5), config)

    fast = train()
    with monkeypatch.context() as patch:
        full_logits(patch)
        full = train()
    assert set(fast.state) == set(full.state)
    for name, value in full.state.items():
        torch.testing.assert_close(fast.state[name], value, atol=1e-6, rtol=1e-5)
    for key in ("loss", "examples", "tokens"):
        assert [r[key] for r in fast.training_log] == pytest.approx([r[key] for r in full.training_log], rel=1e-6)
