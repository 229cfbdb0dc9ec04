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
