"""MeTA-LoRA's stacked pass on packed rows (one row per task, its examples back to back, a
block-diagonal causal mask, positions restarting per example): the same losses and gradients as
the right-padded rows, with far fewer token slots."""

import pytest
import torch

from metalora.data.example import Example
from metalora.methods.meta import stacked_losses_and_grads
from metalora.training.batching import IGNORE_INDEX, collate, concat_batches, encode_example
from metalora.training.packing import pack_task_batches
from metalora.training.stacked_lora import stacked_copies
from tests.test_core_meta import lora_model, shared_params


def task_batches(tokenizer, rows=3):
    """Three tasks whose examples differ in length within and across tasks (prompts of 6 to 70
    bytes, answers of 1 to 12)."""
    batches = []
    for task, (prompt, answer) in enumerate([(6, 1), (20, 4), (50, 12)]):
        examples = [
            Example(f"t{task}", "p" * (prompt + 7 * row) + f"{task}: ", "ab"[row % 2] * (answer + row)) for row in range(rows)
        ]
        batches.append(collate([encode_example(tokenizer, example, 128) for example in examples], tokenizer.pad_token_id))
    return batches


def distinct_copies(model, tasks):
    """Stacked adapter copies that differ per task, so a row computed with another task's copy shows."""
    theta = stacked_copies(shared_params(model), tasks)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for value in theta.values():
            value.add_(torch.randn(value.shape, generator=generator) * 0.05)
    return theta


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_pass_equals_padded_pass(tokenizer, attention):
    batches = task_batches(tokenizer)
    model = lora_model()
    model.set_attn_implementation(attention)
    theta = distinct_copies(model, len(batches))
    padded_losses, padded_grads = stacked_losses_and_grads(model, theta, concat_batches(batches), len(batches))
    packed_losses, packed_grads = stacked_losses_and_grads(model, theta, pack_task_batches(batches), len(batches))
    torch.testing.assert_close(packed_losses, padded_losses, atol=0, rtol=1e-6)
    for packed, padded in zip(packed_grads, padded_grads):
        torch.testing.assert_close(packed, padded, atol=1e-7, rtol=1e-5)
    assert min(grad.abs().max().item() for grad in padded_grads) > 1e-3  # the comparison has teeth
    assert len(set(padded_losses.tolist())) == 3


def test_packing_removes_padding(tokenizer):
    batches = task_batches(tokenizer)
    packed = pack_task_batches(batches)
    lengths = [list(batch["counts"].lengths) for batch in batches]
    totals = [sum(task) for task in lengths]
    real = sum(totals)
    padded_slots = len(batches) * 3 * max(max(task) for task in lengths)
    assert packed["input_ids"].shape == (3, max(totals))
    assert packed["input_ids"].numel() == real + sum(max(totals) - total for total in totals)  # padding only at row ends
    assert packed["input_ids"].numel() < padded_slots
    assert packed["counts"].tokens == real and packed["counts"].lengths == tuple(totals)
    for task, (batch, task_lengths) in enumerate(zip(batches, lengths)):
        offset = 0
        for row, length in enumerate(task_lengths):
            span = slice(offset, offset + length)
            assert torch.equal(packed["input_ids"][task, span], batch["input_ids"][row, :length])
            assert packed["position_ids"][task, span].tolist() == list(range(length))
            assert packed["segments"][task, span].tolist() == [row] * length
            expected = batch["labels"][row, :length].clone()
            expected[0] = IGNORE_INDEX  # never predicted from the previous example's last token
            assert torch.equal(packed["labels"][task, span], expected)
            offset += length
        assert packed["segments"][task, offset:].tolist() == [-1] * (max(totals) - offset)
    # the target positions are the collated ones, moved with their examples
    rows, cols = packed["target_rows"], packed["target_cols"]
    merged = concat_batches(batches)
    assert torch.equal(packed["labels"][rows, cols + 1], merged["labels"][merged["target_rows"], merged["target_cols"] + 1])
    assert len(rows) == packed["counts"].targets == sum(batch["counts"].targets for batch in batches)


def test_packed_mask_is_block_diagonal_causal(tokenizer):
    from metalora.training.packing import packed_inputs

    packed = pack_task_batches(task_batches(tokenizer, rows=2))
    mask = packed_inputs(packed, "sdpa", torch.float32)["attention_mask"]
    segments = packed["segments"]
    for task in range(3):
        for query in range(segments.shape[1]):
            keys = mask[task, 0, query].nonzero().flatten().tolist()
            same = [key for key in range(query + 1) if segments[task, key] == segments[task, query]]
            assert keys == same and keys  # every row sees itself (padding too: no fully masked row)
    with pytest.raises(ValueError, match="packed batches need attention taking a 4D mask"):
        packed_inputs(packed, "flash_attention_2", torch.float32)


def test_examples_of_equal_length_stay_padded_rows(tokenizer):
    """Packing would save no token slot and square the attention's length: the padded rows."""
    batches = []
    for task in range(2):
        examples = [Example(f"t{task}", f"task {task} item {row}: ", "ab") for row in range(3)]
        batches.append(collate([encode_example(tokenizer, example, 64) for example in examples], tokenizer.pad_token_id))
    packed = pack_task_batches(batches)
    assert "segments" not in packed and packed["input_ids"].shape == (6, batches[0]["input_ids"].shape[1])
    assert torch.equal(packed["input_ids"], torch.cat([batch["input_ids"] for batch in batches]))
