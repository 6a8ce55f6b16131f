"""A run interrupted after a checkpoint and resumed gives the same adapter, bit for bit (CPU)."""

import pytest
import torch

from metalora.checkpoint import FolderCheckpointer
from metalora.config import TrainConfig
from metalora.trainer import make_trainer
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks


class Interrupt(Exception):
    pass


def stop_at(step):
    def callback(record):
        if record["step"] == step:
            raise Interrupt()

    return callback


@pytest.mark.parametrize(
    ("method", "options"),
    [("lora", {}), ("hydralora", {"num_heads": 2}), ("metalora", {"inner_steps": 2, "support_size": 4, "query_size": 4})],
)
def test_resume_matches_uninterrupted(tmp_path, tokenizer, method, options):
    # dropout on: the resumed run must also restore torch's RNG stream exactly
    config = TrainConfig(rank=4, alpha=8, dropout=0.1, steps=6, batch_size=4, lr=1e-2, seed=2, max_seq_len=64)
    reference = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, toy_tasks(), config)

    checkpointer = FolderCheckpointer(tmp_path / "ckpt", every=2)
    with pytest.raises(Interrupt):
        make_trainer(method, options).fit(make_tiny_llama(), tokenizer, toy_tasks(), config, stop_at(5), checkpointer)
    assert checkpointer.load().step == 4
    steps_seen = []
    resumed = make_trainer(method, options).fit(
        make_tiny_llama(), tokenizer, toy_tasks(), config, lambda r: steps_seen.append(r["step"]), checkpointer
    )
    assert steps_seen == [5, 6]  # finished steps are not redone
    assert resumed.state.keys() == reference.state.keys()
    for name in reference.state:
        assert torch.equal(resumed.state[name], reference.state[name]), name
    assert [r["loss"] for r in resumed.training_log] == [r["loss"] for r in reference.training_log]
