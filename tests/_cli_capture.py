"""What ``mmfuse train`` and ``mmfuse bench`` build from a command line, captured before
anything trains: the tests of settings routes (every option through every route) share these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmfuse.cli import main
from mmfuse.experiment import ExperimentSpec


class _Stop(Exception):
    pass


def train_spec(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ExperimentSpec:
    """The spec ``mmfuse train argv`` builds (the run stops before its folder is written)."""
    import mmfuse.experiment.command as command

    seen: dict[str, ExperimentSpec] = {}

    def stop(out: Path, spec: ExperimentSpec, **kw: Any) -> None:
        seen["spec"] = spec
        raise _Stop

    monkeypatch.setattr(command, "prepare_run_folder", stop)
    with pytest.raises(_Stop):
        main(["train", *argv, "--out", str(tmp_path / "run")])
    return seen["spec"]


def bench_config(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The BenchConfig ``mmfuse bench argv`` builds (nothing runs)."""
    seen: dict[str, Any] = {}

    def fake_run_bench(config: Any, **kw: Any) -> Any:
        seen["config"] = config
        return type("Outcome", (), {"failed": 0})()

    monkeypatch.setattr("mmfuse.bench.run_bench", fake_run_bench)
    assert main(["bench", *argv]) == 0
    return seen["config"]
