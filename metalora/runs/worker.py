"""What one worker process keeps across the runs it executes: the loaded base model and the built
evaluation tasks.

A sweep worker runs many runs on one model. Loading the model (seconds to minutes for a GGUF
conversion or a large model) and building lm-eval's tasks and requests (minutes for MMLU) are the
same for every run, so a ``Worker`` does both once: each run attaches its adapter to the same base
model, trains or evaluates, and takes the adapter out again (``Adapter.detach``; training already
gives the model back as it came).

Reuse must never change a number, so the pool checks it: it takes an exact integer checksum of
every weight and buffer right after loading and again before lending the model to the next run;
if anything changed the base in place, the model is loaded afresh (and the reload counted) instead
of being reused. Tests compare runs executed one after another in one worker with each run done
alone, metric by metric and item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from metalora.models import LoadedModel, load_model


def weights_checksum(model: torch.nn.Module) -> tuple[int, ...]:
    """Per tensor, two wrapping int64 sums of its raw bits: plain, and weighted by position.

    Computed where the tensor lives (no copy to the host): a single changed element always
    changes the plain sum, and a permutation changes the weighted one. It detects accidental
    in-place changes; it is not a cryptographic hash.
    """
    sums = []
    with torch.no_grad():
        for _, tensor in sorted([*model.named_parameters(), *model.named_buffers()], key=lambda item: item[0]):
            flat = tensor.detach().reshape(-1)
            bits = _as_integers(flat).to(torch.int64)
            positions = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64)
            sums += [bits.sum(), (bits * positions).sum()]
    return tuple(int(value) for value in torch.stack(sums).tolist()) if sums else ()


_INTEGER_VIEWS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def _as_integers(flat: torch.Tensor) -> torch.Tensor:
    if not flat.is_floating_point() and not flat.is_complex():
        return flat
    return flat.contiguous().view(_INTEGER_VIEWS[flat.element_size()])


@dataclass(frozen=True)
class ModelKey:
    """Which loaded model a run needs: the weights (by hash), dtype and device."""

    identity: str
    dtype: str
    device: str


@dataclass
class ModelPool:
    """At most one loaded base model, lent to run after run while the key stays the same."""

    reuse: bool = True
    loader: Callable[..., LoadedModel] | None = None  # None: metalora.models.load_model
    loads: int = 0  # models loaded, first loads and reloads
    reloads_after_change: int = 0  # reloads because a run left the base weights changed (a bug)
    _key: ModelKey | None = field(default=None, repr=False)
    _loaded: LoadedModel | None = field(default=None, repr=False)
    _checksum: tuple[int, ...] = field(default=(), repr=False)

    def get(self, name: str, key: ModelKey) -> tuple[LoadedModel, bool]:
        """The loaded model for ``key`` and whether it was reused (already in memory, verified)."""
        if self.reuse and self._loaded is not None and self._key == key:
            if weights_checksum(self._loaded.model) == self._checksum:
                return self._loaded, True
            self.reloads_after_change += 1
        self.release()
        loaded = (self.loader or load_model)(name, dtype=key.dtype, device=key.device)
        self.loads += 1
        if self.reuse:
            self._key, self._loaded, self._checksum = key, loaded, weights_checksum(loaded.model)
        return loaded, False

    def release(self) -> None:
        """Forget the kept model (after a failed run, or before loading another)."""
        self._key, self._loaded, self._checksum = None, None, ()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class Worker:
    """Everything one worker process shares between its runs."""

    reuse_model: bool = True
    models: ModelPool = field(default=None)  # type: ignore[assignment]
    task_cache: object = field(default=None)  # eval_tasks.task_cache.TaskCache

    def __post_init__(self) -> None:
        from eval_tasks.task_cache import TaskCache

        if self.models is None:
            self.models = ModelPool(reuse=self.reuse_model)
        if self.task_cache is None:
            self.task_cache = TaskCache()
