"""The report's output folder: it replaces only what it wrote itself, and never half of it.

A built site carries a marker file listing every file the build wrote. A rebuild goes to a
temporary folder beside ``--out`` and is renamed into place; the previous site is removed only
when everything in it is listed in its marker, so a file a person added, or a run store placed
inside the folder, is never deleted: the build is refused instead, with one line saying why.
A folder without the marker is replaced only when it is empty. Sites from before the marker
listed its files (the marker is plain text) count as ours where every file has the report's
layout (``index.html``, ``runs/*.html``, ``plots/*.svg``, ``tables/*.{csv,md,tex}``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.runs.store import DEFAULT_STORE, STORE_ENV

MARKER = ".mlbench-report"
LEGACY_LAYOUT = re.compile(r"^(index\.html|report\.css|\.mlbench-pages\.json|runs/[^/]+\.html|plots/[^/]+\.svg|tables/[^/]+\.(csv|md|tex))$")
SHOWN = 3  # foreign files named in the error


def existing_store(path: Path | None) -> Path:
    """The store folder to report on (default as ``mlbench run``'s); a missing one is never created."""
    path = Path(path or os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()
    if not path.is_dir():
        raise MlbenchError(
            f"run store {path} does not exist or is not a folder; pass --store with the folder of your runs"
        )
    return path


def entries(folder: Path) -> Iterator[str]:
    """Every file, link and empty folder under ``folder``, relative, with "/" separators."""
    for item in sorted(os.scandir(folder), key=lambda entry: entry.name):
        relative = item.name
        if item.is_dir(follow_symlinks=False):
            inner = list(entries(Path(item.path)))
            yield from (f"{relative}/{name}" for name in inner)
            if not inner:
                yield f"{relative}/"
        else:
            yield relative


def _written(out: Path) -> Callable[[str], bool]:
    """Whether a file of the existing site at ``out`` was written by the report."""
    text = (out / MARKER).read_text(encoding="utf-8", errors="replace")
    try:
        listed = set(json.loads(text)["files"])
    except (ValueError, KeyError, TypeError):
        return lambda name: bool(LEGACY_LAYOUT.match(name))
    return listed.__contains__


def check_out(out: Path, store: Path) -> None:
    """Refuse an ``--out`` whose replacement would delete anything the report did not write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MlbenchError(f"--out {out} is not a folder; give a new or empty folder for the report")
    store, real = store.resolve(), out.resolve()
    if store == real or real in store.parents:
        raise MlbenchError(
            f"the run store {store} is inside --out {out}, which the report replaces; "
            "choose an --out folder outside the store"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise MlbenchError(
            f"--out {out} is a non-empty folder that is not an mlbench report; choose an empty or new folder"
        )
    ours = _written(out)
    foreign = [name for name in entries(out) if name != MARKER and not ours(name)]
    if foreign:
        more = f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else ""
        raise MlbenchError(
            f"--out {out} holds files the report did not write ({', '.join(foreign[:SHOWN])}{more}); "
            "move them out of it or choose another --out folder"
        )


def write_marker(root: Path) -> None:
    files = [name for name in entries(root) if not name.endswith("/")]
    text = json.dumps({"written_by": "mlbench report", "files": files}, indent=0)
    (root / MARKER).write_text(text + "\n", encoding="utf-8")


def publish(out: Path, store: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(folder)`` in a temporary folder beside ``out`` and put the result in its place."""
    out = Path(out).absolute()
    check_out(out, Path(store))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as error:
        raise _unwritable(out, error) from None
    try:
        os.chmod(temp, 0o755)  # mkdtemp makes it private; a published site must be readable
        build(temp)
        write_marker(temp)
        _swap(temp, out)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise _unwritable(out, error) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _unwritable(out: Path, error: OSError) -> MlbenchError:
    reason = error.strerror or str(error)
    return MlbenchError(f"cannot write the report to {out} ({reason}); choose a writable --out folder")


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "site")
    try:
        os.rename(new, out)
    except OSError:
        os.rename(old / "site", out)  # put the previous site back before reporting the failure
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
