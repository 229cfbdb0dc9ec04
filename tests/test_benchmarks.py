"""The scripts in benchmarks/ run: each in its --quick mode (tiny shapes, one repeat), so a
change of the library that breaks one shows here instead of on the day someone measures.

Nothing here checks a time; a script passes when it exits 0. Every script of the folder is
listed: one without a --quick mode yet is skipped with the reason, in the run's summary.

The runs start a Python with torch each and train small models: 10-100 s a script on a
loaded 2-core machine (4 minutes for the six), too much for every run of the suite. They
run when ``MMFUSE_BENCHMARK_TESTS=1`` is set (a nightly job, or before a release); the
check that every script has a --quick mode runs always.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
#: scripts that read the real datasets (skipped without them, as the data tests are)
NEEDS_DATA = {"embedding_cache.py", "tmc_mfeat.py"}
#: scripts with no --quick mode yet, and why
NOT_YET = {
    "export_speed.py": "no --quick yet: exports every strategy to ONNX and pt2 (minutes)",
    "missing_fallback.py": "no --quick yet: trains on the real datasets",
    "predict_speed.py": "no --quick yet: trains on the reviews and streams a million rows",
    "serve_speed.py": "no --quick yet: trains a model and starts a server",
    "train_baselines.py": "no --quick yet: trains on every real dataset",
}


def test_every_script_is_either_run_or_said_why_not() -> None:
    assert set(NOT_YET) <= set(SCRIPTS), sorted(set(NOT_YET) - set(SCRIPTS))
    for name in set(SCRIPTS) - set(NOT_YET):
        assert "--quick" in (ROOT / "benchmarks" / name).read_text(), f"{name}: no --quick mode"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmark_runs_quickly(script: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if script in NOT_YET:
        pytest.skip(f"benchmarks/{script}: {NOT_YET[script]}")
    if os.environ.get("MMFUSE_BENCHMARK_TESTS") != "1":
        pytest.skip("the benchmark scripts run with MMFUSE_BENCHMARK_TESTS=1 (minutes in all)")
    if script in NEEDS_DATA:
        request.getfixturevalue("data_root")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"benchmarks/{script} --quick exited {done.returncode}:\n{done.stderr[-3000:]}"
