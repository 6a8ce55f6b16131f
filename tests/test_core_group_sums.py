"""``group_sums``: the training loss's per-row and per-task sums, without ``index_add``'s float
atomics (whose order, on a GPU, changes the last bit from run to run)."""

import torch

from metalora.data.example import Example
from metalora.training import batching
from metalora.training.batching import collate, encode_example, row_losses
from metalora.training.weighting import combine_row_losses, group_sums
from tests.conftest import make_tiny_llama


def test_sums_and_counts_per_group_exactly():
    # halves and quarters add exactly in any order, so the sums are known to the bit
    values = torch.tensor([0.5, 1.25, -2.0, 4.0, 0.75, 3.5])
    groups = torch.tensor([2, 0, 2, 1, 0, 2])
    sums, counts = group_sums(values, groups, 4)
    assert sums.tolist() == [2.0, 4.0, 2.0, 0.0]  # group 3 has no values: 0, not NaN
    assert counts.tolist() == [2, 1, 3, 0] and counts.dtype == torch.long
    integer_sums, _ = group_sums(torch.tensor([3, 4, 5]), torch.tensor([1, 1, 0]), 2)
    assert integer_sums.tolist() == [5, 7] and integer_sums.dtype == torch.long


def test_agrees_with_index_add_and_its_gradient_is_exact():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(500, generator=generator, dtype=torch.float64, requires_grad=True)
    groups = torch.randint(0, 7, (500,), generator=generator)
    sums, _ = group_sums(values, groups, 7)
    reference = torch.zeros(7, dtype=torch.float64).index_add(0, groups, values.detach())
    assert torch.allclose(sums, reference, rtol=0, atol=1e-12)
    upstream = torch.randn(7, generator=generator, dtype=torch.float64)
    (sums * upstream).sum().backward()
    assert torch.equal(values.grad, upstream[groups])  # each value gets its own group's gradient, bit for bit


def test_a_nan_stays_in_its_own_group():
    sums, _ = group_sums(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([0, 1, 0]), 2)
    assert sums[0].item() == 3.0 and torch.isnan(sums[1])


def test_the_training_loss_adds_no_floats_with_index_add(tokenizer, monkeypatch):
    """The loss path never reaches index_add (nondeterministic on a GPU), for rows or for tasks."""
    def refuse(*args, **kwargs):
        raise AssertionError("index_add in the training loss")

    monkeypatch.setattr(torch.Tensor, "index_add", refuse)
    monkeypatch.setattr(torch.Tensor, "index_add_", refuse)
    model = make_tiny_llama()
    examples = [Example("toy", f"Question {i}: {'long ' * i}?", f" answer {i}") for i in range(4)]
    encoded = [encode_example(tokenizer, example, 64) for example in examples]
    batch = collate(encoded, tokenizer.pad_token_id, "cpu", task_ids=[0, 1, 0, 1])
    sums, counts = row_losses(model, batch)
    # a row's targets: its labels other than -100 after the first position (nothing predicts that)
    assert counts.tolist() == [sum(label != -100 for label in item.labels[1:]) for item in encoded]
    assert sums.shape == (4,) and bool((sums > 0).all())
    loss = batching.batch_loss(model, batch)
    manual = combine_row_losses(sums, counts, batch["task_ids"])
    assert torch.equal(loss, manual) and torch.isfinite(loss)
