"""`mmfuse train` end to end on the synthetic data, its settings parsing and errors."""

from __future__ import annotations

import json
import re

import pytest

from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.experiment import ExperimentSpec, experiment_from_settings, parse_overrides
from mmfuse.experiment.config import parse_value
from mmfuse.training import load_checkpoint

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
    spec = run["spec"]
    assert spec["train"]["lr"] == 3e-3 and spec["train"]["epochs"] == 2
    assert spec["data"]["options"]["task"] == "redundancy" and run["status"] == "ok"
    assert ExperimentSpec.from_json(json.loads((out / "spec.json").read_text())).key == run["train_key"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"} and metrics["test"]["n"] == 45
    assert run["measurement"]["metrics"]["accuracy"] == metrics["test"]["accuracy"]

    # --resume with more epochs continues the same run folder ...
    rc = main(["train", "--dataset", "synthetic", "--fusion", "gated", "--out", str(out), "--resume",
               *SMALL[1:], "--epochs", "3", "data.task=redundancy", "fusion.gate=feature", "lr=3e-3"])
    assert rc == 0
    assert json.loads((out / "run.json").read_text())["training"]["epochs_run"] == 3


def test_config_file_and_unimodal(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: synthetic\nepochs: 1\nprogress: false\ndata:\n  n: 200\n  dim: 4\nhidden_dim: 8\n")
    out = tmp_path / "uni"
    assert main(["train", "--config", str(cfg), "--unimodal", "x0", "--out", str(out), "epochs=2"]) == 0
    model = load_checkpoint(out / "model.safetensors")
    assert model.config["type"] == "unimodal" and model.config["modality"] == "x0"
    assert json.loads((out / "run.json").read_text())["training"]["epochs_run"] == 2  # the override wins


def test_default_out_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "synthetic", "--fusion", "early", *SMALL]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    # no --dataset: the synthetic suite, and the folder names the task the loader defaults to
    assert run.name.startswith("synthetic-synergy-early-") and (run / "model.safetensors").is_file()
    assert json.loads((run / "spec.json").read_text())["data"]["options"]["task"] == "synergy"


def test_an_existing_run_folder_is_never_overwritten_silently(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", "--fusion", "early", "--out", str(out), *SMALL]
    assert main(base) == 0
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(base) == 2
    assert "already holds files: pass --resume" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    # --resume with other weight-changing settings: refused, naming each difference
    assert main([*base, "--resume", "lr=0.5", "data.task=redundancy"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.5 != 0.001" in err and "data.options.task: 'redundancy' != 'synergy'" in err
    # a mistyped folder is not a fresh run
    assert main(["train", "--fusion", "early", "--out", str(tmp_path / "typo"), "--resume", *SMALL]) == 2
    assert "holds no run to continue" in capsys.readouterr().err
    assert main([*base, "--force", "seed=1"]) == 0
    assert (out / "model.safetensors").read_bytes() != before


def test_mistyped_flags_get_a_suggestion(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epoch", "2"])
    assert exc.value.code == 2
    assert "--epoch: did you mean --epochs?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--batch-size", "2"])
    assert "settings are key=value (e.g. batch_size=...)" in capsys.readouterr().err


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
        (["--fusion", "gated", "fusion.gate=sideways"], "gate"),
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
    s = experiment_from_settings(
        parse_overrides(["lr=1", "fusion.level=decision", "encoder.x0.hidden_dims=[4]", "data.seed=2",
                         "devices=2", "strategy=ddp", "max_time=30", "train.batch_size=16"]),
        dataset="synthetic", fusion="late")
    assert s.train.lr == 1.0 and isinstance(s.train.lr, float) and s.train.devices == 2
    assert s.train.strategy == "ddp" and s.train.max_time == 30.0 and s.train.batch_size == 16
    assert s.model.fusion_options == {"level": "decision"} and s.model.encoder_options == {"x0": {"hidden_dims": [4]}}
    assert s.data.seed == 2 and s.data.options == {"task": "synergy"}
    with pytest.raises(ConfigError, match="unknown dataset"):
        experiment_from_settings({}, dataset="nope")


def test_data_verify_command(capsys, data_root) -> None:
    assert main(["data", "verify", "mfeat", "--data-root", str(data_root)]) == 0
    assert "all files present" in capsys.readouterr().out
    assert main(["data", "verify", "nope"]) == 2



def test_resume_refuses_a_spec_json_edited_to_another_task(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", "--fusion", "late", "--out", str(out), *SMALL]
    assert main(base) == 0
    spec_file = out / "spec.json"
    written = json.loads(spec_file.read_text())
    assert written["train_key"] == ExperimentSpec.from_json(written).key
    # the file edited to another task, and the command changed to match it: the weights are still synergy's
    edited = json.loads(spec_file.read_text())
    edited["data"]["options"]["task"] = "redundancy"
    spec_file.write_text(json.dumps(edited))
    before = (out / "last.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*base, "--resume", "data.task=redundancy"]) == 2
    err = capsys.readouterr().err
    assert f"{spec_file} was edited after the run started" in err
    assert ExperimentSpec.from_json(edited).key in err and written["train_key"] in err
    assert (out / "last.safetensors").read_bytes() == before  # nothing trained on
    # put back as it was, the same resume goes on
    spec_file.write_text(json.dumps(written))
    assert main([*base, "--resume"]) == 0
