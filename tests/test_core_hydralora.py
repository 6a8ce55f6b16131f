import pytest
import torch

from baselines.hydralora import HydraLoraAdapter, HydraLoraTrainer, hydra_state_dict, inject_hydralora
from metalora.errors import MlbenchError
from metalora.methods import adapter_kinds
from metalora.training.adapters import LoraAdapter, load_adapter
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

INPUT = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
MLP = ["gate_proj", "up_proj", "down_proj"]


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def random_hydra(num_heads: int, seed: int = 3) -> HydraLoraAdapter:
    shape = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": MLP, "num_heads": num_heads}
    model = make_tiny_llama()
    inject_hydralora(model, shape)
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(t.shape, generator=generator) * 0.2 for name, t in hydra_state_dict(model).items()}
    return HydraLoraAdapter(shape, state)


def test_one_head_equals_lora_with_same_a_and_b():
    hydra = random_hydra(num_heads=1)
    # peft names: ...mlp.gate_proj.lora_A.weight (r x in), lora_B.weight (out x r)
    lora_state = {}
    for name, tensor in hydra.state.items():
        module, _, param = name.rpartition(".")
        module = module.removesuffix(".base")
        prefix = f"base_model.model.{module}"
        if param == "hydra_A":
            lora_state[f"{prefix}.lora_A.weight"] = tensor
        elif param == "hydra_B":
            lora_state[f"{prefix}.lora_B.weight"] = tensor[0]
    lora = LoraAdapter({k: hydra.config[k] for k in ("rank", "alpha", "dropout", "target_modules")}, lora_state)
    hydra_logits = logits(hydra.attach(make_tiny_llama()))
    lora_logits = logits(lora.attach(make_tiny_llama()))
    assert not torch.allclose(hydra_logits, logits(make_tiny_llama()), atol=1e-3)
    torch.testing.assert_close(hydra_logits, lora_logits, atol=1e-5, rtol=1e-5)


def test_layer_matches_per_token_formula():
    hydra = random_hydra(num_heads=3)
    model = hydra.attach(make_tiny_llama())
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    expected = torch.empty(2, 5, layer.base.out_features)
    for b in range(2):
        for t in range(5):
            token = x[b, t]
            gates = torch.softmax(layer.hydra_router @ token, dim=0)
            update = sum(gates[i] * (layer.hydra_B[i] @ (layer.hydra_A @ token)) for i in range(3))
            expected[b, t] = layer.base(token) + update * (8 / 4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_and_no_merge(tmp_path):
    hydra = random_hydra(num_heads=4)
    expected = logits(hydra.attach(make_tiny_llama()))
    hydra.save(tmp_path / "hydra")
    reloaded = load_adapter(tmp_path / "hydra", adapter_kinds())
    assert isinstance(reloaded, HydraLoraAdapter) and not reloaded.mergeable
    assert torch.equal(logits(reloaded.attach(make_tiny_llama())), expected)
    with pytest.raises(MlbenchError, match="cannot be merged"):
        reloaded.merge(make_tiny_llama())


def test_training_is_seeded_and_learns(tokenizer):
    config = TrainConfig(
        rank=8, alpha=16, dropout=0.0, budget_rule="matched_updates", steps=30, batch_size=8, lr=1e-2,
        max_seq_len=64, seed=1,
    )
    model = make_tiny_llama()
    before = logits(model)
    first = HydraLoraTrainer().fit(model, tokenizer, toy_tasks(), config)
    second = HydraLoraTrainer().fit(make_tiny_llama(), tokenizer, toy_tasks(), config)
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    # 2 layers x 3 projections x (A, B heads, router); B has the default 4 heads
    assert len(first.state) == 18
    assert first.state["model.layers.0.mlp.up_proj.hydra_B"].shape == (4, 48, 8)
    losses = [r["loss"] for r in first.training_log]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert torch.equal(logits(model), before)  # the base model comes back as it was


def test_parameters_stay_float32_under_a_bf16_base():
    """Adapter weights in float32 (small Adam steps would round to nothing in bf16); compute
    may stay in bf16: the layer's output keeps the base dtype."""
    shape = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": MLP, "num_heads": 2}
    model = make_tiny_llama(dtype=torch.bfloat16)
    inject_hydralora(model, shape)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 18 and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
    assert model(input_ids=INPUT).logits.dtype == torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero B, so every parameter gets a gradient
        for param in trainable.values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    before = {name: p.detach().clone() for name, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-5, weight_decay=0.0)
    model(input_ids=INPUT).logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad.dtype == torch.float32 for p in trainable.values())
    optimizer.step()
    for name, param in trainable.items():
        moved = (param.detach() - before[name]).abs()
        # Adam's first step moves every entry by about lr; kept in bf16 (spacing ~5e-4 at 0.1)
        # most of these steps would have rounded back to the old value
        assert moved.min() > 5e-6, name
        unchanged_in_bf16 = param.detach().bfloat16() == before[name].bfloat16()
        assert unchanged_in_bf16.float().mean() > 0.75, name


def test_one_head_equals_peft_lora_under_a_bf16_base():
    """The same numerics as peft's LoRA under bf16 (adapter branch in float32, one cast back)."""
    hydra = random_hydra(num_heads=1)
    lora_state = {}
    for name, tensor in hydra.state.items():
        module, _, param = name.rpartition(".")
        prefix = f"base_model.model.{module.removesuffix('.base')}"
        if param == "hydra_A":
            lora_state[f"{prefix}.lora_A.weight"] = tensor
        elif param == "hydra_B":
            lora_state[f"{prefix}.lora_B.weight"] = tensor[0]
    lora = LoraAdapter({k: hydra.config[k] for k in ("rank", "alpha", "dropout", "target_modules")}, lora_state)
    hydra_logits = logits(hydra.attach(make_tiny_llama(dtype=torch.bfloat16)))
    lora_logits = logits(lora.attach(make_tiny_llama(dtype=torch.bfloat16)))
    assert hydra_logits.dtype == torch.bfloat16
    torch.testing.assert_close(hydra_logits, lora_logits, atol=0, rtol=0)
