"""The decoding steps of a stock-shaped generation chunk on fixed buffers, replayed as one CUDA graph.

Why: on a GPU a decoding step of a small model is host-bound. transformers runs every layer's
Python for one token per row (about 25 ms a step for SmolLM2-135M or Qwen2.5-Coder-1.5B at batch
64, ``bench/eval_profile.py``), while the GPU's work is a few milliseconds. A CUDA graph records a
step's kernels once and replays them without the host.

What must not change is any number: stock shapes exist to give lm-eval HFLM's generations
(``eval_tasks/greedy.py``). A graph needs fixed addresses, so the key/value cache cannot grow by
one column a step as HF's ``DynamicCache`` does. Here every layer's keys and values live in one
buffer of the chunk's prompt width plus its new tokens (rounded up, so consecutive chunks share a
graph), written one column a step; the columns not yet written are masked. Every kernel of the step
is the one HF's step runs, on the same shapes, except attention, which sees more key columns. With
a mask, PyTorch's scaled-dot-product attention takes its memory-efficient kernel, which walks the
keys block by block with a running maximum and sum: a block whose keys are all masked adds exactly
zero and rescales by exactly one, so the extra columns change no bit. That argument is why this is
used only where HF passes a mask too (a chunk with padding; without padding HF may pass none, and
SDPA then takes the flash kernel), and only with SDPA attention on CUDA. That no bit changes is
measured, not assumed: ``bench/eval_speed.py`` compares these generations with stock HFLM's and
with the eager stock-shaped path's on the GPU.

A model whose forward cannot be captured (host syncs, a cache it does not accept) fails on the
first step, before anything of this module is used: the caller then decodes that chunk and every
later one eagerly, as without graphs.

On a CPU ``capture=False`` runs the same buffers eagerly: the tests hold their tokens to the
growing cache's on tiny models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

# Buffer widths are rounded up to this many columns, so that consecutive chunks (HFLM sorts prompts
# by length) reuse one graph instead of capturing their own; masked columns cost a little attention.
WIDTH_STEP = 128

log = logging.getLogger(__name__)


class StaticKV:
    """The key/value cache a model writes one column a step: fixed per-layer buffers
    ``[rows, heads, width, dim]``, written at ``column`` (a one-element device tensor, so that a
    captured step writes where the replay is, not where the capture was)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], column: torch.Tensor) -> None:
        self.keys, self.values, self.column = keys, values, column

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, self.column, key_states)
        values.index_copy_(2, self.column, value_states)
        return keys, values


class _Buffers:
    """Everything a captured step reads or writes, at fixed addresses."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], rows: int, width: int) -> None:
        device = layers[0][0].device

        def buffer(like: torch.Tensor) -> torch.Tensor:
            return like.new_zeros((rows, like.shape[1], width, like.shape[3]))

        self.kv = StaticKV([buffer(k) for k, _ in layers], [buffer(v) for _, v in layers],
                           torch.zeros(1, dtype=torch.long, device=device))  # fmt: skip
        # SDPA's boolean mask as HF builds it for one query: [rows, 1, 1, keys], True where attended.
        self.mask = torch.zeros((rows, 1, 1, width), dtype=torch.bool, device=device)
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.key = self.signature(layers, rows, width)

    @staticmethod
    def signature(layers, rows: int, width: int) -> tuple:
        return rows, width, tuple((tuple(k.shape[1::2]), k.dtype, tuple(v.shape[1::2]), v.dtype) for k, v in layers)

    def load(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, positions: torch.Tensor) -> None:
        """A chunk's prefilled cache (``mask``: [rows, columns] of its real tokens) and its next positions."""
        columns = mask.shape[1]
        for buffer, source in zip(self.kv.keys + self.kv.values, [k for k, _ in layers] + [v for _, v in layers],
                                  strict=True):  # fmt: skip
            buffer.zero_()
            buffer[:, :, :columns].copy_(source)
        self.mask.zero_()
        self.mask[:, 0, 0, :columns].copy_(mask.bool())
        self.positions.copy_(positions[:, None])
        self.kv.column.fill_(columns)


class StepGraphs:
    """Decoding steps of static chunks on fixed buffers (module docstring). ``start(...)`` loads a
    prefilled chunk and returns its step function: the next greedy tokens in, the next logits out.
    One graph (and one set of buffers) is kept at a time; a chunk of another shape replaces it."""

    def __init__(self, forward: Callable[..., object], capture: bool = True) -> None:
        self.forward = forward
        self.capture = capture
        self.failed: str | None = None  # why capturing failed; no graph is tried again
        self._buffers: _Buffers | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits: torch.Tensor | None = None
        self._proven = False  # a step has run on these buffers' kind without failing

    def release(self) -> None:
        """Free the buffers and the graph's memory (a benchmark's generation is done; the next one,
        or a sweep worker's next run, captures its own). What ``failed`` says is kept."""
        self._buffers, self._graph, self._logits = None, None, None

    @property
    def usable(self) -> bool:
        return self.failed is None

    def start(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, positions: torch.Tensor,
              steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``layers``: the chunk's prefilled (keys, values) per layer; ``steps``: the most decoding
        steps it can take."""
        rows, columns = mask.shape
        width = math.ceil((columns + steps) / WIDTH_STEP) * WIDTH_STEP
        if self._buffers is None or self._buffers.key != _Buffers.signature(layers, rows, width):
            self.release()  # the old graph's memory first
            self._buffers = _Buffers(layers, rows, width)
        self._buffers.load(layers, mask, positions)
        return self._step

    def _body(self) -> torch.Tensor:
        """One step: the new column attended, the model's forward, the positions moved on."""
        buffers = self._buffers
        buffers.mask.index_fill_(3, buffers.kv.column, True)
        logits = self.forward(buffers.ids, attention_mask=buffers.mask, position_ids=buffers.positions,
                              past_key_values=buffers.kv).logits[:, -1]  # fmt: skip
        buffers.positions.add_(1)
        buffers.kv.column.add_(1)
        return logits

    def _step(self, fed: torch.Tensor) -> torch.Tensor:
        self._buffers.ids.copy_(fed[:, None])
        if self._graph is not None:
            self._graph.replay()
            return self._logits
        if not self.capture and self._proven:
            return self._body()
        try:
            logits = self._first_step()
        except Exception as error:  # any model whose forward cannot run or be captured this way
            self.failed = f"{type(error).__name__}: {error}".splitlines()[0]
            self.release()
            log.warning("decoding steps as CUDA graphs: not for this model (%s); decoding eagerly", self.failed)
            raise GraphUnavailable(self.failed) from error
        self._proven = True
        return logits

    def _first_step(self) -> torch.Tensor:
        """The first step of a new graph. It runs eagerly on a side stream (lazy initialisations
        must not happen while capturing) and is a real step; the capture after it records the same
        kernels without running them, so the buffers stay at the second step."""
        if not self.capture:
            return self._body()
        with torch.cuda.device(self._buffers.mask.device):  # the model's GPU, whichever is current
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                logits = self._body()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits = self._body()
        self._graph = graph
        return logits


class GraphUnavailable(RuntimeError):
    """This model's decoding step could not run on fixed buffers or be captured (``StepGraphs.failed``)."""
