"""XWinograd (6 languages): ``xwinograd/dataset.tsv`` from yandex-research/crosslingual_winograd.

Each TSV row is ``lang, source, english, sentence, tokens(json), pronoun(json), candidates(json)``:
the pronoun is ``[text, [start, end), tokens]`` over the token list and each candidate is
``[text, span, tokens, is_correct]``. A row becomes the hub schema lm-eval's xwinograd tasks read
(``Muennighoff/xwinograd``): ``sentence`` with the pronoun replaced by ``_``, ``option1`` and
``option2`` (the candidates in file order) and ``answer`` ("1" or "2").

Tokens are located in the sentence text in order (tokenisation may split words, "does n't"), so
the pronoun's characters are replaced exactly where it occurs.

Hub fallback: ``Muennighoff/xwinograd`` rows are already in that schema and are only validated.
Its ``zh`` part (504 rows) has another source than the 16 ``zh`` rows of the upstream TSV.
"""

from __future__ import annotations

import json

from metalora.data.root import DataRoot, read_text
from metalora.errors import MlbenchError

XWINOGRAD_LANGUAGES = ("en", "fr", "jp", "pt", "ru", "zh")
XWINOGRAD_FILE = "xwinograd/dataset.tsv"
XWINOGRAD_COUNTS = {"en": 2325, "jp": 959, "ru": 315, "pt": 263, "fr": 83, "zh": 16}


def xwinograd_rows(root: DataRoot, language: str) -> list[dict]:
    if language not in XWINOGRAD_LANGUAGES:
        raise MlbenchError(
            f"unknown XWinograd language {language!r}; choose from {', '.join(XWINOGRAD_LANGUAGES)}"
        )
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        rows = load_hub_rows("Muennighoff/xwinograd", language, "test")
        return [_check_hub_row(row, f"Muennighoff/xwinograd ({language}) row {number}")
                for number, row in enumerate(rows, start=1)]  # fmt: skip
    path = root.file(XWINOGRAD_FILE)
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip() and line.split("\t", 1)[0] == language:
            rows.append(parse_xwinograd_line(line, f"{path} at line {number}"))
    return rows


def parse_xwinograd_line(line: str, where: str) -> dict:
    """One upstream TSV row as ``{"sentence", "option1", "option2", "answer"}``."""
    fields = line.rstrip("\n").split("\t")
    try:
        if len(fields) != 7:
            raise ValueError(f"expected 7 tab-separated fields, found {len(fields)}")
        sentence = fields[3]
        tokens, pronoun, candidates = (json.loads(field) for field in fields[4:7])
        start, end = pronoun[1]
        offsets = _token_offsets(sentence, tokens)
        if offsets[start] is None or offsets[end - 1] is None:
            raise ValueError(f"pronoun {pronoun[0]!r} not found in the sentence")
        first, last = offsets[start], offsets[end - 1] + len(tokens[end - 1])
        correct = [bool(candidate[3]) for candidate in candidates]
        if len(candidates) != 2 or correct.count(True) != 1:
            raise ValueError("expected two candidates, exactly one correct")
    except (ValueError, TypeError, IndexError, KeyError) as error:
        message = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise MlbenchError(f"malformed XWinograd file {where}: {message}") from None
    return {
        "sentence": sentence[:first] + "_" + sentence[last:],
        "option1": candidates[0][0],
        "option2": candidates[1][0],
        "answer": "1" if correct[0] else "2",
    }


def _token_offsets(sentence: str, tokens: list[str]) -> list[int | None]:
    # Some tokens are normalised by the upstream tokenizer (quotes become ``); those get None and
    # the search goes on from the last match. Only the pronoun's own tokens must be found.
    offsets: list[int | None] = []
    position = 0
    for token in tokens:
        found = sentence.find(token, position)
        offsets.append(found if found >= 0 else None)
        position = found + len(token) if found >= 0 else position
    return offsets


def _check_hub_row(row: dict, where: str) -> dict:
    if "_" not in str(row.get("sentence", "")) or str(row.get("answer")) not in ("1", "2"):
        raise MlbenchError(
            f"malformed XWinograd hub data {where}: expected sentence with '_' and answer 1 or 2"
        )
    return {key: str(row[key]) for key in ("sentence", "option1", "option2", "answer")}
