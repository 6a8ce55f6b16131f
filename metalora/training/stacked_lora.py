"""Several tasks' LoRA adapters in one ordinary forward/backward pass (MeTA-LoRA's stacked inner loop).

Multi-LoRA serving systems (S-LoRA, punica) run one batch whose rows belong to different adapters:
the frozen base layer runs once over every row, and each row gets its own adapter's update through
batched matmuls. Here the rows of task t are its own block of ``rows`` consecutive rows, every task
has the same number of rows and one padded width (``metalora.training.packing``: one packed row per
task), so a layer input ``x`` of shape
(tasks * rows, length, in) reshapes to (tasks, rows * length, in) and task t's update is

    x_t @ A_t^T @ B_t^T * scaling        (A_t: (r, in), B_t: (out, r), stacked as (tasks, r, in) ...)

one ``torch.bmm`` pair for all tasks. It is added where peft's LoRA ``Linear`` adds its own update
(after the base layer, the adapter branch in the adapter's dtype, the sum cast back to the base
output's dtype), so each task's rows see exactly the model task t's adapter alone would give them.
No vmap: fused attention and its backward, the attention mask and activation checkpointing work as
in any forward pass. Checkpointing recomputes a layer's forward in the backward pass; the stacked
weights stay in place until the block ends, so the backward must run inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _Site:
    """One peft LoRA ``Linear`` and the names of its A and B weights among the trained parameters."""

    module: nn.Module
    a: str
    b: str
    scaling: float
    dropout: nn.Module


def lora_sites(model: nn.Module, names: Sequence[str], adapter: str = "default") -> list[_Site]:
    """The LoRA layers behind the trained parameters ``names``; every name must be one of their
    plain (not DoRA) A or B weights, or the stacked pass would silently leave it out."""
    sites, covered = [], set()
    for module_name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict) or adapter not in lora_a or not isinstance(lora_a[adapter], nn.Linear):
            continue
        if adapter in getattr(module, "lora_variant", {}):
            raise ValueError(f"the stacked inner loop supports plain LoRA only; {module_name} uses a variant (DoRA?)")
        prefix = f"{module_name}." if module_name else ""
        a, b = f"{prefix}lora_A.{adapter}.weight", f"{prefix}lora_B.{adapter}.weight"
        sites.append(_Site(module, a, b, float(module.scaling[adapter]), module.lora_dropout[adapter]))
        covered.update((a, b))
    missing = [name for name in names if name not in covered]
    if missing:
        raise ValueError(
            f"the stacked inner loop covers the A and B weights of LoRA linear layers only, not {missing[0]}"
        )
    return sites


@contextmanager
def stacked_adapters(model: nn.Module, params: Mapping[str, torch.Tensor], tasks: int) -> Iterator[nn.Module]:
    """``model`` computing each task's rows with its own adapter until the block ends (backward
    passes included): ``params`` maps each LoRA A/B weight name to a (tasks, *shape) tensor, and
    the batch's rows are ``tasks`` equal consecutive blocks, one per task."""
    sites = lora_sites(model, list(params))
    handles, disabled = [], []
    try:
        for site in sites:
            disabled.append((site.module, site.module._disable_adapters))
            site.module._disable_adapters = True  # the layer's forward is its base layer alone ...
            handles.append(site.module.register_forward_hook(_add_task_updates(site, params, tasks)))  # ... plus this
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in disabled:
            module._disable_adapters = flag


def _add_task_updates(site: _Site, params: Mapping[str, torch.Tensor], tasks: int):
    a, b = params[site.a], params[site.b]  # (tasks, r, in), (tasks, out, r)

    def hook(module, args, output):
        x = args[0].to(a.dtype)
        hidden = site.dropout(x).reshape(tasks, -1, x.shape[-1])
        update = torch.bmm(torch.bmm(hidden, a.transpose(1, 2)), b.transpose(1, 2))
        return (output + update.reshape(output.shape) * site.scaling).to(output.dtype)

    return hook


def stacked_copies(shared: Mapping[str, torch.Tensor], tasks: int) -> dict[str, torch.Tensor]:
    """``tasks`` detached copies of each shared tensor on a new leading dimension, as fresh leaves."""
    return {
        name: value.detach().unsqueeze(0).expand(tasks, *value.shape).clone().requires_grad_()
        for name, value in shared.items()
    }
