"""Cheap checks and content hashes of model files, done before any model is loaded.

A model's identity is the hash of its weights, never its name: a GGUF file is identified by its
sha256, a Hugging Face folder by a hash over its safetensors files. Hashing a large file is done
once: the result is cached on disk per (real path, size, mtime, inode), so a sweep of many runs,
or a second process, reads it back in microseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from metalora.errors import MlbenchError
from metalora.provenance import sha256_file

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
WEIGHT_SUFFIX = ".safetensors"
SHARD_INDEX = "model.safetensors.index.json"
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit is 100 MB


class HashCache:
    """sha256 of files, cached on disk under ``root`` per (real path, size, mtime, inode)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _entry(self, path: Path) -> tuple[Path, dict]:
        real = Path(os.path.realpath(path))
        stat = real.stat()
        key = {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / f"{name}.json", key

    def sha256(self, path: Path) -> str:
        entry, key = self._entry(path)
        try:
            cached = json.loads(entry.read_text())
            if {k: cached.get(k) for k in key} == key and len(cached.get("sha256", "")) == 64:
                return cached["sha256"]
        except (OSError, ValueError):
            pass  # not cached yet, or a damaged entry: hash again and rewrite it
        digest = sha256_file(Path(key["path"]))
        self._store(entry, key | {"sha256": digest})
        return digest

    def _store(self, entry: Path, record: dict) -> None:
        # Best effort: a read-only cache folder only costs a re-hash next time.
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            temp = entry.with_name(f".{entry.name}.{os.getpid()}")
            temp.write_text(json.dumps(record))
            os.replace(temp, entry)
        except OSError:
            pass


def check_gguf(path: Path) -> None:
    """One line if ``path`` is not a GGUF file (magic and version in the header)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(8)
    except OSError as error:
        raise MlbenchError(f"model file {path} cannot be read ({error.strerror}); pass a readable .gguf file") from None
    if len(header) < 8 or header[:4] != GGUF_MAGIC:
        raise MlbenchError(
            f"model file {path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf model file"
        )
    version = struct.unpack("<I", header[4:8])[0]
    if version not in GGUF_VERSIONS:
        raise MlbenchError(
            f"model file {path} is GGUF version {version}; versions {', '.join(map(str, GGUF_VERSIONS))} are supported"
        )


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GgufCursor:
    """Walks a GGUF header in a memory map (gguf's own GGUFReader takes ~1 min on a 49k-token vocabulary)."""

    def __init__(self, view, offset: int):
        self.view, self.offset = view, offset

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.view, self.offset)[0]
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        length = self.take("Q")
        if self.offset + length > len(self.view):
            raise ValueError("string past the end of the file")
        self.offset += length
        return bytes(self.view[self.offset - length:self.offset])

    def value(self, kind: int):
        if kind in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[kind])
        if kind == _GGUF_STRING:
            return self.string()
        if kind == _GGUF_ARRAY:
            element, count = self.take("I"), self.take("Q")
            if element in _GGUF_SCALARS:  # skip fixed-size elements at once
                self.offset += count * struct.calcsize(_GGUF_SCALARS[element])
                return None
            if element == _GGUF_STRING:  # vocabularies: ~10^5 strings, skipped by their lengths only
                unpack, view, offset = struct.Struct("<Q").unpack_from, self.view, self.offset
                for _ in range(count):
                    offset += 8 + unpack(view, offset)[0]
                self.offset = offset
                return None
            for _ in range(count):
                self.value(element)
            return None
        raise ValueError(f"unknown value type {kind}")


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, after checking its tensors lie inside the file."""
    import mmap

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            cursor = _GgufCursor(view, 8)
            tensors, kv_count = cursor.take("Q"), cursor.take("Q")
            metadata = {}
            for _ in range(kv_count):
                key = cursor.string().decode("utf-8")
                metadata[key] = cursor.value(cursor.take("I"))
            infos = []
            for _ in range(tensors):
                cursor.string()
                dims = [cursor.take("Q") for _ in range(cursor.take("I"))]
                kind, offset = cursor.take("I"), cursor.take("Q")
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
                elements = 1
                for dim in dims:
                    elements *= dim
                infos.append(offset + elements // block * size)
            alignment = int(metadata.get("general.alignment") or 32)
            data_start = -(-cursor.offset // alignment) * alignment
            if any(data_start + end > len(view) for end in infos):
                raise ValueError("tensor data past the end of the file")
            return metadata["general.architecture"].decode("utf-8")
    except (ValueError, KeyError, struct.error, UnicodeDecodeError, AttributeError, OverflowError) as error:
        raise MlbenchError(
            f"model file {path} is not a readable GGUF file ({type(error).__name__}); it may be truncated: "
            "fetch or copy it again"
        ) from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIX) and p.is_file())


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
        data_size = size - 8 - length
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        if any(not isinstance(end, int) or end > data_size for end in ends):
            raise ValueError("tensor data past the end of the file")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise MlbenchError(
            f"weights file {path} is not a complete safetensors file (damaged or truncated); copy the model again"
        ) from None


def check_hf_folder(folder: Path) -> list[Path]:
    """One line if ``folder`` lacks what loading needs; returns its weight files."""
    config = folder / "config.json"
    if not config.is_file():
        raise MlbenchError(
            f"model folder {folder} has no config.json; pass a Hugging Face model folder (config.json and "
            "*.safetensors), a .gguf file, a hub id or an alias"
        )
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_type"), str):
        raise MlbenchError(f"{config} is not a model config (JSON with a 'model_type'); copy the model folder again")
    files = weight_files(folder)
    if not files:
        found = "pickled *.bin weights, which mlbench never loads" if any(folder.glob("*.bin")) else "none"
        raise MlbenchError(
            f"model folder {folder} has no *.safetensors weights (found: {found}); save the model with "
            "save_pretrained(safe_serialization=True)"
        )
    index = folder / SHARD_INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise MlbenchError(f"{index} is not a safetensors shard index; copy the model folder again") from None
        missing = sorted(shards - {p.name for p in files})
        if missing:
            raise MlbenchError(f"model folder {folder} is missing weight shards: {', '.join(missing)}")
    for path in files:
        _check_safetensors(path)
    return files


def weights_identity(named_hashes: dict[str, str]) -> str:
    """Identity of a set of weight files from their names and sha256 (same for a folder and the hub)."""
    manifest = "".join(f"{name}\t{digest}\n" for name, digest in sorted(named_hashes.items()))
    return "weights-sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def folder_identity(folder: Path, hashes: HashCache) -> str:
    return weights_identity({path.name: hashes.sha256(path) for path in check_hf_folder(folder)})


def gguf_identity(sha256: str) -> str:
    return f"gguf-sha256:{sha256}"
