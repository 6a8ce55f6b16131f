"""Stock-shaped decoding steps on fixed key/value buffers (eval_tasks/step_graphs.py) give the texts
of HF's growing cache. On a CPU the buffers run eagerly (``capture=False``); the CUDA graph replay
of the same steps is compared with stock HFLM on the GPU by ``bench/eval_speed.py``."""

from __future__ import annotations

import pytest

from tests import test_eval_fastlm
from tests.helpers import tiny_llama
from tests.test_eval_fastlm import _generation_requests, _lms

# The SmolLM2 tokenizer, the tiny model sized to it and lm-eval's task manager: test_eval_fastlm's fixtures.
tokenizer, model, manager = test_eval_fastlm.tokenizer, test_eval_fastlm.model, test_eval_fastlm.manager


def _with_buffers(fast, forward=None):
    """``fast`` (stock shapes) decoding on fixed buffers, eagerly; returns the count of buffer steps."""
    from eval_tasks.step_graphs import StepGraphs

    fast.stock_shapes = True
    graphs = StepGraphs(forward or fast._forward, capture=False)
    steps = []
    body = graphs._body
    graphs._body = lambda: (steps.append(1), body())[1]
    fast.step_graphs = graphs
    return steps


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_steps_on_fixed_buffers_give_the_growing_caches_texts(model, tokenizer, manager, batch_size):
    """Real BBH and MGSM prompts plus short ones that stop early, in chunks of 4 and 16 (with
    padding: on buffers, widths rounded up to 128 columns) and of 1 (no padding: HF may pass no mask,
    so those chunks decode as before): HFLM's texts either way."""
    requests = _generation_requests(manager)
    stock, fast = _lms(model, tokenizer, batch_size)
    steps = _with_buffers(fast)
    assert fast.generate_until(requests) == stock.generate_until(requests, disable_tqdm=True)
    # Every chunk of 4 or 16 has padding here; a chunk of one has none.
    assert (len(steps) > 0) == (batch_size > 1)
    assert fast.step_graphs.failed is None
    assert fast.step_graphs._buffers is None  # freed once the call is done


def test_buffers_are_reused_by_a_chunk_of_the_same_shape_and_reloaded(model, tokenizer):
    """Two chunks whose widths round to the same buffer: the second reuses the first's buffers
    (a CUDA graph is kept with them) and must not see the first chunk's keys."""
    from lm_eval.api.instance import Instance

    contexts = ["Once upon a time there was", "Hi there", "The weather today is", "A"]
    requests = [Instance("generate_until", {}, (c, {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 9}), 0)
                for c in contexts]  # fmt: skip
    stock, fast = _lms(model, tokenizer, 2)
    _with_buffers(fast)
    made = []
    start = fast.step_graphs.start

    def counting_start(*args, **kwargs):
        before = fast.step_graphs._buffers
        step = start(*args, **kwargs)
        made.append(fast.step_graphs._buffers is not before)
        return step

    fast.step_graphs.start = counting_start
    assert fast.generate_until(requests) == stock.generate_until(requests, disable_tqdm=True)
    assert made == [True, False]


def test_a_model_whose_step_cannot_run_on_buffers_decodes_eagerly(model, tokenizer, manager):
    """A forward that refuses the fixed buffers (as one that cannot be captured would fail): the
    first step says so, that chunk and every later one decode with HF's growing cache, the same
    texts, and the reason is kept."""
    from eval_tasks.step_graphs import StaticKV

    requests = _generation_requests(manager)
    stock, fast = _lms(model, tokenizer, 4)

    def refusing(input_ids, **kwargs):
        if isinstance(kwargs.get("past_key_values"), StaticKV):
            raise RuntimeError("operation not permitted when stream is capturing")  # noqa: TRY004
        return fast._forward(input_ids, **kwargs)

    steps = _with_buffers(fast, refusing)
    assert fast.generate_until(requests) == stock.generate_until(requests, disable_tqdm=True)
    assert len(steps) == 1 and fast.step_graphs.failed == "RuntimeError: operation not permitted when stream is capturing"


def test_graphs_are_asked_for_only_where_no_number_can_change(model, tokenizer):
    """CUDA, stock shapes, SDPA attention, no autocast; elsewhere FastLM decodes as before."""
    from eval_tasks.fastlm import FastLM

    assert FastLM(model, tokenizer, 4, stock_shapes=True, cuda_graphs=True).step_graphs is None  # a CPU


def test_a_step_on_fixed_buffers_computes_the_growing_caches_logits(model, tokenizer):
    """Logits, not just argmaxes, step by step from one padded prefill: the same to float32
    rounding, positions, mask and written columns included (the texts above could hide a small
    difference a random tiny model's argmax does not show)."""
    import torch

    from eval_tasks.fastlm import FastLM
    from eval_tasks.greedy import GreedyDecoder, _layers
    from eval_tasks.step_graphs import StepGraphs

    fast = FastLM(model, tokenizer, 3)
    prompts = [tokenizer.encode(text) for text in ["Once upon a time there was", "Hi there", "The weather"]]
    decoder = GreedyDecoder(fast._forward, tokenizer, fast._pad_id, 3, fast.device, static=True)
    growing = decoder._prefill(prompts, range(3))
    fixed = decoder._prefill(prompts, range(3))
    assert not bool(fixed.mask.all())
    step = StepGraphs(fast._forward, capture=False).start(_layers(fixed.cache), fixed.mask, fixed.positions, 6)
    fed = growing.logits.argmax(dim=-1)
    for _ in range(6):
        growing = decoder._step(growing, fed)
        logits = step(fed)
        torch.testing.assert_close(logits, growing.logits, rtol=0, atol=1e-5)
        fed = torch.tensor([7, 11, 13]) + fed % 5  # any tokens: the two paths are fed the same


def _adapted(kind: str, tokenizer):
    """A tiny model as evaluation sees it: plain (LoRA merged), peft LoRA unmerged, or HydraLoRA (never merged)."""
    from baselines.hydralora import inject_hydralora
    from metalora.training.config import TrainConfig
    from metalora.training.lora import new_lora_model

    model = tiny_llama(tokenizer)
    if kind == "lora":
        model = new_lora_model(model, TrainConfig(rank=2, dropout=0.0))
    elif kind == "hydralora":
        inject_hydralora(model, {"target_modules": ["q_proj", "v_proj", "down_proj"], "rank": 2, "alpha": 4.0,
                                 "dropout": 0.0, "num_heads": 2})  # fmt: skip
    return model.eval()


@pytest.mark.parametrize("kind", ["plain", "lora", "hydralora"])
def test_a_step_on_fixed_buffers_reads_nothing_back_to_the_host(monkeypatch, tokenizer, kind):
    """What a CUDA graph cannot capture is a value read back to the host (a synchronisation): a
    decoding step on the buffers makes none, for each way evaluation runs a model, so capturing
    fails on none of them for that reason (on a CPU the same Python runs as on a GPU)."""
    import torch

    from eval_tasks.fastlm import FastLM
    from eval_tasks.greedy import GreedyDecoder, _layers
    from eval_tasks.step_graphs import StepGraphs

    model = _adapted(kind, tokenizer)
    fast = FastLM(model, tokenizer, 2)
    prompts = [tokenizer.encode(text) for text in ["Once upon a time there was", "Hi there"]]
    decoder = GreedyDecoder(fast._forward, tokenizer, fast._pad_id, 2, fast.device, static=True)
    batch = decoder._prefill(prompts, range(2))
    graphs = StepGraphs(fast._forward, capture=False)
    step = graphs.start(_layers(batch.cache), batch.mask, batch.positions, 5)
    fed = batch.logits.argmax(dim=-1)
    fed = step(fed).argmax(dim=-1)  # the first step (lazy initialisations may read)
    reads = []

    def counting(original, name):
        def read(*args, **kwargs):
            reads.append(name)
            return original(*args, **kwargs)

        return read

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero"):
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name), name))
        for name in ("unique", "any", "all"):
            patch.setattr(torch, name, counting(getattr(torch, name), name))
        for _ in range(3):
            fed = step(fed).argmax(dim=-1)
    assert reads == [] and graphs.failed is None
