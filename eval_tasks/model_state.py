"""Getting a caller's model ready for evaluation, and giving it back as it came.

- Evaluation mode for the duration (dropout off), the previous mode restored afterwards.
- A peft LoRA model is merged for the duration when asked (one matmul per layer instead of three)
  and unmerged afterwards. Unmerging subtracts the same update, which leaves the weights off by
  floating-point rounding, so the merged base weights are copied before the merge and copied back
  bit for bit afterwards: a worker that keeps its base model across runs (``metalora.runs.worker``)
  hands the next run exactly the weights it loaded. Adapters that cannot be merged (HydraLoRA's
  input-dependent router, or anything that is not a peft LoRA) run live.
- The tokenizer's padding side (lm-eval changes it) is restored.

``model_fingerprint`` keys lm-eval's response cache: a hash of every parameter and buffer (the base
model and any adapter, merged or not) and of the tokenizer's vocabulary, so two different adapters
can never share cached answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def is_mergeable_lora(model: object) -> bool:
    try:
        from peft import PeftModel, PeftType
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft is a dependency, but a bare model needs none of it
        return False
    if not isinstance(model, PeftModel):
        return False
    adapters = model.active_adapters
    if not adapters or any(model.peft_config[name].peft_type != PeftType.LORA for name in adapters):
        return False
    # Already merged by the caller: nothing to do, and unmerging afterwards would be wrong.
    return not any(layer.merged for layer in model.modules() if isinstance(layer, BaseTunerLayer))


@contextmanager
def evaluation_state(model, tokenizer, *, merge_lora: bool) -> Iterator[bool]:
    """Eval mode (and LoRA merged where possible) inside the block; yields whether it merged."""
    was_training = model.training
    padding_side = getattr(tokenizer, "padding_side", None)
    merged = merge_lora and is_mergeable_lora(model)
    originals = _base_weights(model) if merged else []
    if merged:
        model.merge_adapter()
    model.eval()
    try:
        yield merged
    finally:
        if merged:
            model.unmerge_adapter()
            with torch.no_grad():
                for weight, original in originals:
                    weight.copy_(original)
        model.train(was_training)
        if padding_side is not None:
            tokenizer.padding_side = padding_side


def _base_weights(model) -> list:
    """(live tensor, copy) of every weight and bias a LoRA merge writes into."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    copies = []
    for layer in model.modules():
        if isinstance(layer, BaseTunerLayer):
            base = layer.get_base_layer()
            for tensor in (getattr(base, "weight", None), getattr(base, "bias", None)):
                if isinstance(tensor, torch.Tensor):
                    copies.append((tensor, tensor.detach().clone()))
    return copies


def model_fingerprint(model, tokenizer) -> str:
    """sha256 over the model's class, parameters, buffers and the tokenizer's vocabulary."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1).contiguous().cpu()
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    vocabulary = sorted(tokenizer.get_vocab().items())
    digest.update(type(tokenizer).__qualname__.encode())
    digest.update(json.dumps(vocabulary, ensure_ascii=False).encode())
    return digest.hexdigest()
