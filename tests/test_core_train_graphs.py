"""Training with the decoder's passes as CUDA graphs (``metalora/training/graphed_decoder.py``).

A CPU cannot capture a graph, so these tests put a stand-in grapher where
``torch.cuda.make_graphed_callables`` goes: like it, the stand-in runs warm-up passes (drawing
dropout masks) before handing back a callable; unlike it, the callable then runs eagerly. What they
hold is everything around the capture: which batches are graphed and when, that the graphed callable
computes exactly the decoder's hidden states, that the warm-up's random draws do not shift the run's
own dropout masks (so a fit with graphs trains the adapter a fit without them trains), and the
fallback when a capture fails. That replays equal eager passes on a GPU is measured by
``bench/train_graphs.py``.
"""

from __future__ import annotations

import pytest
import torch

from metalora.data.budgets import TaskBudget
from metalora.data.example import Example
from metalora.errors import MlbenchError
from metalora.methods import make_trainer
from metalora.training import supervised
from metalora.training.batching import collate, encode_example, row_losses
from metalora.training.config import TrainConfig
from metalora.training.graphed_decoder import (
    CAPTURE_ON_OCCURRENCE,
    DecoderGraphs,
    HiddenStates,
    decoder_graphs,
)
from tests.conftest import make_tiny_llama


class StandInGrapher:
    """Records each capture; warms up like make_graphed_callables (a forward and a backward pass in
    training mode, so dropout draws), then returns the module itself, to run eagerly."""

    def __init__(self, fail: bool = False):
        self.captures: list[tuple[tuple, tuple]] = []
        self.fail = fail

    def __call__(self, module, sample_args, pool):
        assert pool == "pool"
        self.captures.append(tuple(tuple(arg.shape) for arg in sample_args))
        outputs = module(*sample_args)
        trained = [param for param in module.parameters() if param.requires_grad]
        torch.autograd.grad(outputs, trained, grad_outputs=torch.ones_like(outputs), allow_unused=True)
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        return module


def stand_in_graphs(grapher: StandInGrapher, max_graphs: int = 128):
    def make(model, setting, gradient_checkpointing):
        from metalora.training.batching import decoder_and_head

        return DecoderGraphs(decoder_and_head(model)[0], grapher=grapher, new_pool=lambda: "pool",
                             max_graphs=max_graphs)  # fmt: skip

    return make


def toy_tasks() -> list[TaskBudget]:
    # prompts of six lengths: batches of several widths, each repeated over a fit
    def examples(t: int) -> list[Example]:
        return [Example(f"t{t}", "x" * (i % 6) + f"task {t}: ", "ab"[t % 2] * (1 + i % 2)) for i in range(12)]

    return [TaskBudget(f"t{t}", examples(t), []) for t in range(3)]


def fit(tokenizer, method: str, graphs_factory, monkeypatch, **options):
    config = TrainConfig(
        rank=4, alpha=8, dropout=0.2, budget_rule="matched_updates", steps=12, batch_size=4, lr=1e-2, seed=3,
        max_seq_len=64,
    )  # fmt: skip
    with monkeypatch.context() as patch:
        if graphs_factory is not None:
            patch.setattr(supervised, "decoder_graphs", graphs_factory)
        return make_trainer(method, options).fit(make_tiny_llama(), tokenizer, toy_tasks(), config)


@pytest.mark.parametrize("method,options", [("lora", {}), ("hydralora", {"num_heads": 2})])
def test_fit_with_graphs_trains_the_same_adapter_as_without(tokenizer, monkeypatch, method, options):
    plain = fit(tokenizer, method, None, monkeypatch, **options)
    grapher = StandInGrapher()
    graphed = fit(tokenizer, method, stand_in_graphs(grapher), monkeypatch, **options)
    summary = graphed.training_cost["cuda_graphs"]
    assert summary["shapes_graphed"] == len(grapher.captures) >= 2
    assert summary["graphed_passes"] > summary["shapes_graphed"]
    assert [r["loss"] for r in graphed.training_log] == [r["loss"] for r in plain.training_log]
    assert plain.state.keys() == graphed.state.keys()
    for name, tensor in plain.state.items():
        assert torch.equal(tensor, graphed.state[name]), name
    assert "cuda_graphs" not in plain.training_cost


def test_warm_up_draws_would_shift_the_dropout_masks(tokenizer, monkeypatch):
    """What the test above relies on: without putting the generator back, the stand-in's warm-up
    passes change the run (so equality there is not for want of dropout)."""
    from metalora.training import graphed_decoder

    class NoFork:
        def __init__(self, devices):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    plain = fit(tokenizer, "lora", None, monkeypatch)
    monkeypatch.setattr(graphed_decoder.torch.random, "fork_rng", NoFork)
    shifted = fit(tokenizer, "lora", stand_in_graphs(StandInGrapher()), monkeypatch)
    assert [r["loss"] for r in shifted.training_log] != [r["loss"] for r in plain.training_log]


def padded_batch(tokenizer, prompts: list[str]) -> dict:
    encoded = [encode_example(tokenizer, Example("t", prompt, "ab"), 64) for prompt in prompts]
    return collate(encoded, tokenizer.pad_token_id, "cpu", [0] * len(prompts))


def shapes(batch: dict) -> tuple[tuple, tuple]:
    rows, width = batch["input_ids"].shape
    return (rows, width), (rows, 1, width, width)


def run_batches(graphs, model, batches):
    for batch in batches:
        row_losses(model, batch, graphs)


def test_a_shape_is_captured_on_its_second_occurrence_and_replayed_after(tokenizer):
    model = make_tiny_llama().train()
    grapher = StandInGrapher()
    graphs = DecoderGraphs(model.model, grapher=grapher, new_pool=lambda: "pool")
    narrow, wide = padded_batch(tokenizer, ["a", "abc"]), padded_batch(tokenizer, ["a", "abcdef"])
    unpadded = padded_batch(tokenizer, ["ab", "cd"])
    run_batches(graphs, model, [narrow, wide, unpadded, narrow, unpadded, narrow, wide, narrow])
    assert CAPTURE_ON_OCCURRENCE == 2
    # narrow at its 2nd occurrence, wide at its 2nd; the unpadded batch never (transformers would
    # read its positions back, which no capture may contain)
    assert grapher.captures == [shapes(narrow), shapes(wide)]
    assert graphs.summary() == {"shapes_graphed": 2, "graphed_passes": 4}


def test_no_captures_beyond_the_limit_nor_in_eval_mode(tokenizer):
    model = make_tiny_llama().train()
    grapher = StandInGrapher()
    graphs = DecoderGraphs(model.model, grapher=grapher, new_pool=lambda: "pool", max_graphs=1)
    narrow, wide = padded_batch(tokenizer, ["a", "abc"]), padded_batch(tokenizer, ["a", "abcdef"])
    run_batches(graphs, model, [narrow, narrow, wide, wide, wide])
    assert grapher.captures == [shapes(narrow)]
    model.eval()
    other = padded_batch(tokenizer, ["a", "abcd"])
    run_batches(graphs, model, [other, other, other])
    assert grapher.captures == [shapes(narrow)]


def test_a_failed_capture_stops_the_fit_with_one_line_naming_the_way_out(tokenizer, monkeypatch):
    """A failed capture can leave the CUDA generator marked as capturing (the next eager dropout
    then fails obscurely): the fit stops at once, saying what failed and what to do instead."""
    grapher = StandInGrapher(fail=True)
    with pytest.raises(MlbenchError) as failure:
        fit(tokenizer, "lora", stand_in_graphs(grapher), monkeypatch)
    assert len(grapher.captures) == 1
    assert str(failure.value) == (
        "capturing the decoder's training pass as a CUDA graph failed (RuntimeError: operation not permitted "
        "when stream is capturing); rerun with --train-cuda-graphs off"
    )


def test_the_collector_pauses_during_a_capture_and_graphs_go_with_their_fit(tokenizer, monkeypatch):
    """A graphed module's forward refers to the module, so only the garbage collector would free
    it, perhaps while a later fit captures (destroying a graph then makes that capture fail): the
    collector is paused while capturing, and the fit's end breaks those references."""
    import gc

    collecting, graphed_modules = [], []
    grapher = StandInGrapher()

    def recording(module, sample_args, pool):
        collecting.append(gc.isenabled())
        graphed = grapher(module, sample_args, pool)
        graphed.forward = lambda *args, module=graphed: HiddenStates.forward(module, *args)  # as torch patches it
        graphed_modules.append(graphed)
        return graphed

    assert gc.isenabled()
    fit(tokenizer, "lora", stand_in_graphs(recording), monkeypatch)
    assert collecting and not any(collecting) and gc.isenabled()
    assert graphed_modules and not any("forward" in vars(module) for module in graphed_modules)


@pytest.mark.parametrize(
    "setting,checkpointing,attention",
    [("off", False, "sdpa"), ("auto", True, "sdpa"), ("auto", False, "eager"), ("auto", False, "sdpa")],
)
def test_graphs_apply_only_on_cuda_with_sdpa_and_without_checkpointing(setting, checkpointing, attention):
    model = make_tiny_llama()
    model.config._attn_implementation = attention
    # the last case is the one where graphs would apply, but this model is on the CPU
    assert decoder_graphs(model, setting, checkpointing) is None


def test_the_setting_is_validated_and_not_part_of_the_run_id():
    from metalora.errors import MlbenchError
    from metalora.runs.runconfig import TRAIN_EXECUTION_FIELDS

    assert "train_cuda_graphs" in TRAIN_EXECUTION_FIELDS
    with pytest.raises(MlbenchError, match="train_cuda_graphs must be one of auto, off, got 'on'"):
        TrainConfig(train_cuda_graphs="on").validate()
