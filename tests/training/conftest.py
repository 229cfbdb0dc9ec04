"""Shared fixtures of the training tests: a small synthetic task and quiet configs."""

from __future__ import annotations

import pytest

from mmfuse.data import DatasetSplits, load_dataset


@pytest.fixture(scope="session")
def small_splits() -> DatasetSplits:
    """Redundant two-modality task, 400 samples: learnable in a few epochs."""
    return load_dataset("synthetic", task="redundancy", n=400, dim=8, seed=0)

