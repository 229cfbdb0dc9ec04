"""Fixtures of the run-bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def real_root(data_root: Path) -> Path:
    """The real data root, for module-scoped fixtures (skips or fails like ``data_root``)."""
    return data_root
