"""bench/protocol_floor.py's arithmetic: which tokens a protocol must push through the model, and
the floor those make at measured rates (exact numbers on fixed inputs; the GPU rates are measured
on the GPU machine, README)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from protocol_floor import best_rate_up_to, count_benchmark, floor_seconds


class _WordLM:
    """lm-eval's encoding rules on words: one token per word, a model of ``max_length`` tokens."""

    prefix_token_id = 0
    max_length = 8
    max_gen_toks = 3

    def tok_encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return self.tok_encode(context), self.tok_encode(continuation)


def _request(kind: str, *args):
    return SimpleNamespace(request_type=kind, args=args)


def test_requests_that_feed_the_same_input_count_once_and_inputs_are_cut_as_hflm_cuts_them():
    requests = [
        _request("loglikelihood", "a b c", " A"),  # input a b c: 3 tokens
        _request("loglikelihood", "a b c", " B"),  # the same input (one-token answers of one question)
        _request("loglikelihood", "a b c", " A longer"),  # a b c A: 4 tokens
        _request("loglikelihood", "", "x y"),  # empty context: the prefix token, then x: 2 tokens
        _request("loglikelihood", "one two three four five six seven eight", " nine ten"),  # 10 tokens, cut to 8
        _request("generate_until", "p q r s t u", {"until": ["\n"], "max_gen_toks": 4}),  # 6 tokens, room for 8 - 4
        _request("generate_until", "p q", {"until": ["\n"]}),  # the model's default cap
    ]
    counted = count_benchmark(_WordLM(), requests)
    assert counted["loglikelihood_requests"] == 5
    assert sorted(counted["distinct_inputs"]) == [2, 3, 4, 8]
    assert counted["prompts"] == [4, 2] and counted["new_token_caps"] == [4, 3]


def test_a_sequence_counts_at_the_best_rate_measured_at_any_length_up_to_its_own():
    rates = {"64": {"decoder": 100.0}, "128": {"decoder": 200.0}, "256": {"decoder": 150.0}}
    assert best_rate_up_to(rates, 50) == 100.0  # shorter than any measured: the shortest's
    assert best_rate_up_to(rates, 200) == 200.0
    assert best_rate_up_to(rates, 300) == 200.0  # 256's rate is lower; 128's is reachable
    assert floor_seconds([50, 200, 300], rates) == 50 / 100 + 200 / 200 + 300 / 200
