"""Training waits for the device once per update: every value read back to the host (``item``,
``tolist``, ``bool``/``int``/``float`` of a tensor, ``nonzero``, ``unique``) is counted, and one more
update costs exactly one read. On a GPU each read is a synchronisation that drains the queue of
small kernels these tiny batches are made of."""

import traceback

import pytest
import torch

from metalora.data.budgets import TaskBudget
from metalora.data.example import Example
from metalora.methods import make_trainer
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero")
CASES = {
    "lora": {},
    "dora": {},  # its decoder passes are captured as CUDA graphs too, which allow no read at all
    "hydralora": {"num_heads": 2},
    "metalora": {"inner_steps": 2, "support_size": 2, "query_size": 2},
    "metalora:stacked": {"inner_steps": 2, "support_size": 2, "query_size": 2, "inner_loop": "stacked"},
    "metalora:phase2_only": {"support_size": 2, "query_size": 2, "variant": "phase2_only"},
}


def reads_during_fit(monkeypatch, tokenizer, case: str, steps: int) -> int:
    count = [0]

    def counting(original):
        def read(*args, **kwargs):
            # AdamW keeps its step counters on the host (not capturable, not fused): no device wait
            if not any("torch/optim/" in frame.filename for frame in traceback.extract_stack(limit=4)):
                count[0] += 1
            return original(*args, **kwargs)

        return read

    config = TrainConfig(
        rank=4, alpha=8, dropout=0.0, budget_rule="matched_updates", steps=steps, batch_size=4, lr=1e-2, seed=2,
        max_seq_len=64,
    )  # fmt: skip
    trainer = make_trainer(case.partition(":")[0], CASES[case])
    model = make_tiny_llama()
    # a task's examples all of different lengths, so its sets are padded as real ones almost always
    # are (without padding transformers itself checks the positions for packed sequences: one read)
    tasks = [
        TaskBudget(f"t{t}", [Example(f"t{t}", "x" * i + f"task {t}: ", "a") for i in range(4)], []) for t in range(3)
    ]
    with monkeypatch.context() as patch:
        for name in READS:
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        patch.setattr(torch, "unique", counting(torch.unique))
        trainer.fit(model, tokenizer, tasks, config)
    return count[0]


@pytest.mark.parametrize("case", list(CASES))
def test_one_host_read_per_update(monkeypatch, tokenizer, case):
    assert reads_during_fit(monkeypatch, tokenizer, case, 8) - reads_during_fit(monkeypatch, tokenizer, case, 4) == 4
