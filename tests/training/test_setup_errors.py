"""Settings that Lightning would accept and then fail on or wait on, and a failed set-up's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.training import TrainConfig


def test_bad_precision_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"precision: expected one of \['32-true', '16-mixed', 'bf16-mixed'.*got 'bf17'"):
        TrainConfig(precision="bf17")
    assert TrainConfig(precision="bf16").precision == "bf16-mixed"


@pytest.mark.parametrize("setting, message", [
    ("strategy=nope", r"strategy: expected one of \['auto', 'ddp'.*got 'nope'"),
    ("num_nodes=2", r"num_nodes=2: this process was not started by a multi-node launcher"),
])
def test_launch_settings_refused_before_training(setting: str, message: str, tmp_path: Path, capsys,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MASTER_ADDR", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID",
                "TORCHELASTIC_RUN_ID", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--fusion", "late", "--out", str(out), "data.n=120",
                 "epochs=1", setting]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # a run that failed at set-up leaves no folder


def test_a_misspelled_target_leaves_no_folder(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=50), "y": rng.integers(0, 2, 50)}).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--target", "why", "--out", str(out)]) == 2
    assert "target column 'why' does not exist" in capsys.readouterr().err
    assert not out.exists()
    # the corrected command then runs without --force
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--target", "y", "--fusion", "late", "--out", str(out),
                 "epochs=1", "hidden_dim=8", "threads=1"]) == 0


def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    from mmfuse.experiment import read_yaml

    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml(path)
