"""Test-wide settings: real data from ../shared/data, small thread counts, fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("MMFUSE_DATA", str(SHARED_DATA))
# One intra-op thread: the tests' tensors are tiny (a few rows, hidden_dim 8), so a second
# thread only adds OpenMP hand-offs; on a loaded machine (CI runners, this 2-core box shared
# by several jobs) the threads spin waiting for each other and a tiny forward costs 17-70x
# the CPU time of one thread (measured: 8 forwards of test_models' cross_modal_transformer,
# 4.66 s CPU with 2 threads vs 0.28 s with 1). Nothing checked depends on the thread count;
# the one test of thread handling (test_fit_guards) switches to another count itself.
torch.set_num_threads(1)


def _missing_sources(root: Path) -> list[str]:
    """Paths of the real datasets' files and folders absent under ``root`` (existence only, no hashing)."""
    from mmfuse.data._files import SOURCES

    missing = []
    for src in SOURCES.values():
        missing += [f.path for f in src.files if not (root / f.path).is_file()]
        if src.folder is not None and not (root / src.folder).is_dir():
            missing.append(src.folder + "/")
    return missing


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline copy of the real datasets (skips, naming what is absent, when it is not there)."""
    root = Path(os.environ["MMFUSE_DATA"])
    if not root.is_dir():
        reason = f"real data not found: {root} is not a folder (set MMFUSE_DATA)"
    else:
        missing = _missing_sources(root)
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        reason = (f"real data not found under {root}: missing {', '.join(missing[:3])}{more} "
                  "(set MMFUSE_DATA, or run `mmfuse data download NAME`)") if missing else ""
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
