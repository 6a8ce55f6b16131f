"""Which new tokens can complete a stop string, so the greedy loop decodes only after those.

lm-eval's stop rule (kept by ``eval_tasks/greedy.py``): a row is done as soon as a stop string
appears in the decoded last ``lookback`` generated tokens. Decoding every live row's window at every
step, for every stop string, is host work at each step of the loop. For a byte-level BPE tokenizer
(GPT-2's, Qwen2's, Llama 3's, SmolLM2's: a ``ByteLevel`` decoder, or a chain ending in one that
changes nothing else for the vocabulary, ``decodes_byte_level``) the decoded window is the UTF-8
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
    tokenizer does not decode as a byte-level BPE one (module docstring, ``decodes_byte_level``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    size = max(len(tokenizer), backend.get_vocab_size(with_added_tokens=True))
    if not decodes_byte_level(backend, size):
        return None
    return tuple(backend.decode_batch([[token] for token in range(size)], skip_special_tokens=False))


def decodes_byte_level(backend, size: int) -> bool:
    """Whether ``backend`` (a ``tokenizers.Tokenizer``) decodes any ids below ``size`` exactly as a
    lone ``ByteLevel`` decoder would. Its decoder is ``ByteLevel``, or a ``Sequence`` ending in one
    whose other steps do nothing to this vocabulary: transformers 5.17 builds GGUF byte-level
    tokenizers with ``ByteFallback``, ``Fuse`` and ``Replace("▁", " ")`` before it. ``ByteFallback``
    acts only on ``<0xNN>`` tokens, ``Replace`` only where its pattern's characters occur, and
    ``Fuse`` joins the tokens into one string, which ``ByteLevel`` maps back to bytes exactly as
    token by token as long as every character is one of its 256 (otherwise it keeps the raw text
    of the whole string, not just of the one token): each is checked on every token's string."""
    import json

    from tokenizers import pre_tokenizers

    # The decoder's own JSON (the whole tokenizer's would serialize the vocabulary and merges too).
    steps = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
    steps = steps.get("decoders", []) if steps.get("type") == "Sequence" else [steps]
    if not steps or steps[-1].get("type") != "ByteLevel":
        return False
    if len(steps) == 1:
        return True
    kinds = {step.get("type") for step in steps[:-1]}
    if not kinds <= {"ByteFallback", "Fuse", "Replace"}:
        return False
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    replaced = set()
    for step in steps[:-1]:
        if step["type"] == "Replace":
            pattern = step.get("pattern", {})
            if "String" not in pattern:
                return False
            replaced |= set(pattern["String"])
    for token in range(size):
        text = backend.id_to_token(token)
        if text is None:
            continue
        if not set(text) <= alphabet or replaced & set(text):
            return False
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return False
    return True


def stop_triggers(stop: str, texts: Sequence[str] | None) -> Triggers | None:
    """The triggers of ``stop`` given ``token_texts``; None: decode at every step."""
    if texts is None or not stop or not stop[-1].isascii():
        return None
    last = stop[-1]
    return Triggers(frozenset(token for token, text in enumerate(texts) if last in text), len(texts))
