"""From examples to training batches: tokenization, padding, the loss and what a batch counts.

Prompt and target are tokenized separately and concatenated, with any trailing whitespace of the
prompt moved onto the target (lm-eval splits context and continuation the same way), so the loss
covers exactly the target tokens the evaluation will score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metalora.data.example import Example
from metalora.training.weighting import IGNORE_INDEX, combine_row_losses, group_sums, token_losses


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def split_trailing_space(prompt: str, target: str) -> tuple[str, str]:
    stripped = prompt.rstrip()
    return stripped, prompt[len(stripped) :] + target


def encode_example(tokenizer, example: Example, max_seq_len: int) -> Encoded:
    """Token ids and labels (-100 on the prompt); the prompt is cut from the left if too long."""
    prompt, target = split_trailing_space(example.prompt, example.target)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target_ids = target_ids + [tokenizer.eos_token_id]
    target_ids = target_ids[:max_seq_len]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(target_ids) - max_seq_len) :]
    return Encoded(
        input_ids=tuple(prompt_ids + target_ids),
        labels=tuple([IGNORE_INDEX] * len(prompt_ids) + target_ids),
    )


@dataclass(frozen=True)
class BatchCounts:
    """What a batch counts, known on the host when it is collated (no device-to-host copy later):
    tokens one pass processes (prompts and targets, no padding), target tokens the loss covers
    (the first token is never a target: nothing predicts it), each row's task id and each row's
    length without padding (what packing rows together needs)."""

    tokens: int
    targets: int
    task_ids: tuple[int, ...]
    lengths: tuple[int, ...] = ()


def collate(
    batch: Sequence[Encoded],
    pad_token_id: int,
    device: str | torch.device = "cpu",
    task_ids: Sequence[int] | None = None,
) -> dict:
    """Right-pad a list of encoded examples into tensors; ``task_ids`` (one per example; default:
    all one task) say which task each row belongs to, for the loss weighting. Besides the model's
    inputs the batch holds where its targets are (``target_rows``/``target_cols``: the positions
    whose next token is a target), each row's task group (``task_groups``: its rank among the
    distinct task ids) and its ``counts``, all built on the host and moved to ``device`` at once."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols = [], []
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
        targets = [position - 1 for position in range(1, length) if item.labels[position] != IGNORE_INDEX]
        rows += [row] * len(targets)
        cols += targets
    tasks = tuple(task_ids) if task_ids is not None else (0,) * len(batch)
    rank = {task: index for index, task in enumerate(sorted(set(tasks)))}
    lengths = tuple(len(item.input_ids) for item in batch)
    counts = BatchCounts(sum(lengths), len(rows), tasks, lengths)
    tensors = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "task_ids": torch.tensor(tasks, dtype=torch.long),
        "task_groups": torch.tensor([rank[task] for task in tasks], dtype=torch.long),
        "target_rows": torch.tensor(rows, dtype=torch.long),
        "target_cols": torch.tensor(cols, dtype=torch.long),
    }
    return tensors_to_device(tensors, device) | {"counts": counts}


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``. To a GPU through pinned memory without blocking: a
    copy from pageable memory first waits for every kernel queued on the device."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def tensors_to_device(tensors: dict[str, torch.Tensor], device: str | torch.device) -> dict[str, torch.Tensor]:
    """Host tensors of one dtype on ``device`` in one host-to-device copy (each copy waits for the
    device), as views of that one flat tensor, under the same keys."""
    flat = to_device(torch.cat([tensor.reshape(-1) for tensor in tensors.values()]), device)
    parts = flat.split([tensor.numel() for tensor in tensors.values()])
    return {key: part.view(tensor.shape) for (key, tensor), part in zip(tensors.items(), parts)}


PADDED = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}  # right pads: no real token sees them


def concat_batches(batches: Sequence[dict]) -> dict:
    """Collated batches as one, rows in order, right-padded to the longest width (pads: id 0,
    mask 0, label -100; under causal attention right pads change no real token's logits). All on
    the device, without a copy to the host."""
    width = max(batch["input_ids"].shape[1] for batch in batches)
    merged = {
        key: torch.cat([torch.nn.functional.pad(b[key], (0, width - b[key].shape[1]), value=fill) for b in batches])
        for key, fill in PADDED.items()
    }
    if not all("counts" in batch for batch in batches):  # batches not built by collate
        merged["task_ids"] = torch.cat([batch["task_ids"] for batch in batches])
        return merged
    offsets = [0]
    for batch in batches[:-1]:
        offsets.append(offsets[-1] + batch["input_ids"].shape[0])
    merged["target_rows"] = torch.cat([batch["target_rows"] + offset for batch, offset in zip(batches, offsets)])
    merged["target_cols"] = torch.cat([batch["target_cols"] for batch in batches])
    merged["task_ids"] = torch.cat([batch["task_ids"] for batch in batches])
    counts = [batch["counts"] for batch in batches]
    tasks = tuple(task for count in counts for task in count.task_ids)
    if len(set(tasks)) == 1:  # one task throughout (MeTA-LoRA's sets): its group is 0 everywhere
        merged["task_groups"] = torch.cat([batch["task_groups"] for batch in batches])
    lengths = tuple(length for count in counts for length in count.lengths)
    merged["counts"] = BatchCounts(sum(c.tokens for c in counts), sum(c.targets for c in counts), tasks, lengths)
    return merged


def merge_batches(first: dict, second: dict) -> dict:
    """Two collated batches as one (``concat_batches``)."""
    return concat_batches([first, second])


def batch_tokens(batch: dict) -> int:
    """Tokens one pass over the batch processes (prompts and targets, no padding)."""
    if "counts" in batch:
        return batch["counts"].tokens
    return int(batch["attention_mask"].sum().item())


def target_tokens(batch: dict) -> int:
    """Target tokens the loss covers (the first token is never a target: nothing predicts it)."""
    if "counts" in batch:
        return batch["counts"].targets
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum().item())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, computed in at least float32."""
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    shifted_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def batch_loss(model, batch: dict, weighting: str = "task", graphs=None) -> torch.Tensor:
    """The batch's loss under ``weighting`` (``metalora.training.weighting``): by default the mean
    over each task's target tokens, then over the tasks of the batch. One task: the token mean.
    ``graphs``: the fit's ``DecoderGraphs`` (``metalora.training.graphed_decoder``), or None."""
    groups = batch.get("task_groups")
    count = len(set(batch["counts"].task_ids)) if groups is not None else None
    return combine_row_losses(*row_losses(model, batch, graphs), batch.get("task_ids"), weighting, groups, count)


# Model types whose causal-LM forward is exactly ``lm_head(decoder(...).last_hidden_state)``: no
# logit scaling or soft-capping after the head (as Gemma 2 and Cohere have). Others get full logits.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})


def decoder_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder (hidden states) and output head of a transformers causal LM, under a peft
    wrapper too; None for anything else (a callable, another architecture)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    return base.get_decoder(), base.get_output_embeddings()


def model_inputs(model, batch: dict) -> dict:
    """The model's inputs for ``batch``. Under SDPA attention, for a collated batch, the attention
    mask is the one transformers would build (none without padding; else the boolean causal and
    padding mask, (rows, 1, length, length)), built from what the host knows: given a 2D mask,
    transformers reads it back to decide whether it can drop it, a wait for the device in every
    forward pass. (Without padding transformers still reads the positions back once, to look for
    packed sequences; real batches of mixed lengths almost always have padding.) A packed batch
    (``metalora.training.packing``) gets its block-diagonal causal mask and its position ids."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    implementation = attention_implementation(model)
    if "segments" in batch:
        from metalora.training.packing import packed_inputs  # packing builds on this module

        return packed_inputs(batch, implementation, getattr(base, "dtype", torch.float32))
    sdpa = implementation == "sdpa"
    if not sdpa or "counts" not in batch:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    rows, width = batch["input_ids"].shape
    if batch["counts"].tokens == rows * width:  # no padding: transformers drops an all-ones mask too
        return {"input_ids": batch["input_ids"]}
    causal = torch.ones(width, width, dtype=torch.bool, device=batch["input_ids"].device).tril()
    mask = causal[None, None, :, :] & batch["attention_mask"].bool()[:, None, None, :]
    return {"input_ids": batch["input_ids"], "attention_mask": mask}


def attention_implementation(model) -> str | None:
    """The attention kernels a transformers model (under a peft wrapper too) was loaded with
    (``sdpa``, ``eager`` ...); None for anything else."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(base, "config", None), "_attn_implementation", None)


def row_losses(model, batch: dict, graphs=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token cross-entropy over target tokens, and per-row target counts,
    computed in at least float32.

    The output head and the log-softmax run only at positions whose next token is a target
    (prompts are masked and answers short), not over the whole vocabulary at every position of the
    padded batch: the same losses (tests compare them with the full logits), a fraction of the
    logits' memory ((rows, length, vocab) float32 before). With ``graphs`` (a ``DecoderGraphs``),
    a padded batch's decoder pass may replay a CUDA graph of the same kernels."""
    parts = decoder_and_head(model)
    if parts is None:
        return token_losses(model(**model_inputs(model, batch)).logits, batch["labels"])
    decoder, head = parts
    labels = batch["labels"]
    if "target_rows" in batch:
        rows, cols = batch["target_rows"], batch["target_cols"]
    else:  # a batch not built by collate: find the targets on the device
        rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    inputs = model_inputs(model, batch)
    mask = inputs.get("attention_mask")
    if graphs is not None and set(inputs) == {"input_ids", "attention_mask"} and mask.dim() == 4:
        hidden = graphs.hidden(inputs["input_ids"], mask)
    else:
        hidden = decoder(**inputs, use_cache=False).last_hidden_state
    logits = head(hidden[rows, cols])
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    losses = torch.nn.functional.cross_entropy(logits, labels[rows, cols + 1], reduction="none")
    return group_sums(losses, rows, labels.shape[0])
