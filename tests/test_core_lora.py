import torch

from baselines.lora import LoraTrainer
from metalora.methods import adapter_kinds
from metalora.training.adapters import LoraAdapter, load_adapter
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

INPUT = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def random_lora(model, seed=1):
    """A LoRA adapter with non-zero A and B, so merging has something to merge."""
    shape = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["gate_proj", "up_proj", "down_proj"]}
    peft_model = LoraAdapter(shape, {}).attach(model)
    generator = torch.Generator().manual_seed(seed)
    from peft import get_peft_model_state_dict

    state = {
        name: torch.randn(tensor.shape, generator=generator) * 0.1
        for name, tensor in get_peft_model_state_dict(peft_model).items()
    }
    peft_model.unload()
    return LoraAdapter(shape, state)


def test_merged_equals_unmerged_logits():
    adapter = random_lora(make_tiny_llama())
    live = logits(adapter.attach(make_tiny_llama()))
    merged_model = adapter.merge(make_tiny_llama())
    merged = logits(merged_model)
    base = logits(make_tiny_llama())
    assert not torch.allclose(live, base, atol=1e-3)  # the adapter really changes the model
    assert not any("lora" in name for name, _ in merged_model.named_parameters())
    # fp32, float reassociation only: W x + s B A x vs (W + s B A) x.
    torch.testing.assert_close(merged, live, atol=1e-5, rtol=1e-5)


def test_saved_adapter_reloads_bit_for_bit(tmp_path):
    adapter = random_lora(make_tiny_llama())
    expected = logits(adapter.attach(make_tiny_llama()))
    adapter.save(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter.json", "adapter.safetensors"]
    reloaded = load_adapter(tmp_path / "adapter", adapter_kinds())
    assert isinstance(reloaded, LoraAdapter)
    assert torch.equal(logits(reloaded.attach(make_tiny_llama())), expected)


def test_same_seed_same_adapter_and_base_untouched(tokenizer):
    config = TrainConfig(
        rank=4, alpha=8, budget_rule="matched_updates", steps=3, batch_size=4, lr=1e-2, seed=7, max_seq_len=64
    )
    first_model = make_tiny_llama()
    before = logits(first_model)
    first = LoraTrainer().fit(first_model, tokenizer, toy_tasks(per_task=4), config)
    second = LoraTrainer().fit(make_tiny_llama(), tokenizer, toy_tasks(per_task=4), config)
    other = LoraTrainer().fit(make_tiny_llama(), tokenizer, toy_tasks(per_task=4), TrainConfig(**{**config.__dict__, "seed": 8}))
    assert first.state.keys() == second.state.keys()
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert any(not torch.equal(first.state[k], other.state[k]) for k in first.state)
    # 2 layers x 3 MLP projections x (A, B)
    assert len(first.state) == 12
    assert [record["step"] for record in first.training_log] == [1, 2, 3]
    assert torch.equal(logits(first_model), before)
    assert not any("lora" in name for name, _ in first_model.named_parameters())
    assert all(param.requires_grad for param in first_model.parameters())


def test_lora_training_lowers_the_loss(tokenizer):
    config = TrainConfig(
        rank=8, alpha=16, dropout=0.0, budget_rule="matched_updates", steps=30, batch_size=8, lr=1e-2, max_seq_len=64
    )
    adapter = LoraTrainer().fit(make_tiny_llama(), tokenizer, toy_tasks(), config)
    losses = [record["loss"] for record in adapter.training_log]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
