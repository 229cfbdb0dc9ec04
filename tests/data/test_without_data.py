"""Without the real data, every data test skips with the reason and the run still passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_data_tests_skip_with_the_reason_without_data(tmp_path: Path) -> None:
    # An empty folder (a fresh MMFUSE_DATA); an absent one takes the same path in the fixture.
    root = tmp_path / "data"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(MMFUSE_DATA=str(root), MMFUSE_CACHE=str(tmp_path / "cache"))
    files = [str(HERE / f) for f in ("test_avdigits.py", "test_mfeat.py", "test_reviews.py", "test_table.py")]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files],
        capture_output=True, text=True, env=env, cwd=HERE.parents[1], timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert " failed" not in out and " error" not in out, out[-3000:]
    assert "skipped" in out and "real data not found" in out and str(root) in out
