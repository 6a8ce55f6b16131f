"""The code revision is recorded also where the code was carried as a ``git archive`` export."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def head() -> str:
    try:
        return git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


def test_a_git_archive_export_records_its_commit(tmp_path, head):
    archive = tmp_path / "code.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "code", filter="data")
    script = "from metalora.provenance import code_revision; print(code_revision()[0])"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(tmp_path / "code"), "GIT_CEILING_DIRECTORIES": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == f"{head} (git archive)"


def test_a_checkout_asks_git(head):
    from metalora.provenance import code_revision

    assert code_revision()[0] == head
