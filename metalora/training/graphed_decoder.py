"""A training step's decoder forward and backward replayed as CUDA graphs, one pair per batch shape.

Why: on a GPU a training step of a small model is bound by the host. A LoRA step on SmolLM2-135M
launches about 5,000 kernels, about 30 µs of Python and dispatch each, while the GPU is busy for a
fraction of the step (``bench/train_profile.py``; Qwen2.5-Coder-1.5B, 11 times the parameters,
takes 1.2 times as long). A CUDA graph records the kernels of the decoder's forward and of its
backward once and replays them with one host call each.

What must not change is any number: a run trained with graphs must be the run trained without.
So nothing is padded or reshaped for the graphs' sake: a graph is captured for a batch shape
(rows, width) the step really has, runs the kernels the eager pass runs on those shapes, and is
used only for later batches of exactly that shape. Dropout draws from the same generator state as
the eager pass would (a graph replay takes its random offsets from the generator, as an eager
kernel does), and the generator is put back after each capture, in case warm-up passes drew from
it. Whether the adapters come out bit for bit the same is measured on the GPU, not assumed
(``bench/train_graphs.py``): on an H200 they did, for LoRA and HydraLoRA on SmolLM2-135M (README).

Which part is graphed: the decoder, from token ids and the boolean attention mask to the last
hidden states (``torch.cuda.make_graphed_callables``, which captures the forward and the backward
with respect to the trained parameters). The output head and the loss run eagerly at the target
positions (``metalora.training.batching.row_losses``): their shapes follow each batch's number of
targets, which rarely repeats, and they are a few dozen kernels.

When a shape is graphed: on its second occurrence (a width seen once would pay a capture for
nothing; real 50-shot batches of 8 have about 60 widths in 1,000 updates, most of them repeated).
Batches without padding are left eager: transformers then reads the position ids back to look for
packed sequences, a host read a capture cannot contain. All graphs draw on one memory pool. That is
safe because a graph's forward is always followed by its own backward before any other graph runs,
so no two graphs' intermediate tensors are ever alive together, and what outlives a replay (the
hidden states, the gradients) is held by its graph and never returned to the pool.

Two things a capture must not meet. Python's garbage collector, running in the middle of a capture,
may free an earlier fit's graphs (a graphed module refers to itself, so only the collector frees
it), and destroying a graph is not allowed while one is being captured: the capture fails. So the
collector is paused during each capture, and ``release()`` (at the end of ``graphed_training``'s
block) breaks those self-references, so a fit's graphs go when it ends. And a failed capture can leave
the CUDA generator marked as capturing, after which the next eager dropout fails too; so a failed
capture stops the fit with one line that names the way out (``--train-cuda-graphs off``), rather
than falling back and failing later, somewhere less clear. A killed fit resumes from its last
checkpoint.
"""

from __future__ import annotations

import gc
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from metalora.errors import MlbenchError

CAPTURE_ON_OCCURRENCE = 2  # graph a shape when it comes for the second time
MAX_GRAPHS = 128  # beyond this many shapes a fit stays eager (each graph holds its own gradients)
# make_graphed_callables' eager passes before a capture, there to keep lazy initialisation out of
# the graph; a shape captured here has already run eagerly once, so none are needed. Measured on
# the H200 (bench/train_graphs.py, README): with none, LoRA's 300 updates took x1.89 less time than
# eagerly, with one x1.48 less and 1.55 GiB more peak memory; the adapters were identical either way.
WARMUP_PASSES = 0

# (module, static sample args, memory pool) -> the graphed callable; torch.cuda.make_graphed_callables
# on a GPU, something else in tests on a CPU.
Grapher = Callable[[nn.Module, tuple, object], Callable]


class HiddenStates(nn.Module):
    """The decoder as one callable of tensors: token ids and the 4D boolean attention mask in,
    last hidden states out (what ``make_graphed_callables`` can capture). Its parameters are the
    decoder's, so the captured backward computes the trained ones' gradients."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def cuda_grapher(module: nn.Module, sample_args: tuple, pool) -> Callable:
    # WARMUP_PASSES read at call time, so that bench/train_graphs.py --warmup-passes can vary it
    return torch.cuda.make_graphed_callables(module, sample_args, num_warmup_iters=WARMUP_PASSES, pool=pool)


class DecoderGraphs:
    """The graphs of one fit's decoder, by batch shape; ``hidden(input_ids, mask)`` is the
    decoder's last hidden states, from a graph where one is captured, else eagerly."""

    def __init__(self, decoder: nn.Module, grapher: Grapher = cuda_grapher, new_pool: Callable[[], object] | None = None,
                 max_graphs: int = MAX_GRAPHS):
        self.decoder = decoder
        self.eager = HiddenStates(decoder)  # the pass a shape gets before (or without) its graph
        self.grapher = grapher
        self.new_pool = new_pool if new_pool is not None else torch.cuda.graph_pool_handle
        self.max_graphs = max_graphs
        self.pool = None
        self.graphed: dict[tuple, Callable] = {}
        self.seen: Counter = Counter()
        self.captures = 0
        self.replays = 0

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        key = (tuple(input_ids.shape), tuple(attention_mask.shape), attention_mask.dtype, input_ids.device)
        graphed = self.graphed.get(key)
        if graphed is None and self._capture_now(key):
            graphed = self._capture(key, input_ids, attention_mask)
        if graphed is None:
            return self.eager(input_ids, attention_mask)
        self.replays += 1
        return graphed(input_ids, attention_mask)

    def summary(self) -> dict:
        """What the graphs did in this fit (``cost.json``'s training record)."""
        return {"shapes_graphed": self.captures, "graphed_passes": self.replays}

    def release(self) -> None:
        """Drop the graphs now: a graphed module's forward refers to the module, so without this
        only the garbage collector would free them, perhaps in the middle of a later capture."""
        for graphed in self.graphed.values():
            graphed.__dict__.pop("forward", None)
        self.graphed.clear()

    def _capture_now(self, key: tuple) -> bool:
        self.seen[key] += 1
        return (
            self.decoder.training  # graphs hold the training-mode forward (dropout on)
            and self.seen[key] >= CAPTURE_ON_OCCURRENCE
            and self.captures < self.max_graphs
        )

    def _capture(self, key: tuple, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Callable:
        static = (input_ids.clone(), attention_mask.clone())  # the graph's own inputs, copied into per replay
        if self.pool is None:
            self.pool = self.new_pool()
        devices = [input_ids.device] if input_ids.device.type == "cuda" else []
        # Warm-up passes (WARMUP_PASSES) would draw dropout masks, and a capture registers the generator:
        # the generators go back to where they were, so the replay below draws what the eager pass would.
        with torch.random.fork_rng(devices=devices), _collector_paused():
            try:
                graphed = self.grapher(HiddenStates(self.decoder), static, self.pool)
            except Exception as error:
                reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                raise MlbenchError(
                    f"capturing the decoder's training pass as a CUDA graph failed ({reason}); "
                    "rerun with --train-cuda-graphs off"
                ) from error
        self.graphed[key] = graphed
        self.captures += 1
        return graphed


# PyTorch warns, once, that the captured backward's gradients come from a stream other than the one
# the parameters' gradient accumulators were made on (the capture runs on a side stream), which "may
# cost a synchronization". It is the graphs' own doing, and the gradients are the eager ones. It comes
# from the backward passes that replay a graph (on the H200 a filter around the capture alone did not
# silence it), so ``graphed_training`` filters it over the whole fit, captures included.
ACCUMULATE_GRAD_STREAM_WARNING = "The AccumulateGrad node's stream does not match"


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def graphed_training(graphs: DecoderGraphs | None) -> Iterator[None]:
    """The block of a fit that uses ``graphs``: its backward passes without the stream warning
    above, and the graphs released at its end."""
    if graphs is None:
        yield
        return
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ACCUMULATE_GRAD_STREAM_WARNING)
            yield
    finally:
        graphs.release()


def decoder_graphs(model: nn.Module, setting: str, gradient_checkpointing: bool) -> DecoderGraphs | None:
    """The graphs for training ``model`` under ``setting`` (``TrainConfig.train_cuda_graphs``), or
    None where they do not apply: setting off, not on CUDA, attention other than SDPA (the graph
    gets the SDPA mask ``model_inputs`` builds), a model whose head is not plain, or activation
    checkpointing (its recomputation saves and restores generator states on the host)."""
    from metalora.training.batching import attention_implementation, decoder_and_head

    if setting != "auto" or gradient_checkpointing:
        return None
    parts = decoder_and_head(model)
    if parts is None:
        return None
    decoder = parts[0]
    if attention_implementation(model) != "sdpa":
        return None
    if next(decoder.parameters()).device.type != "cuda":
        return None
    return DecoderGraphs(decoder)
