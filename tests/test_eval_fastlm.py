"""FastLM gives stock HFLM's answers: per-request log-likelihoods (float32 rounding) and is_greedy
on real benchmark requests, identical greedy generations, on a tiny random-init Llama with
SmolLM2's real tokenizer; and the harness's fast backend reports what the stock one reports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eval_tasks.dataroot import task_metadata
from eval_tasks.registry import EVAL_TASKS_DIR
from tests.helpers import smollm2_tokenizer, tiny_llama

TOLERANCE = 1e-4  # float32: the same sums over differently shaped batches


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def manager(data_root):
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=str(EVAL_TASKS_DIR), include_defaults=False, metadata=task_metadata(data_root)
    )


def _requests(manager, tasks: dict[str, int]) -> list:
    """Real requests, built by lm-eval from the project's tasks: {task: number of documents}."""
    logging.disable(logging.WARNING)
    try:
        loaded = manager.load(list(tasks))["tasks"]
    finally:
        logging.disable(logging.NOTSET)
    requests = []
    for name, task in loaded.items():
        task.build_all_requests(limit=tasks[name], rank=0, world_size=1)
        requests += task.instances
    return requests


def _lms(model, tokenizer, batch_size, **options):
    from lm_eval.models.huggingface import HFLM

    from eval_tasks.fastlm import FastLM

    return (HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **options),
            FastLM(model, tokenizer, batch_size, **options))  # fmt: skip


def _assert_same_loglikelihoods(stock: list, fast: list) -> None:
    assert len(fast) == len(stock)
    for (stock_value, stock_greedy), (fast_value, fast_greedy) in zip(stock, fast, strict=True):
        assert abs(fast_value - stock_value) <= TOLERANCE * max(1.0, abs(stock_value))
        assert fast_greedy == stock_greedy


# MMLU: one-token options sharing a context; BBH-MC: multi-token options ("(A)".. and label sets)
# after a 3-shot prompt; XWinograd: a different context per option, the same continuation.
LOGLIKELIHOOD_TASKS = {
    "mlbench_mmlu_anatomy": 5,
    "mlbench_mmlu_5shot_college_physics": 2,
    "mlbench_bbh_mc_date_understanding": 3,
    "mlbench_bbh_mc_sports_understanding": 3,
    "mlbench_xwinograd_en": 3,
}


@pytest.fixture(scope="module")
def loglikelihood_requests(manager):
    return _requests(manager, LOGLIKELIHOOD_TASKS)


@pytest.mark.parametrize("batch_size", [1, 16])
def test_loglikelihoods_equal_stock_hflm_on_benchmark_requests(
    model, tokenizer, loglikelihood_requests, batch_size
):
    requests = loglikelihood_requests
    assert len(requests) == 5 * 4 + 2 * 4 + 3 * 6 + 3 * 2 + 3 * 2
    stock, fast = _lms(model, tokenizer, batch_size)
    _assert_same_loglikelihoods(stock.loglikelihood(requests), fast.loglikelihood(requests))


def test_loglikelihoods_equal_stock_when_inputs_are_left_truncated(model, tokenizer, manager):
    # A 64-token window cuts every BBH prompt; prefixes then differ per option, as in HFLM.
    requests = _requests(manager, {"mlbench_bbh_mc_date_understanding": 2, "mlbench_mmlu_anatomy": 2})
    stock, fast = _lms(model, tokenizer, 4, max_length=64)
    _assert_same_loglikelihoods(stock.loglikelihood(requests), fast.loglikelihood(requests))


def _recorded_calls(model, work) -> list[tuple]:
    """(input ids, attention mask, position ids) of every forward ``work`` makes, in order."""

    calls = []

    def record(module, args, kwargs):
        inputs = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(None if value is None else value.clone().long()
                           for value in (inputs, kwargs.get("attention_mask"), kwargs.get("position_ids"))))  # fmt: skip

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        work()
    finally:
        hook.remove()
    return calls


def _assert_same_calls(ours: list[tuple], theirs: list[tuple]) -> None:
    import torch

    assert len(ours) == len(theirs)
    for mine, stock_call in zip(ours, theirs, strict=True):
        for value, stock_value in zip(mine, stock_call, strict=True):
            assert (value is None) == (stock_value is None)
            assert value is None or torch.equal(value, stock_value)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_stock_shaped_loglikelihoods_are_stock_hflms_bit_for_bit(model, tokenizer, loglikelihood_requests, dtype,
                                                                 batch_size):
    """With ``stock_shapes`` every forward is HFLM's (same batches, same right-padded ids, no mask),
    and the answers are HFLM's exactly, in bfloat16 too: not within a tolerance, equal."""
    import copy

    import torch

    requests = loglikelihood_requests
    typed = copy.deepcopy(model).to(getattr(torch, dtype))
    stock, fast = _lms(typed, tokenizer, batch_size)
    fast.stock_shapes = True
    expected, got = [], []
    stock_calls = _recorded_calls(typed, lambda: expected.extend(stock.loglikelihood(requests, disable_tqdm=True)))
    our_calls = _recorded_calls(typed, lambda: got.extend(fast.loglikelihood(requests)))
    _assert_same_calls(our_calls, stock_calls)
    assert our_calls and all(mask is None for _, mask, _ in our_calls)  # right padding, no mask, as HFLM
    assert got == expected


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_scored_logits_keep_stock_hflms_inputs_and_answers(model, tokenizer, loglikelihood_requests, dtype,
                                                           batch_size):
    """``scored_logits`` (``--eval-shapes stock-scored``): the same input ids as HFLM call by call,
    the output layer at the scored positions only, and HFLM's answers: in bfloat16 bit for bit; in
    float32 to float32 rounding, because the output layer's matrix product over fewer rows can take
    another CPU kernel (a single row did on an AVX-512 CPU: 1e-6 apart)."""
    import copy

    import torch

    requests = loglikelihood_requests
    typed = copy.deepcopy(model).to(getattr(torch, dtype))
    stock, fast = _lms(typed, tokenizer, batch_size)
    fast.stock_shapes = fast.scored_logits = True
    expected, got, kept = [], [], []
    stock_calls = _recorded_calls(typed, lambda: expected.extend(stock.loglikelihood(requests, disable_tqdm=True)))
    hook = typed.register_forward_pre_hook(lambda _, args, kwargs: kept.append(kwargs["logits_to_keep"]),
                                           with_kwargs=True)  # fmt: skip
    try:
        our_calls = _recorded_calls(typed, lambda: got.extend(fast.loglikelihood(requests)))
    finally:
        hook.remove()
    _assert_same_calls(our_calls, stock_calls)
    # Every call kept fewer positions than it ran (MMLU's one-token options: one or a few per batch).
    assert len(kept) == len(our_calls) and all(len(keep) < ids.shape[1] for keep, (ids, _, _) in zip(kept, our_calls))
    if dtype == "bfloat16":
        assert got == expected
    else:
        assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
        assert max(abs(a - b) for (a, _), (b, _) in zip(got, expected, strict=True)) <= 1e-5


def test_stock_shaped_loglikelihoods_hold_under_left_truncation(model, tokenizer, manager):
    requests = _requests(manager, {"mlbench_bbh_mc_date_understanding": 2, "mlbench_mmlu_anatomy": 2})
    stock, fast = _lms(model, tokenizer, 4, max_length=64)
    fast.stock_shapes = True
    assert fast.loglikelihood(requests) == stock.loglikelihood(requests, disable_tqdm=True)


def test_is_greedy_is_true_for_the_models_own_continuation(model, tokenizer):
    """The model's greedy tokens as continuations are greedy in both; one token more is not."""
    import torch
    from lm_eval.api.instance import Instance

    contexts = ["The capital of France is", "Q: 2 + 2 =\nA:", "", "x"]
    requests = []
    for context in contexts:
        ids = tokenizer.encode(context) if context else [tokenizer.bos_token_id or tokenizer.eos_token_id]
        with torch.no_grad():
            greedy = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)[0, len(ids) :]
        continuation = tokenizer.decode(greedy)
        requests.append(Instance("loglikelihood", {}, (context, continuation), 0))
        requests.append(Instance("loglikelihood", {}, (context, continuation + " zebra"), 1))
    stock, fast = _lms(model, tokenizer, 3)
    stock_answers, fast_answers = stock.loglikelihood(requests), fast.loglikelihood(requests)
    _assert_same_loglikelihoods(stock_answers, fast_answers)
    greedy = [answer[1] for answer in fast_answers]
    assert sum(greedy) >= 2 and not all(greedy)  # both outcomes occur


def _generation_requests(manager) -> list:
    """BBH answer-only and MGSM requests (real prompts and stop sequences, 12 new tokens at most),
    and requests whose stop strings are common enough that a random model meets them early."""
    from lm_eval.api.instance import Instance

    requests = _requests(
        manager, {"mlbench_bbh_boolean_expressions": 3, "mlbench_bbh_snarks": 2, "mlbench_mgsm_de": 2}
    )
    for request in requests:
        request.arguments = (request.arguments[0], request.arguments[1] | {"max_gen_toks": 12})
    for index, context in enumerate(
        ["Q: Which is larger, 3 or 5?\nA:", "Hello", "Once upon a time, there", "1, 2, 3,"]
    ):
        settings = {"until": ["e", "\n"], "do_sample": False, "max_gen_toks": 5 + 7 * index}
        requests.append(Instance("generate_until", {}, (context, settings), 0))
    return requests


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_generations_equal_stock_hflm(model, tokenizer, manager, batch_size, static):
    requests = _generation_requests(manager)
    stock, fast = _lms(model, tokenizer, batch_size)
    fast.stock_shapes = static
    expected, got = stock.generate_until(requests, disable_tqdm=True), fast.generate_until(requests)
    assert got == expected
    stopped = [
        text for text, request in zip(got, requests, strict=True) if request.args[1]["until"][0] == "e"
    ]
    assert len(stopped) == 4 and all("e" not in text and "\n" not in text for text in stopped)
    assert any(len(tokenizer.encode(text)) < 5 for text in stopped)  # cut by a stop string


def test_static_generation_feeds_the_model_exactly_what_hf_generate_feeds_it(model, tokenizer, manager):
    """Same forwards, same order: input ids, attention masks (none where nothing is padded) and
    position ids, call by call; so in bfloat16 too the same logits come out, bit for bit."""
    from eval_tasks.fastlm import FastLM

    requests = _generation_requests(manager)
    _, _, stock_calls, calls = _stock_and_static_generation(model, tokenizer, requests, 4)
    assert len(calls) == 45
    # Single-row chunks run unmasked where the installed transformers' generate drops an all-ones mask
    # (5.24), with it where it passes it (5.17): the same forwards as HF either way.
    drops = FastLM(model, tokenizer, 4).hf_generate_drops_full_mask()
    assert sum(call[1] is None for call in calls) == (21 if drops else 0)
    _assert_same_calls(calls, stock_calls)


def _greedy_tokens(model, tokenizer, contexts: list[str], new_tokens: int) -> list[list[int]]:
    """Each context's greedy continuation alone, by HF generate."""
    import torch

    out = []
    for context in contexts:
        ids = tokenizer.encode(context)
        with torch.no_grad():
            tokens = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
        out.append(tokens[0, len(ids) :].tolist())
    return out


def _stock_and_static_generation(model, tokenizer, requests, batch_size: int):
    """HFLM's texts, FastLM's with stock shapes, and each one's forwards (``_recorded_calls``)."""
    stock, fast = _lms(model, tokenizer, batch_size)
    fast.stock_shapes = True
    fast.hf_generate_drops_full_mask()  # found out before recording: its own tiny call is not HFLM's
    expected, got = [], []
    stock_calls = _recorded_calls(model, lambda: expected.extend(stock.generate_until(requests, disable_tqdm=True)))
    calls = _recorded_calls(model, lambda: got.extend(fast.generate_until(requests)))
    return expected, got, stock_calls, calls


def test_static_generation_feeds_rows_done_early_what_hf_generate_feeds_them(model, tokenizer):
    """In one chunk, row 0 meets a stop string and row 1 an EOS while the others go on: HF generate
    under lm-eval feeds row 0 its greedy tokens still (lm-eval's stop criterion answers for the
    whole batch) and row 1 its EOS, then padding. The forwards must be the same, call by call."""
    import copy

    from lm_eval.api.instance import Instance

    contexts = ["Once upon a time", "The weather today", "Numbers: 1, 2,", "Dear friend,"]
    greedy = _greedy_tokens(model, tokenizer, contexts, 10)
    # Row 0 stops at the text of its third token; row 1 ends at its second token, made the EOS.
    stop = tokenizer.decode(greedy[0][2:3])
    assert stop.strip() and not any(stop in tokenizer.decode(tokens) for tokens in greedy[1:])
    assert greedy[1][1] not in greedy[1][:1] + [t for tokens in greedy[2:] for t in tokens]
    typed = copy.deepcopy(model)
    typed.generation_config.eos_token_id = greedy[1][1]
    requests = [Instance("generate_until", {}, (context, {"until": [stop], "do_sample": False, "max_gen_toks": 10}), 0)
                for context in contexts]  # fmt: skip
    expected, got, stock_calls, calls = _stock_and_static_generation(typed, tokenizer, requests, 4)
    assert got == expected
    assert len(calls) == 10  # the prefill and nine steps: rows 2 and 3 run to the cap
    _assert_same_calls(calls, stock_calls)


def test_static_generation_ends_a_chunk_once_every_rows_text_is_final(model, tokenizer):
    """Two rows ended early by two different stop strings: lm-eval gives HF generate one criterion
    per stop string, each done only when every row has met that same string, so HF decodes the
    chunk to the cap. Once both texts hold their stop string far enough from their end, no later
    token can change them as HFLM cuts them: FastLM ends the chunk there, its forwards HF's first
    ones, call by call, and the texts are the same."""
    from lm_eval.api.instance import Instance

    contexts = ["Once upon a time", "The weather today"]
    greedy = _greedy_tokens(model, tokenizer, contexts, 10)
    stops = [tokenizer.decode(greedy[0][1:2]), tokenizer.decode(greedy[1][2:3])]
    texts = [tokenizer.decode(tokens) for tokens in greedy]
    assert [[stop in text for text in texts] for stop in stops] == [[True, False], [False, True]]
    requests = [Instance("generate_until", {}, (context, {"until": stops, "do_sample": False, "max_gen_toks": 10}), 0)
                for context in contexts]  # fmt: skip
    expected, got, stock_calls, calls = _stock_and_static_generation(model, tokenizer, requests, 2)
    assert got == expected and all(len(text) < len(full) for text, full in zip(got, texts, strict=True))
    from eval_tasks.fastlm import FastLM

    # A stop in the third token; HF goes to the cap. Where the tokenizer does not decode as byte-level
    # BPE (eval_tasks/stops.py), FastLM cannot know a text final and goes on too.
    known = FastLM(model, tokenizer, 2)._final_text_check(stops) is not None
    assert len(stock_calls) == 10 and (3 <= len(calls) < 10 if known else len(calls) == 10)
    _assert_same_calls(calls, stock_calls[: len(calls)])


@pytest.mark.parametrize(("token", "until", "eos"), [
    ("<|endoftext|>", ["<|endoftext|>"], "kept"),  # a stop string given by the task
    ("<|im_end|>", [], None),  # the tokenizer's EOS, a stop string lm-eval adds, not the generation config's
])  # fmt: skip
def test_static_generation_keeps_what_a_row_generated_after_a_special_token_stop(model, tokenizer, token, until, eos):
    """A stop string that is a special token but not an EOS of the model's generation config (what
    made 22% of Qwen's BBH texts differ on the H200): lm-eval's criterion sees it in the row's window,
    but HF generate feeds the row on and HFLM decodes the chunk's tokens with special tokens dropped
    before cutting at the stop strings, so the row's text goes on with what it generated after it,
    until its chunk ends. Stock shapes give that same text from the same forwards; the second case
    also holds them to HF's EOS, which comes from the generation config alone."""
    import copy

    import torch
    from lm_eval.api.instance import Instance

    contexts = ["Once upon a time", "The weather today"]
    greedy = _greedy_tokens(model, tokenizer, contexts, 10)
    special = tokenizer.convert_tokens_to_ids(token)
    # A token row 0 makes once, early, and nothing else holds: made the special token by swapping
    # the two ids' weights, so the model does what it did with the two ids' names exchanged.
    elsewhere = greedy[1] + [t for c in contexts for t in tokenizer.encode(c)]
    swapped = next(t for t in greedy[0][1:6] if greedy[0].count(t) == 1 and t not in elsewhere)
    assert special not in greedy[0] + elsewhere
    typed = copy.deepcopy(model)
    with torch.no_grad():
        for weight in {id(w): w for w in (typed.get_input_embeddings().weight, typed.lm_head.weight)}.values():
            weight[[special, swapped]] = weight[[swapped, special]]
    if eos is None:
        typed.generation_config.eos_token_id = None
    generation_eos = typed.generation_config.eos_token_id
    assert special not in (generation_eos if isinstance(generation_eos, list) else [generation_eos])
    requests = [Instance("generate_until", {}, (c, {"until": until, "do_sample": False, "max_gen_toks": 10}), 0)
                for c in contexts]  # fmt: skip
    expected, got, stock_calls, calls = _stock_and_static_generation(typed, tokenizer, requests, 2)
    relabeled = [special if t == swapped else t for t in greedy[0]]
    cut = tokenizer.decode(relabeled[: relabeled.index(special)])
    # HFLM's text of row 0 is all ten tokens, the stop dropped, not the text before the stop.
    assert expected[0] == tokenizer.decode(relabeled, skip_special_tokens=True) != cut
    assert got == expected
    assert len(calls) == 10
    _assert_same_calls(calls, stock_calls)


@pytest.mark.parametrize("until", [["\n\n", "\nQ:", "<|im_end|>"], ["Q", " Q:", "\nQ: (", "Q:"]])
def test_a_text_called_final_is_what_every_longer_generation_cuts_to(model, tokenizer, until):
    """``Stopping.final`` may end a chunk early only if no appended token could change the row's text
    as HFLM cuts it: on random token sequences rich in newlines, "Q", ":", spaces, punctuation, the
    special tokens and split multi-byte characters, every prefix called final cuts to the same text as
    the whole sequence, and the check does say final for some. The second stop list has stop strings
    inside others, where a later one can straddle an earlier one's cut."""
    import random

    from lm_eval.models.utils import postprocess_generated_text

    from eval_tasks.fastlm import FastLM

    final = FastLM(model, tokenizer, 2, stock_shapes=True)._final_text_check(until)
    if final is None:
        pytest.skip("SmolLM2's tokenizer does not decode as byte-level BPE under this transformers")
    pieces = ["\n", "\n\n", "Q", ":", " Q", "Q:", " (", " the", " .", ".", " 's", "'", " n't", "é", "🙂", "(A)"]
    vocabulary = sorted({t for piece in pieces for t in tokenizer.encode(piece, add_special_tokens=False)})
    vocabulary += [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    multibyte = tokenizer.encode("🙂", add_special_tokens=False)
    rng = random.Random(0)
    finals = 0
    for _ in range(300):
        tokens = [rng.choice(vocabulary) for _ in range(rng.randint(1, 40))]
        if rng.random() < 0.3:
            tokens[rng.randrange(len(tokens))] = multibyte[0]  # a character's first bytes alone
        whole = postprocess_generated_text(tokenizer.decode(tokens, skip_special_tokens=True), until, None)
        for end in range(1, len(tokens) + 1):
            if final(tokens[:end], False):
                finals += 1
                assert postprocess_generated_text(
                    tokenizer.decode(tokens[:end], skip_special_tokens=True), until, None) == whole, tokens  # fmt: skip
    assert finals > 200
    # After an EOS, HF feeds padding: SmolLM2's (<|im_end|>) is a special token, dropped from the text.
    assert final([tokenizer.encode("x")[0]], True)


@pytest.mark.parametrize(("field", "value"), [("repetition_penalty", 1.5), ("max_new_tokens", 3)])
def test_a_generation_config_that_changes_greedy_decoding_goes_to_stock_hflm(model, tokenizer, field, value):
    """A model whose generation config changes HF generate's greedy answer (a repetition penalty) or
    its length (max_new_tokens overrides lm-eval's max_length) gets HFLM's own generate: the same
    texts, and FastLM's loop never runs."""
    import copy

    from lm_eval.api.instance import Instance

    typed = copy.deepcopy(model)
    setattr(typed.generation_config, field, value)
    requests = [Instance("generate_until", {}, (c, {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 8}), 0)
                for c in ("Once upon a time", "The weather today")]  # fmt: skip
    stock, fast = _lms(typed, tokenizer, 2)
    fast.stock_shapes = True

    def refuse(*args, **kwargs):
        raise AssertionError("FastLM's own loop ran")

    fast._greedy = refuse
    expected = stock.generate_until(requests, disable_tqdm=True)
    assert fast.generate_until(requests, disable_tqdm=True) == expected
    plain = _lms(model, tokenizer, 2)[0].generate_until(requests, disable_tqdm=True)
    assert expected != plain  # the field does change the answer


def test_sampling_requests_go_to_stock_hflm(model, tokenizer):
    """Anything but greedy decoding runs HFLM's own generate: the same seeded samples."""
    import torch
    from lm_eval.api.instance import Instance

    request = Instance("generate_until", {}, ("Hello", {"until": ["\n"], "do_sample": True, "temperature": 1.0,
                                                       "max_gen_toks": 6}), 0)  # fmt: skip
    stock, fast = _lms(model, tokenizer, 2)
    torch.manual_seed(3)
    expected = stock.generate_until([request], disable_tqdm=True)
    torch.manual_seed(3)
    assert fast.generate_until([request], disable_tqdm=True) == expected


def test_fast_backend_reports_what_the_stock_backend_reports(tmp_path, model, tokenizer, data_root):
    from eval_tasks.harness import evaluate
    from eval_tasks.records import read_records

    subtasks = {"mmlu": ["anatomy"], "bbh_mc": ["snarks"], "bbh": ["boolean_expressions"]}
    results = {
        (backend, shapes): evaluate(model, tokenizer, list(subtasks), data_root=data_root, limit=3, batch_size=4,
                                    max_gen_tokens=8, subtasks=subtasks, output_dir=tmp_path / f"{backend}-{shapes}",
                                    eval_backend=backend, eval_shapes=shapes, decode_rows=6, cuda_graphs=True)
        for backend, shapes in (("hflm", "stock"), ("fast", "stock"), ("fast", "stock-scored"), ("fast", "fast"))
    }  # fmt: skip
    stock = results["hflm", "stock"]
    assert stock.settings["eval_backend"] == "hflm" and stock.settings["eval_shapes"] is None
    assert stock.settings["decode_rows"] is None and stock.settings["decode_steps"] is None
    assert stock.settings["generation_rule"] == "hf-generate chunks"  # lm-eval's own
    for shapes, rows in (("stock", 4), ("stock-scored", 4), ("fast", 6)):  # stock shapes: HFLM's batches of 4
        fast = results["fast", shapes]
        assert fast.settings["eval_backend"] == "fast" and fast.settings["eval_shapes"] == shapes
        assert fast.settings["decode_rows"] == rows
        assert fast.settings["decode_steps"] == "eager"  # CUDA graphs asked for, and a CPU has none
        assert fast.settings["generation_rule"] == (
            "hf-generate chunks" if shapes != "fast" else "each row to its own first stop")
        assert fast.settings["timing"]["mmlu"]["items"] == 3 and fast.settings["timing"]["bbh_mc"]["items"] == 3
        assert [(s.task, s.metrics, s.n_evaluated, s.config_hash) for s in fast.tasks] == [
            (s.task, s.metrics, s.n_evaluated, s.config_hash) for s in stock.tasks
        ]
        for name in subtasks:
            stock_records = read_records(Path(stock.sample_files[name]))
            fast_records = read_records(Path(fast.sample_files[name]))
            assert len(fast_records) == len(stock_records) == 3
            for mine, theirs in zip(fast_records, stock_records, strict=True):
                assert mine.keys() == theirs.keys() and mine.get("output") == theirs.get("output")
                assert mine["prompt"] == theirs["prompt"] and mine.get("prediction") == theirs.get("prediction")
                if shapes == "stock":  # HFLM's forwards: its very numbers
                    assert mine.get("scores", []) == theirs.get("scores", [])
                else:
                    assert mine.get("scores", []) == pytest.approx(theirs.get("scores", []), abs=TOLERANCE,
                                                                   rel=TOLERANCE)


def test_an_unknown_backend_is_refused_before_any_work(model, tokenizer, data_root):
    from eval_tasks.harness import evaluate
    from metalora.errors import MlbenchError

    with pytest.raises(MlbenchError, match="unknown eval backend 'vllm'; choose from fast, hflm"):
        evaluate(model, tokenizer, ["mmlu"], data_root=data_root, eval_backend="vllm")
    with pytest.raises(MlbenchError, match="decode rows must be a positive integer, got 0"):
        evaluate(model, tokenizer, ["mmlu"], data_root=data_root, decode_rows=0)
    with pytest.raises(MlbenchError, match="eval shapes must be one of stock, stock-scored, fast, got 'exact'"):
        evaluate(model, tokenizer, ["mmlu"], data_root=data_root, eval_shapes="exact")


def test_greedy_decoder_matches_one_prompt_at_a_time_generation(model, tokenizer):
    """Rows leave and join a shared batch (unsorted prompts, so joins pad either side); each row's
    tokens equal HF generate on that prompt alone, cut where the stopping rule first holds."""
    import torch

    from eval_tasks.greedy import GreedyDecoder, Stopping

    # The long prompt joins a batch whose cache is shorter than it, so that batch is padded.
    long = "The quick brown fox jumps over the lazy dog. " * 3
    texts = ["Hi", "1 2 3", "Q: why?\nA:", "a", long, "Once upon"]
    prompts = [tokenizer.encode(text) for text in texts]
    stopping = Stopping(eos=frozenset({tokenizer.eos_token_id}), stops=(("x", 3), ("£", 3)), max_new=9)
    forward = _lms(model, tokenizer, 3)[1]._forward
    decoder = GreedyDecoder(forward, tokenizer, 0, rows=3, device="cpu")
    got = decoder.run(prompts, stopping)

    for prompt, tokens in zip(prompts, got, strict=True):
        with torch.no_grad():
            full = model.generate(torch.tensor([prompt]), max_new_tokens=9, do_sample=False)[0, len(prompt) :]
        expected = []
        for token in full.tolist():
            expected.append(token)
            if token in stopping.eos or any(s in tokenizer.decode(expected[-n:]) for s, n in stopping.stops):
                break
        assert tokens == expected
    assert [len(tokens) < 9 for tokens in got] == [False, True, True, False, False, False]  # " box", "£"


def test_more_rows_decode_together_than_are_prefilled_at_once_with_the_same_tokens(model, tokenizer):
    """``decode_rows`` rows generate together while prompts are still prefilled ``rows`` at a time:
    no forward prefills more than ``rows`` prompts, steps carry up to ``decode_rows`` rows, and every
    prompt gets the tokens it gets when one row decodes at a time."""
    from eval_tasks.greedy import GreedyDecoder, Stopping

    texts = ["Hi", "1 2 3", "Q: why?\nA:", "a", "The quick brown fox jumps over the lazy dog. " * 2, "Once upon",
             "x y", "Hello there"]  # fmt: skip
    prompts = [tokenizer.encode(text) for text in texts]
    stopping = Stopping(eos=frozenset({tokenizer.eos_token_id}), stops=(("x", 3),), max_new=7)
    forward = _lms(model, tokenizer, 2)[1]._forward
    shapes = []

    def recording(input_ids, **kwargs):
        shapes.append(tuple(input_ids.shape))
        return forward(input_ids, **kwargs)

    alone = GreedyDecoder(forward, tokenizer, 0, rows=1, device="cpu").run(prompts, stopping)
    together = GreedyDecoder(recording, tokenizer, 0, rows=2, device="cpu", decode_rows=5).run(prompts, stopping)
    assert together == alone
    prefills = [rows for rows, width in shapes if width > 1]
    steps = [rows for rows, width in shapes if width == 1]
    assert max(prefills) == 2 and sum(prefills) == len(prompts)
    assert max(steps) == 5  # five rows decode together, prefilled as 2 + 2 + 1
    # Beyond the batch size, rows join only while their cache stays within the budget.
    shapes.clear()
    tight = GreedyDecoder(recording, tokenizer, 0, rows=2, device="cpu", decode_rows=5, cache_bytes=0)
    assert tight.run(prompts, stopping) == alone
    assert max(rows for rows, width in shapes if width == 1) == 2
    # Static batches keep HFLM's shapes: decode_rows does not apply to them.
    assert GreedyDecoder(forward, tokenizer, 0, rows=2, device="cpu", static=True, decode_rows=5).decode_rows == 2


# ----- lm-eval's context/continuation split from the context's last line (eval_tasks/pair_split.py)

# Pairs built to break a wrong split: whitespace, contractions, digits, punctuation runs and
# combining marks on either side of the context's last line start, and contexts without one.
TRICKY_PAIRS = [
    ("Q: x\nAnswer:", " A"), ("Q: x\nAnswer: ", "B"), ("a\n\nA:", "  (B)\n"), ("x \nAnswer:", " 12"),
    ("x\n's", "t"), ("x\n'", "s here"), ("1\n23", "45"), ("x.\n...", "?!\n\n"), ("x\n\tA:", " no"),
    ("x\ne\u0301", "\u0301 caf\u00e9"), ("x\n\u00e9t\u00e9", "s"), ("x\n(A)", "(B)"), ("one line", " only"),
    ("x\n \ny", " z"), ("x\r\nA:", " B"), ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant", "\nYes"),
    ("x\n/", "/path"), ("x\nA", "\u0301"), ("\n\nA:", " yes"),
]


def _tokenizer_variant(tokenizer, pattern: str | None, normalizer: str | None):
    """SmolLM2's vocabulary with another pre-tokenizer regex (Qwen2's, Llama 3's) and normalizer."""
    import copy

    from tokenizers import Regex, normalizers, pre_tokenizers

    variant = copy.deepcopy(tokenizer)
    backend = variant.backend_tokenizer
    if pattern is not None:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])  # fmt: skip
    if normalizer is not None:
        backend.normalizer = getattr(normalizers, normalizer)()
    return variant


def _split_patterns():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return {"gpt2": None, "qwen2": PRETOKENIZE_REGEX, "llama3": GGUF_PRE_TOKENIZER_SPLITS["llama3"]}


@pytest.mark.parametrize("variant", ["gpt2", "qwen2", "llama3"])
def test_pair_split_equals_lm_evals_on_benchmark_and_tricky_pairs(model, tokenizer, manager, variant):
    from lm_eval.models.huggingface import HFLM

    from eval_tasks.fastlm import FastLM
    from eval_tasks.pair_split import splits_at_lines, tail_start

    varied = _tokenizer_variant(tokenizer, _split_patterns()[variant], None if variant == "gpt2" else "NFC")
    assert splits_at_lines(varied)
    requests = _requests(manager, {"mlbench_mmlu_anatomy": 4, "mlbench_bbh_mc_date_understanding": 2,
                                   "mlbench_bbh_mc_snarks": 2, "mlbench_xwinograd_en": 2})  # fmt: skip
    pairs = [request.args for request in requests] + TRICKY_PAIRS
    stock = HFLM(pretrained=model, tokenizer=varied, batch_size=1)
    fast = FastLM(model, varied, 1)
    split = sum(tail_start(context.rstrip()) is not None for context, _ in pairs)
    assert split == 16 + 12 + 4 + 17  # XWinograd's contexts and two tricky ones have no line start
    for context, continuation in pairs:
        assert fast._encode_pair(context, continuation) == stock._encode_pair(context, continuation)
    # A split pair never tokenizes the whole context + continuation.
    memo = fast._encodings
    assert not any(c + k in memo for c, k in pairs if tail_start(c.rstrip()) is not None)


def test_loglikelihood_tokenizes_each_mmlu_context_once(model, tokenizer, manager):
    """MMLU: one context per item and short last-line strings, never context + option."""
    from eval_tasks.fastlm import FastLM

    requests = _requests(manager, {"mlbench_mmlu_anatomy": 5})
    fast = FastLM(model, tokenizer, 8)
    fast.loglikelihood(requests)
    long_keys = [key for key in fast._encodings if isinstance(key, str)]
    assert len(long_keys) == 5 and len({request.args[0] for request in requests}) == 5
    assert all(len(key[0]) < 40 for key in fast._encodings if isinstance(key, tuple))


def test_pair_split_is_refused_for_tokenizers_it_does_not_hold_for(tokenizer):
    from tokenizers import normalizers

    from eval_tasks.pair_split import splits_at_lines

    assert not splits_at_lines(_tokenizer_variant(tokenizer, r"\S+|\s+", None))  # an unknown regex
    assert not splits_at_lines(_tokenizer_variant(tokenizer, _split_patterns()["llama3"] + "|/", None))
    prefixed = _tokenizer_variant(tokenizer, None, None)
    prefixed.backend_tokenizer.normalizer = normalizers.Prepend("\u2581")  # SentencePiece style
    assert not splits_at_lines(prefixed)
    newline_token = _tokenizer_variant(tokenizer, None, None)
    newline_token.add_tokens(["\nAnswer"])
    assert not splits_at_lines(newline_token)
