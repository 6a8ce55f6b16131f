"""lm-eval's context/continuation token split from short strings, where that is provably the same.

lm-eval (``TemplateLM._encode_pair``) tokenizes ``context + continuation`` and ``context`` and takes
the continuation's tokens as the whole's tokens past the context's length. A multiple-choice item
thus tokenizes its long shared context once more per option; on a GPU that tokenization, not the
model, is most of MMLU's evaluation time.

For byte-level BPE tokenizers whose pre-tokenizer is one of the regexes in ``_SPLITS`` (GPT-2's,
Qwen2's, Llama 3's), the start of a line is a hard boundary: if ``text[b - 1]`` is ``"\\n"`` and
``text[b]`` is not whitespace, no pre-token holds both (the alternatives that can take a newline
take whitespace only, or put newlines last), and every pre-token before ``b`` depends on
``text[:b]`` and on ``text[b]`` being no whitespace only (each alternative stops at a character out
of its class, looking at most one further). BPE runs per pre-token, so for a context with such a
``b`` and ``tail = context[b:]``, any continuation gives
``tokens(context + continuation) = tokens(context[:b] part) + tokens(tail + continuation)``, hence

    whole[len(context_enc):] == tokens(tail + continuation)[len(tokens(tail)):]

when the tokenizer appends nothing after the text (checked for every context: ``context_enc`` must
end with ``tokens(tail)``). NFC/NFKC normalization cannot join across a newline, and added tokens
are required to hold no newline and to strip nothing, so neither crosses ``b`` either. Any other
tokenizer, or a context without such a line start, keeps lm-eval's own encoding.
"""

from __future__ import annotations

import json

_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_SPLITS = frozenset(
    {
        # Qwen2 / Qwen2.5 (transformers' Qwen2 tokenizer and its slow-tokenizer converter)
        (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
        # Llama 3 (and the GGUF "llama-bpe" family)
        (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
    }
)
_NORMALIZERS = (None, "NFC", "NFKC")


def splits_at_lines(tokenizer) -> bool:
    """Whether ``tokenizer`` is one whose tokens never span a line start (see the module doc)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    normalizer = spec.get("normalizer")
    if (normalizer or {}).get("type") not in _NORMALIZERS:
        return False
    if spec.get("model", {}).get("type") != "BPE" or not _byte_level_split(spec.get("pre_tokenizer")):
        return False
    return all(
        "\n" not in token["content"] and not (token.get("lstrip") or token.get("rstrip") or token.get("single_word"))
        for token in spec.get("added_tokens", [])
    )


def _byte_level_split(pre_tokenizer: dict | None) -> bool:
    if pre_tokenizer is None:
        return False
    if all(pre_tokenizer.get(key) == value for key, value in _GPT2_BYTE_LEVEL.items()):
        return True
    if pre_tokenizer.get("type") != "Sequence" or len(pre_tokenizer.get("pretokenizers", [])) != 2:
        return False
    split, byte_level = pre_tokenizer["pretokenizers"]
    return (
        split.get("type") == "Split"
        and split.get("pattern", {}).get("Regex") in _SPLITS
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and byte_level == byte_level | {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    )


def tail_start(context: str) -> int | None:
    """The last line start ``b`` of ``context`` that is a hard token boundary: ``context[b - 1]``
    is a newline and ``context[b]`` a letter, digit or visible ASCII character. None if none."""
    newline = context.rfind("\n")
    while newline >= 0:
        start = newline + 1
        if start < len(context) and _boundary_character(context[start]):
            return start
        newline = context.rfind("\n", 0, newline)
    return None


def _boundary_character(character: str) -> bool:
    # Stricter than "not whitespace": no combining mark, no control character.
    return character.isalnum() or (character.isascii() and character.isprintable() and not character.isspace())


def continuation_tokens(context_tokens: list[int], tail_tokens: list[int], joined_tokens: list[int]) -> list[int] | None:
    """lm-eval's continuation tokens from ``tokens(tail)`` and ``tokens(tail + continuation)``,
    or None when ``context_tokens`` does not end with ``tail_tokens`` (then the split is not known
    to hold for this tokenizer and context)."""
    if not tail_tokens or len(tail_tokens) > len(context_tokens):
        return None
    if list(context_tokens[len(context_tokens) - len(tail_tokens) :]) != list(tail_tokens):
        return None
    return list(joined_tokens[len(tail_tokens) :])
