"""MGSM (11 languages): ``mgsm/mgsm_<lang>.tsv``, rows ``question<TAB>answer-number``, no header.

Rows become ``{"question", "answer_number"}``; the number is kept as written minus thousands
separators ("2,125" -> "2125"), so scoring compares numbers, not formatting.

Hub fallback: ``juletxara/mgsm`` rows (``question``, ``answer_number``) are rewritten into TSV lines
and go through the same parser.
"""

from __future__ import annotations

import re

from metalora.data.root import DataRoot, read_text
from metalora.errors import MlbenchError

MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
MGSM_ITEMS_PER_LANGUAGE = 250
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def mgsm_file(language: str) -> str:
    return f"mgsm/mgsm_{language}.tsv"


def mgsm_rows(root: DataRoot, language: str) -> list[dict]:
    if language not in MGSM_LANGUAGES:
        raise MlbenchError(f"unknown MGSM language {language!r}; choose from {', '.join(MGSM_LANGUAGES)}")
    if root.is_hub:
        from metalora.data.hub import load_hub_rows

        rows = load_hub_rows("juletxara/mgsm", language, "test")
        text = "".join(f"{row['question']}\t{_plain_number(row['answer_number'])}\n" for row in rows)
        return parse_mgsm_tsv(text, f"juletxara/mgsm ({language})")
    path = root.file(mgsm_file(language))
    return parse_mgsm_tsv(read_text(path), str(path))


def parse_mgsm_tsv(text: str, source: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        answer = fields[-1].strip().replace(",", "") if len(fields) == 2 else ""
        if not _NUMBER.fullmatch(answer):
            raise MlbenchError(
                f"malformed MGSM file {source} at line {number}: expected 'question<TAB>number'"
            )
        rows.append({"question": fields[0], "answer_number": answer})
    return rows


def _plain_number(value: object) -> str:
    # The hub stores answers as floats or ints; 18.0 is written as 18 like the upstream TSV.
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)
