"""The one way this project writes a file: to a temporary name in the same folder, then a rename.

A reader (the report, a second sweep, a resumed run) therefore sees the previous whole file or the
new whole file, never half of one, even when the writer is killed. Used by the run store, adapters,
checkpoints and the per-sample evaluation records.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metalora.errors import MlbenchError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``
    (readable by others: mkstemp makes 0600), otherwise it is removed. For writers that want a
    file name (safetensors, gzip)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise storage_error(path, error) from None
    try:
        yield Path(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as error:
        raise storage_error(path, error) from None
    finally:
        Path(temp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block ends without error it
    replaces ``path`` as a whole (an earlier incomplete one is removed), otherwise it is removed.
    A reader sees every file of the folder or none of them, even after a full disk."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as error:
        raise storage_error(path, error) from None
    try:
        yield temp
        os.chmod(temp, 0o755)  # mkdtemp makes 0700; results are meant to be read by others
        if path.exists():
            shutil.rmtree(path)
        os.replace(temp, path)
    except OSError as error:
        raise storage_error(path, error) from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes atomically, flushed to disk before the rename."""
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        stream.flush()
        os.fsync(stream.fileno())


def write_json(path: str | os.PathLike, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def storage_error(path: Path, error: OSError) -> MlbenchError:
    """A disk problem as one line that says what to do."""
    if error.errno == errno.ENOSPC:
        return MlbenchError(f"no space left on the device holding {path}; free space or use --store on another disk")
    if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return MlbenchError(f"cannot write to {path.parent} ({error.strerror}); choose a writable --store folder")
    return MlbenchError(f"cannot write {path}: {error.strerror}")
