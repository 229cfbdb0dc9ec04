"""`mmfuse train` end to end on the synthetic data, its settings parsing and errors."""

from __future__ import annotations

import json
import re

import pytest

from mmfuse.cli import main
from mmfuse.training import TrainConfigError, load_checkpoint
from mmfuse.training.settings import parse_value, resolve_settings

SMALL = ["epochs=2", "batch_size=32", "progress=false", "data.n=300", "data.dim=8", "hidden_dim=16"]


def test_train_end_to_end_writes_a_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "synthetic", "--fusion", "gated", "--out", str(out),
               *SMALL, "data.task=redundancy", "fusion.gate=feature", "lr=3e-3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "test" in printed and "model.safetensors" in printed
    model = load_checkpoint(out / "model.safetensors")
    assert model.config["fusion"] == "gated" and model.config["fusion_options"] == {"gate": "feature"}
    assert model.config["hidden_dim"] == 16
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["lr"] == 3e-3 and run["train"]["epochs"] == 2 and run["data_options"]["task"] == "redundancy"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"} and metrics["test"]["n"] == 45

    # --resume with more epochs continues the same run folder
    rc = main(["train", "--dataset", "synthetic", "--fusion", "gated", "--out", str(out), "--resume",
               *SMALL[1:], "epochs=3", "data.task=redundancy", "fusion.gate=feature", "lr=3e-3"])
    assert rc == 0
    assert json.loads((out / "run.json").read_text())["epochs_run"] == 3


def test_config_file_and_unimodal(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: synthetic\nepochs: 1\nprogress: false\ndata:\n  n: 200\n  dim: 4\nhidden_dim: 8\n")
    out = tmp_path / "uni"
    assert main(["train", "--config", str(cfg), "--unimodal", "x0", "--out", str(out), "epochs=2"]) == 0
    model = load_checkpoint(out / "model.safetensors")
    assert model.config["type"] == "unimodal" and model.config["modality"] == "x0"
    assert json.loads((out / "run.json").read_text())["epochs_run"] == 2  # the override wins


def test_default_out_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "synthetic", "--fusion", "early", *SMALL]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("synthetic-early-") and (run / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["bogus=1"], r"unknown setting 'bogus': expected one of epochs, .*data\.task.*fusion\.gate"),
        (["fusion.nope=1"], "unknown setting 'fusion.nope'"),
        (["data.zzz=1"], "unknown setting 'data.zzz'"),
        (["epochs"], "expected key=value"),
        (["epochs=0"], "epochs"),
        (["--fusion", "nope"], "unknown fusion 'nope'"),
        (["--resume"], "--resume: expected --out"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(argv, match, capsys) -> None:
    rc = main(["train", "--dataset", "synthetic", *argv])
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)


def test_unknown_dataset_is_reported(capsys) -> None:
    assert main(["train", "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_parse_value_and_resolution() -> None:
    assert parse_value("1e-3") == 1e-3 and parse_value("3") == 3 and parse_value("true") is True
    assert parse_value("[a, b]") == ["a", "b"] and parse_value("null") is None and parse_value("ddp") == "ddp"
    s = resolve_settings("synthetic", "late", ["lr=1", "fusion.level=decision", "encoder.x0.hidden_dims=[4]",
                                                "data.seed=2", "devices=2", "strategy=ddp", "max_time=30"])
    assert s.train.lr == 1.0 and isinstance(s.train.lr, float) and s.train.devices == 2
    assert s.train.strategy == "ddp" and s.train.max_time == 30.0
    assert s.fusion_options == {"level": "decision"} and s.encoder_options == {"x0": {"hidden_dims": [4]}}
    assert s.data == {"seed": 2}
    with pytest.raises(TrainConfigError, match="dataset"):
        resolve_settings(None, "gated")


def test_data_verify_command(capsys, data_root) -> None:
    assert main(["data", "verify", "mfeat", "--data-root", str(data_root)]) == 0
    assert "all files present" in capsys.readouterr().out
    assert main(["data", "verify", "nope"]) == 2

