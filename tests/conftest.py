"""Test-wide settings: real data from ../shared/data, small thread counts, fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("MMFUSE_DATA", str(SHARED_DATA))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline copy of the real datasets (skips when it is not beside the project)."""
    root = Path(os.environ["MMFUSE_DATA"])
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI: real data not found at {root}")
        pytest.skip(f"real data not found at {root} (set MMFUSE_DATA)")
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
