"""Fixtures of the data tests: a scratch cache, copies of real files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def scratch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty processed cache for this test only."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MMFUSE_CACHE", str(cache))
    return cache


@pytest.fixture
def copy_source(data_root: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Copy one source folder of the real data into a fresh root; returns that root."""
    root = tmp_path / "root"

    def copy(folder: str) -> Path:
        shutil.copytree(data_root / folder, root / folder)
        for p in (root / folder).rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / folder).chmod(0o755)
        return root

    return copy


@pytest.fixture(scope="module")
def real_root(data_root: Path) -> Path:
    """The real data root, for module-scoped fixtures (skips or fails like ``data_root``)."""
    return data_root
