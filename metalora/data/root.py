"""Locating benchmark data: a local data root (a mirror in upstream formats) or the hub.

Resolution order: an explicit option, then ``MLBENCH_DATA_DIR``; with neither, loaders fall back
to the Hugging Face hub (``datasets``). Files under a data root are only ever read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
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


def read_text(path: Path) -> str:
    """A data file's text, refusing an unreadable or non-UTF-8 file with one line naming it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise MlbenchError(f"cannot read data file {path}: {error.strerror or error}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise MlbenchError(
            f"data file {path} is not UTF-8 text (line {line}); restore it from the upstream source"
        ) from None


def read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise MlbenchError(f"malformed JSON in {path} at line {error.lineno}: {error.msg}") from None


# A row schema: field -> the type(s) its value must have (bool is never accepted as a number).
RowSchema = Mapping[str, "type | tuple[type, ...]"]


def read_jsonl(
    path: Path, schema: RowSchema | None = None, check: Callable[[dict], str | None] | None = None
) -> list[dict]:
    """Rows of a JSON-lines file; with ``schema``, every row must be an object holding those fields
    with those types (and pass ``check``, which names a problem or returns None), else one line
    names the file, the line and the field."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise MlbenchError(f"malformed JSON in {path} at line {number}: {error.msg}") from None
        if schema is not None:
            problem = row_problem(row, schema) or (check(row) if check else None)
            if problem:
                raise MlbenchError(f"malformed data file {path} at line {number}: {problem}")
        rows.append(row)
    return rows


def row_problem(row: object, schema: RowSchema) -> str | None:
    """What is wrong with one record against ``schema`` (None: nothing)."""
    if not isinstance(row, dict):
        return f"expected an object with {', '.join(schema)}, got {type(row).__name__}"
    for key, kinds in schema.items():
        if key not in row:
            return f"missing field {key!r}"
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = row[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in kinds)
            return f"field {key!r} must be {names}, got {type(value).__name__} {_short(value)}"
    return None


_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", dict: "an object", list: "a list"}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
