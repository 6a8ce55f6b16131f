"""Locating benchmark data: a local data root (a mirror in upstream formats) or the hub.

Resolution order: an explicit option, then ``MLBENCH_DATA_DIR``; with neither, loaders fall back
to the Hugging Face hub (``datasets``). Files under a data root are only ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from metalora.errors import MlbenchError

DATA_DIR_ENV = "MLBENCH_DATA_DIR"


@dataclass(frozen=True)
class DataRoot:
    """A folder laid out like ``shared/data`` (see its README), or ``None`` for the hub."""

    path: Path | None

    @property
    def is_hub(self) -> bool:
        return self.path is None

    def file(self, relative: str) -> Path:
        """The path of one upstream file, refusing a missing one with a clear line."""
        if self.path is None:
            raise MlbenchError(f"no data root set, cannot read {relative}; set {DATA_DIR_ENV} or --data-root")
        path = self.path / relative
        if not path.is_file():
            raise MlbenchError(
                f"data file {path} not found under data root {self.path}; point {DATA_DIR_ENV} or "
                "--data-root at a folder laid out like shared/data (see its README)"
            )
        return path

    def describe(self) -> str:
        return "hub (datasets)" if self.path is None else str(self.path)


def resolve_data_root(explicit: str | os.PathLike | None = None, *, allow_hub: bool = True) -> DataRoot:
    """The data root from an option, the environment, or (if allowed) the hub."""
    raw = explicit if explicit not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if raw is None:
        if allow_hub:
            return DataRoot(None)
        raise MlbenchError(f"no data root: set {DATA_DIR_ENV} or pass --data-root DIR")
    path = Path(raw).expanduser()
    if not path.is_dir():
        source = "--data-root" if explicit not in (None, "") else DATA_DIR_ENV
        raise MlbenchError(
            f"data root {path} (from {source}) is not a folder; set {DATA_DIR_ENV} or --data-root "
            "to a folder laid out like shared/data"
        )
    return DataRoot(path.resolve())


def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file (data files and model files are hashed into run records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise MlbenchError(f"malformed JSON in {path} at line {error.lineno}: {error.msg}") from None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise MlbenchError(f"malformed JSON in {path} at line {number}: {error.msg}") from None
    return rows
