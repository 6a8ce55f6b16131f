"""The greedy loop's stop check with triggers (eval_tasks/stops.py) answers exactly as lm-eval's plain
rule (a stop string in the decoded last ``lookback`` tokens) at every step of many random token
sequences, on SmolLM2's real tokenizer and on a one-byte-per-token tokenizer (every multi-byte
character split across tokens), and decodes only where a trigger is in the window."""

from __future__ import annotations

import random

import pytest

from eval_tasks.greedy import GreedyDecoder, Stopping, _marks
from eval_tasks.stops import Triggers, stop_triggers, token_texts
from tests.conftest import _byte_tokenizer
from tests.helpers import smollm2_tokenizer

STOPS = ["Question:", "</s>", "<|im_end|>", "\n\n", "\n", "e", ":", " ", "A)", " . ", "é", "Frage:", "\ufffd", "問題"]
# Text around the stops, so that they occur, split across tokens in many ways.
PIECES = STOPS + ["Answer", " 12", "é", "ü", "問", "題", "\ufffd", "ab", " .", "  ", "\t", "🙂", "x"]


@pytest.fixture(scope="module", params=["smollm2", "bytes"])
def tokenizer(request):
    return smollm2_tokenizer() if request.param == "smollm2" else _byte_tokenizer()


def _sequences(tokenizer, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    size = len(tokenizer)
    specials = sorted(set(tokenizer.all_special_ids))
    sequences = []
    for _ in range(count):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        tokens = tokenizer.encode(text, add_special_tokens=False)
        for _ in range(rng.randint(0, 6)):  # any id, a special one, or one cut from a multi-byte text
            kind = rng.random()
            token = rng.choice(specials) if kind < 0.2 else rng.randrange(size)
            tokens.insert(rng.randint(0, len(tokens)), token)
        sequences.append(tokens)
    return sequences


def _stopping(tokenizer, stops: list[str], texts) -> Stopping:
    pairs = tuple((stop, len(tokenizer.encode(stop, add_special_tokens=False)) + 2) for stop in stops)
    return Stopping(eos=frozenset(), stops=pairs, max_new=10**6, triggers=tuple(stop_triggers(s, texts) for s in stops))


def test_trigger_rule_equals_the_plain_rule_at_every_step(tokenizer):
    texts = token_texts(tokenizer)
    assert texts is not None and len(texts) == len(tokenizer)
    stopping = _stopping(tokenizer, STOPS, texts)
    assert [t is None for t in stopping.triggers] == [False] * 10 + [True, False, True, True]  # non-ASCII last
    decoder = GreedyDecoder(None, tokenizer, 0, 1, "cpu")
    steps = hits = 0
    for sequence in _sequences(tokenizer, 400, seed=len(tokenizer)):
        for stop_index, stop in enumerate(STOPS):  # each stop alone: every step's answer, not just the first
            alone = Stopping(frozenset(), (stopping.stops[stop_index],), 10**6, (stopping.triggers[stop_index],))
            marks = _marks([sequence], alone)[0]
            lookback = alone.stops[0][1]
            for end in range(1, len(sequence) + 1):
                tokens = sequence[:end]
                plain = stop in tokenizer.decode(tokens[-lookback:])
                assert decoder._finished(tokens, tokens[-1], alone, marks) == plain, (sequence, end, stop)
                steps, hits = steps + 1, hits + plain
    assert steps > 20000 and hits > 2000  # the stops do occur, often


def test_unknown_ids_and_other_tokenizers_always_decode():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    triggers = Triggers(frozenset({5}), 10)
    assert [token in triggers for token in (5, 4, 10, 11, -1)] == [True, False, True, True, True]
    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
    wordpiece = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    assert token_texts(wordpiece) is None and stop_triggers(":", None) is None


def test_windows_without_a_trigger_are_not_decoded():
    tokenizer = _byte_tokenizer()
    calls = []
    decode = tokenizer.decode
    tokenizer.decode = lambda ids, **kw: calls.append(list(ids)) or decode(ids, **kw)
    stopping = _stopping(tokenizer, ["Question:"], token_texts(tokenizer))
    assert stopping.stops == (("Question:", 11),)
    decoder = GreedyDecoder(None, tokenizer, 0, 1, "cpu")
    sequence = tokenizer.encode("Answer 12, so Question 3 is next: Question:", add_special_tokens=False)
    marks = _marks([sequence], stopping)[0]
    done = [decoder._finished(sequence[:end], sequence[end - 1], stopping, marks) for end in range(1, len(sequence) + 1)]
    assert done == [False] * (len(sequence) - 1) + [True]
    decoded = [len(window) for window in calls]
    # Decoded only at the steps whose last 11 tokens hold a ":" (each token here is one byte).
    colons = [index for index, token in enumerate(sequence) if tokenizer.decode([token]) == ":"]
    expected = [end for end in range(1, len(sequence) + 1) if any(end - 11 <= i < end for i in colons)]
    assert decoded == [min(11, end) for end in expected]
    assert len(colons) == 2 and len(expected) == 11 < len(sequence)


def _with_decoder(tokenizer, decoder):
    """A copy of ``tokenizer``'s backend with another decoder."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.decoder = decoder
    return backend


def test_a_decoder_sequence_that_does_nothing_more_counts_as_byte_level():
    """transformers 5.17 builds GGUF byte-level tokenizers with ByteFallback, Fuse and Replace("▁")
    before ByteLevel: on a vocabulary they leave alone (SmolLM2's), every decoding is the lone
    ByteLevel's, so the check accepts it; a token they would act on (one holding "▁", a character
    outside ByteLevel's 256, a <0xNN> byte token) makes it refuse, and there decodings differ."""
    from tokenizers import AddedToken, decoders

    from eval_tasks.stops import decodes_byte_level

    tokenizer = smollm2_tokenizer()
    chain = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("▁", " "), decoders.ByteLevel()])
    plain, sequenced = _with_decoder(tokenizer, decoders.ByteLevel()), _with_decoder(tokenizer, chain)
    size = plain.get_vocab_size(with_added_tokens=True)
    assert decodes_byte_level(plain, size) and decodes_byte_level(sequenced, size)
    for tokens in _sequences(tokenizer, 300, seed=5):
        assert sequenced.decode(tokens, skip_special_tokens=False) == plain.decode(tokens, skip_special_tokens=False)
    for odd in ("a▁b", "ü x", "<0x41>"):
        plain_odd, sequenced_odd = _with_decoder(tokenizer, decoders.ByteLevel()), _with_decoder(tokenizer, chain)
        for backend in (plain_odd, sequenced_odd):
            backend.add_tokens([AddedToken(odd, special=False)])
        token = sequenced_odd.token_to_id(odd)
        assert decodes_byte_level(plain_odd, size + 1) and not decodes_byte_level(sequenced_odd, size + 1)
        pair = [tokenizer.encode(" x", add_special_tokens=False)[0], token]
        assert sequenced_odd.decode(pair, skip_special_tokens=False) != plain_odd.decode(pair, skip_special_tokens=False)
