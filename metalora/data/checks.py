"""Integrity of a data root: every file listed in its SHA256SUMS has the listed hash."""

from __future__ import annotations

from pathlib import Path

from metalora.errors import MlbenchError
from metalora.provenance import sha256_file


def verify_checksums(root: Path) -> tuple[int, list[str]]:
    """(files checked, files that are missing or differ)."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise MlbenchError(f"{root} has no SHA256SUMS file to verify against; is it a copy of shared/data?")
    checked, bad = 0, []
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise MlbenchError(f"malformed line {number} in {sums}: expected '<sha256>  <file>'")
        path = root / name.lstrip("*")
        checked += 1
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return checked, bad
