"""What fit refuses and what it prints: a diverged run is an error (never a saved
result), settings out of range and devices this machine lacks are refused before
Lightning starts, and Lightning's chatter is off unless verbose."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from mmfuse.data import load_dataset
from mmfuse.errors import ConfigError, TrainingError
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, TrainConfigError, fit
from mmfuse.training.threads import auto_threads


def model_for(splits, hidden_dim=8):
    torch.manual_seed(0)
    return build_model(splits, fusion="gated", hidden_dim=hidden_dim)


def test_a_diverging_run_raises_and_saves_no_result(tmp_path) -> None:
    splits = load_dataset("synthetic", n=300, dim=8)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"epoch \d+: (train|val) loss is (nan|inf|-inf) .*lr \(got 1000000.0\)"):
        fit(model_for(splits), splits, TrainConfig(lr=1e6, epochs=3, progress=False), out)
    assert not (out / "model.safetensors").exists() and not (out / "fit.json").exists()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lr": math.inf}, "lr: expected a finite positive float, got inf"),
        ({"lr": math.nan}, "lr: expected a finite positive float, got nan"),
        ({"lr": -1e-3}, "lr"),
        ({"weight_decay": math.inf}, "weight_decay"),
        ({"progress": "maybe"}, "progress: expected true or false, got 'maybe'"),
        ({"deterministic": 2}, "deterministic: expected true, false or 'warn', got 2"),
        ({"seed": -1}, r"seed: expected an int in \[0, 4294967295\], got -1"),
        ({"seed": 2**32}, "seed: expected an int in"),
        ({"devices": 0}, "devices: expected a positive count"),
        ({"devices": []}, "devices"),
        ({"devices": "0"}, "devices"),
        ({"accelerator": "quantum"}, "accelerator: expected one of"),
        ({"threads": 0}, "threads: expected 'auto' or a positive int, got 0"),
        ({"threads": "many"}, "threads"),
        ({"verbose": 1}, "verbose"),
        ({"compile": "yes"}, "compile"),
        ({"max_time": math.inf}, "max_time"),
    ],
)
def test_settings_out_of_range_name_the_key(changes, match) -> None:
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**changes)
    assert issubclass(TrainConfigError, ConfigError)


def test_accepted_device_spellings() -> None:
    for devices in (1, -1, "auto", "2", "0,1", [0], [0, 1]):
        TrainConfig(devices=devices)
    assert TrainConfig(accelerator="CPU").accelerator == "cpu"
    assert TrainConfig(deterministic="warn").deterministic == "warn"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_missing_gpu_is_refused_before_lightning_starts(small_splits, accelerator, monkeypatch) -> None:
    import lightning

    def forbid(*args, **kwargs):
        raise AssertionError("Lightning was started")

    monkeypatch.setattr(lightning, "Trainer", forbid)
    with pytest.raises(TrainConfigError, match=f"accelerator: '{accelerator}' asked for, but .* no CUDA device"):
        fit(model_for(small_splits), small_splits, TrainConfig(accelerator=accelerator, epochs=1))


def test_fit_is_quiet_by_default_and_counts_epochs_from_one(small_splits, capfd, caplog) -> None:
    caplog.set_level(logging.INFO)  # pytest would otherwise take Lightning's log records off the terminal
    fit(model_for(small_splits), small_splits, TrainConfig(epochs=2, batch_size=64))
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    for line in ("GPU available", "TPU available", "Tip:", "litlogger", "`Trainer.fit` stopped"):
        assert line not in text
    assert "Epoch 2/2" in text and "Epoch 1/1" not in text


def test_verbose_restores_lightnings_output(small_splits, capfd, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO)
    lg = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    monkeypatch.setattr(lg, "level", logging.ERROR)  # silenced by an earlier caller
    fit(model_for(small_splits), small_splits, TrainConfig(epochs=1, batch_size=64, verbose=True, progress=False))
    out, err = capfd.readouterr()
    assert "GPU available" in out + err + caplog.text
    assert lg.level == logging.ERROR  # the caller's level is back


def test_threads_are_chosen_applied_recorded_and_restored(small_splits, monkeypatch) -> None:
    model = model_for(small_splits)
    assert auto_threads(model, 128, cpus=16) == 1  # a default-sized model: one thread
    big = torch.nn.Linear(4096, 4096)  # 16.8 M parameters
    assert auto_threads(big, 128, cpus=16) > 1
    assert auto_threads(big, 128, cpus=2) == 2  # never more than the CPUs

    seen = []
    import lightning

    class Probe(lightning.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    result = fit(model, small_splits, TrainConfig(epochs=1, progress=False, threads=other), callbacks=[Probe()])
    assert seen == [other] and result.threads == other
    assert torch.get_num_threads() == before
    result = fit(model_for(small_splits), small_splits, TrainConfig(epochs=1, progress=False))
    assert result.threads == 1 and torch.get_num_threads() == before


def test_compile_trains_through_torch_compile_and_keeps_state_names(small_splits, monkeypatch) -> None:
    compiled = []

    def fake_compile(model, **kwargs):  # the real one takes minutes on a small CPU
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = model_for(small_splits)
    names = set(model.state_dict())
    result = fit(model, small_splits, TrainConfig(epochs=1, progress=False, compile=True))
    assert compiled == [model] and set(result.model.state_dict()) == names
    compiled.clear()
    fit(model_for(small_splits), small_splits, TrainConfig(epochs=1, progress=False))
    assert compiled == []
