"""Which new tokens can complete a stop string, so the greedy loop decodes only after those.

lm-eval's stop rule (kept by ``eval_tasks/greedy.py``): a row is done as soon as a stop string
appears in the decoded last ``lookback`` generated tokens. Decoding every live row's window at every
step, for every stop string, is host work at each step of the loop. For a byte-level BPE tokenizer
(GPT-2's, Qwen2's, Llama 3's, SmolLM2's: a ``ByteLevel`` decoder) the decoded window is the UTF-8
decoding (invalid bytes replaced) of its tokens' bytes concatenated, with at most spaces removed
afterwards (``clean_up_tokenization_spaces``). An ASCII character is one byte that no other
character's encoding contains and that a replacement never swallows, so a stop string whose last
character ``c`` is ASCII can appear in the window only if some token of the window holds ``c`` in
its own decoded text. The tokens that do are the stop's *triggers*: the window is decoded (and the
stop string looked for, exactly as before) only while a trigger is among its last ``lookback``
tokens; otherwise the answer is known to be no. Any other tokenizer, a non-ASCII last character,
or a token id the tokenizer does not know means decoding at every step, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Triggers:
    """Token ids whose text holds a stop string's last character; ids from ``size`` on are unknown
    to the tokenizer and count as triggers."""

    ids: frozenset[int]
    size: int

    def __contains__(self, token: int) -> bool:
        return token in self.ids or not 0 <= token < self.size


def token_texts(tokenizer) -> tuple[str, ...] | None:
    """Each token id's own decoded text (special tokens included, no clean-up), or None when the
    tokenizer is not a byte-level BPE one (module docstring)."""
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.decoder) is not decoders.ByteLevel:
        return None
    size = max(len(tokenizer), backend.get_vocab_size(with_added_tokens=True))
    return tuple(backend.decode_batch([[token] for token in range(size)], skip_special_tokens=False))


def stop_triggers(stop: str, texts: Sequence[str] | None) -> Triggers | None:
    """The triggers of ``stop`` given ``token_texts``; None: decode at every step."""
    if texts is None or not stop or not stop[-1].isascii():
        return None
    last = stop[-1]
    return Triggers(frozenset(token for token, text in enumerate(texts) if last in text), len(texts))
