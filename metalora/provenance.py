"""What a result was produced with: content hashes of the data, package versions, code revision,
device. The one place for each: the run store, the run id and the evaluation harness use these."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("mlbench", "torch", "transformers", "peft", "lm_eval", "datasets", "safetensors", "numpy", "accelerate")


def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file (data files and model files are hashed into run records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FileHashCache:
    """sha256 of files, once per file per process (a sweep hashes the same files for every run)."""

    def __init__(self):
        self.known: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self.known:
            self.known[path] = sha256_file(path)
        return self.known[path]


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_revision() -> tuple[str, bool]:
    """The git commit of the installed code and whether the work tree differs from it."""
    source = Path(__file__).resolve().parents[1]
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        return revision, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return archived_revision(), False


def archived_revision() -> str:
    """The commit a ``git archive`` export was made from, or says that it is unknown."""
    from metalora._revision import ARCHIVED_REVISION

    if ARCHIVED_REVISION.startswith("$Format"):
        return "unknown (not a git checkout)"
    return f"{ARCHIVED_REVISION} (git archive)"


def device_description(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment_record(device: str) -> dict:
    revision, dirty = code_revision()
    return {
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "code_revision": revision,
        "code_dirty": dirty,
        "device": device_description(device),
        "attention_kernels": attention_kernels(device),
        # The MPS pipe a GPU worker was pointed at (mlbench sweep --mps), None without: MPS changes
        # where kernels run, not what they compute; recorded so that claim can be checked
        "cuda_mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY") if device.startswith("cuda") else None,
        # cuBLAS's workspace setting (metalora/training/determinism.py): with it, its products are
        # reproducible across streams; the mlbench command sets it before CUDA starts
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if device.startswith("cuda") else None,
    }


def attention_kernels(device: str) -> dict[str, bool] | None:
    """The attention kernels torch may use on a GPU (metalora.models keeps cuDNN's off); None on CPU."""
    if not device.startswith("cuda"):
        return None
    from metalora.models import attention_backends

    return attention_backends()
