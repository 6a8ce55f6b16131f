"""Activation checkpointing for training, and a parameter swap that checkpointing can recompute.

``activation_checkpointing(model, enabled)`` turns on transformers' per-layer checkpointing for the
duration of a fit and off again afterwards (a worker keeps its model across runs): each decoder
layer keeps only its input in the forward pass and recomputes the rest in the backward pass, about
a third more compute for a fraction of the activation memory. The recomputation runs the same
operations on the same inputs, so losses and gradients do not change (tests compare them bit for
bit on CPU). It uses PyTorch's non-reentrant checkpoint, which needs no input that requires grad,
so transformers' hook that marks the embedding output as requiring grad is taken off again (that
hook also breaks ``torch.func.vmap``).

``swapped_parameters(model, params)`` puts tensors in place of some parameters for as long as the
block lasts. ``torch.func.functional_call`` swaps them only during the forward call; a checkpointed
layer recomputes its forward during the backward pass, after ``functional_call`` has put the
model's own parameters back, and so would differentiate the wrong weights. MeTA-LoRA's inner loop
therefore keeps the adapted weights in place through both the forward and the gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch


def _transformers_model(model: torch.nn.Module):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def activation_checkpointing(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Per-layer activation checkpointing inside the block (training mode only, as transformers
    applies it); nothing changes when ``enabled`` is false."""
    if not enabled:
        yield
        return
    base = _transformers_model(model)
    enable = getattr(base, "activation_checkpointing_enable", None)
    disable = getattr(base, "activation_checkpointing_disable", None)
    if enable is None:  # transformers before 5.2x
        enable = lambda activation_checkpointing_kwargs: base.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=activation_checkpointing_kwargs
        )
        disable = base.gradient_checkpointing_disable
    enable(activation_checkpointing_kwargs={"use_reentrant": False})
    base.disable_input_require_grads()  # not needed by the non-reentrant checkpoint; breaks vmap
    try:
        yield
    finally:
        disable()
        base.disable_input_require_grads()


@contextmanager
def swapped_parameters(model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> Iterator[torch.nn.Module]:
    """``model`` computing with ``params`` (name -> tensor, names as ``named_parameters`` gives
    them) in place of those parameters until the block ends, backward passes included."""
    originals = []
    try:
        for name, value in params.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            originals.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = value  # a plain tensor where a Parameter was, as functional_call does
        yield model
    finally:
        for owner, leaf, original in reversed(originals):
            owner._parameters[leaf] = original
