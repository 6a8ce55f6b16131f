"""Several tasks' examples packed into one row per task, without padding between examples.

MeTA-LoRA's stacked pass (``metalora.training.stacked_lora``) runs every task's rows at once; right-
padded to the longest example of any task, most of its token slots would be padding (answers and
prompts of a few tens of tokens beside a few of hundreds). Packed, task t's examples lie one after
another in row t, and the rows are padded only to the longest task's total. Each example computes
exactly what it computes alone:

- attention: a block-diagonal causal mask, a token sees only earlier tokens of its own example
  (padding after the last example forms a block of its own, so no query row is fully masked: a
  fully masked row gives NaN in SDPA, and NaN times a zero gradient is still NaN in the backward);
- positions: the position ids restart at 0 for each example (rotary embeddings see what they see
  alone);
- loss: the target positions move with their example (the label after an example's last token is
  the next example's first token, never a target: its label is -100 as well), so each row's loss
  sum and target count are the task's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metalora.training.batching import BatchCounts, concat_batches, tensors_to_device
from metalora.training.weighting import IGNORE_INDEX

# Attention implementations taking a 4D mask as given: SDPA a boolean one, eager an additive one.
MASK_FORMS = ("sdpa", "eager")


def pack_task_batches(batches: Sequence[dict]) -> dict:
    """Collated batches (one per task, equally many rows each) as one batch of one packed row per
    task: input ids, labels, target positions and each position's example (``segments``, -1 on
    padding) and position id. Built on the device from the collated tensors and what the host knows
    of their lengths (``BatchCounts.lengths``): one host-to-device copy, no read back. Where packing
    would hold as many token slots as right-padding (every example as long as the longest), the
    right-padded rows (``concat_batches``) instead."""
    rows = {batch["input_ids"].shape[0] for batch in batches}
    if len(rows) != 1:
        raise ValueError(f"the stacked inner loop needs equally many rows per task, got {sorted(rows)}")
    per_task = rows.pop()
    merged = concat_batches(batches)
    lengths = merged["counts"].lengths if "counts" in merged else ()
    if not lengths:  # batches not built by collate: their lengths from the device
        lengths = tuple(merged["attention_mask"].sum(1).tolist())
    tasks, width = len(batches), merged["input_ids"].shape[1]
    packed = max(sum(lengths[t * per_task : (t + 1) * per_task]) for t in range(tasks))
    if packed >= per_task * width:  # nothing to gain (examples of equal length): keep the padded rows,
        return merged  # whose attention covers per_task * width**2 scores, not (per_task * width)**2
    pad_slot = tasks * per_task * width  # one slot past the flattened batch: the pad value
    index = torch.full((tasks, packed), pad_slot, dtype=torch.long)
    segments = torch.full((tasks, packed), -1, dtype=torch.long)
    positions = torch.zeros((tasks, packed), dtype=torch.long)
    starts = torch.zeros((tasks, packed), dtype=torch.long)  # 1 where an example starts
    offsets = torch.zeros(tasks * per_task, dtype=torch.long)  # each collated row's start in its packed row
    for task in range(tasks):
        offset = 0
        for example in range(per_task):
            row = task * per_task + example
            length = lengths[row]
            index[task, offset : offset + length] = row * width + torch.arange(length)
            segments[task, offset : offset + length] = example
            positions[task, offset : offset + length] = torch.arange(length)
            if length:
                starts[task, offset] = 1
            offsets[row] = offset
            offset += length
        positions[task, offset:] = torch.arange(packed - offset)
    host = {"index": index, "segments": segments, "positions": positions, "starts": starts, "offsets": offsets}
    on_device = tensors_to_device(host, merged["input_ids"].device)
    index = on_device["index"]

    def gather(tensor: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.cat([tensor.reshape(-1), tensor.new_full((1,), fill)])[index]

    labels = gather(merged["labels"], IGNORE_INDEX).masked_fill(on_device["starts"].bool(), IGNORE_INDEX)
    result = {
        "input_ids": gather(merged["input_ids"], 0),
        "labels": labels,
        "attention_mask": (on_device["segments"] >= 0).long(),
        "segments": on_device["segments"],
        "position_ids": on_device["positions"],
        "task_ids": merged["task_ids"][::per_task],
    }
    if "target_rows" in merged:
        target_rows = merged["target_rows"]
        result["target_rows"] = target_rows // per_task
        result["target_cols"] = merged["target_cols"] + on_device["offsets"][target_rows]
    if "counts" in merged:
        counts = merged["counts"]
        packed_lengths = tuple(sum(lengths[t * per_task : (t + 1) * per_task]) for t in range(tasks))
        result["counts"] = BatchCounts(counts.tokens, counts.targets, counts.task_ids[::per_task], packed_lengths)
    return result


def packed_inputs(batch: dict, implementation: str | None, dtype: torch.dtype) -> dict:
    """The model's inputs for a packed batch: its block-diagonal causal mask (rows, 1, length,
    length), which transformers uses as given, in the form ``implementation`` takes, and its
    position ids."""
    if implementation not in MASK_FORMS:
        raise ValueError(
            f"packed batches need attention taking a 4D mask ({' or '.join(MASK_FORMS)}), not {implementation!r}"
        )
    segments = batch["segments"]
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    mask = (segments[:, None, :, None] == segments[:, None, None, :]) & causal
    if implementation == "eager":  # added to the scores, as transformers' own eager mask
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": batch["position_ids"]}
