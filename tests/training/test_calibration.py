"""Calibration metrics against hand-computed cases, and temperature scaling end to end.

Each metric is checked on probabilities chosen so that the answer can be written out
by hand (the bins, the risk-coverage curve), never by re-running the implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _cli_capture import bench_config, train_spec

import mmfuse
from mmfuse.cli import main
from mmfuse.data import ModalitySpec
from mmfuse.experiment.results import Measurement
from mmfuse.experiment.specs import DataSpec, ExperimentSpec, ModelSpec
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, TrainConfigError
from mmfuse.training.calibration import (
    N_BINS,
    CalibrationStats,
    aurc,
    brier_score,
    calibration_stats,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    selective_accuracy,
)
from mmfuse.training.checkpoint import load_checkpoint, save_checkpoint


def binary(p_top: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class log-probabilities whose top class (0) has probability ``p_top``; the label is 0 when correct."""
    p = torch.tensor(p_top, dtype=torch.float64)
    logits = torch.stack([p.log(), (1 - p).log()], dim=1)
    labels = torch.tensor([0 if c else 1 for c in correct])
    return logits, labels


def test_a_perfectly_calibrated_model_has_zero_ece() -> None:
    # 10 samples at 0.8 (8 right) and 10 at 0.6 (6 right): accuracy = confidence in each bin
    logits, labels = binary([0.8] * 10 + [0.6] * 10, [True] * 8 + [False] * 2 + [True] * 6 + [False] * 4)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)


def test_an_overconfident_model_has_the_ece_written_out() -> None:
    # 4 samples at 0.95 with 2 right, 4 at 0.7 with 3 right:
    # ECE = 4/8 |0.5 - 0.95| + 4/8 |0.75 - 0.7| = 0.225 + 0.025
    logits, labels = binary([0.95] * 4 + [0.7] * 4, [True, False, True, False, True, True, True, False])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.25, abs=1e-12)
    bins = reliability_bins(logits, labels)
    # equal-width bins of 1/15: 0.95 in (14/15, 1] (bin 14), 0.7 in (10/15, 11/15] (bin 10)
    assert bins.n_bins == N_BINS == 15
    assert [i for i, c in enumerate(bins.counts) if c] == [10, 14]
    assert bins.counts[10] == 4 and bins.accuracy[10] == pytest.approx(0.75) and bins.confidence[10] == pytest.approx(0.7)
    assert bins.accuracy[14] == pytest.approx(0.5) and bins.confidence[14] == pytest.approx(0.95)
    assert bins.accuracy[0] is None and bins.confidence[0] is None


def test_bin_edges_are_right_closed() -> None:
    # 2/3 is the upper edge of bin 9, (9/15, 10/15]; probability 1 falls in the last bin
    logits = torch.tensor([[math.log(2 / 3), math.log(1 / 3)], [0.0, -float("inf")]], dtype=torch.float64)
    bins = reliability_bins(logits, torch.tensor([0, 0]))
    assert bins.counts[9] == 1 and bins.counts[14] == 1


def test_nll_and_brier_by_hand() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    assert nll(p.log(), y) == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)
    # (0.3^2 + 0.2^2 + 0.1^2) and (0.1^2 + 0.5^2 + 0.6^2), averaged
    assert brier_score(p.log(), y) == pytest.approx((0.14 + 0.62) / 2)


def test_selective_accuracy_and_aurc_by_hand() -> None:
    # confidence 0.9 right, 0.8 wrong, 0.7 right, 0.6 wrong (given in another order)
    logits, labels = binary([0.7, 0.9, 0.6, 0.8], [True, True, False, False])
    # risk at coverage 1/4, 2/4, 3/4, 4/4: 0, 1/2, 1/3, 2/4
    assert aurc(logits, labels) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert selective_accuracy(logits, labels, 0.5) == pytest.approx(0.5)
    assert selective_accuracy(logits, labels, 0.25) == pytest.approx(1.0)
    assert selective_accuracy(logits, labels, 0.8) == pytest.approx(2 / 4)  # ceil(3.2) = 4 samples
    assert selective_accuracy(logits, labels, 0.75) == pytest.approx(2 / 3)
    with pytest.raises(mmfuse.MmfuseError, match="coverage"):
        selective_accuracy(logits, labels, 0.0)


def test_aurc_does_not_depend_on_the_order_of_tied_confidences() -> None:
    # two samples at 0.9 (one right, one wrong), then 0.6 right: the tie shares the risk at its end, 1/2
    a = aurc(*binary([0.9, 0.9, 0.6], [True, False, True]))
    b = aurc(*binary([0.9, 0.9, 0.6], [False, True, True]))
    assert a == b == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)


def test_calibration_stats_and_its_json() -> None:
    logits, labels = binary([0.95] * 4 + [0.7] * 4, [True, False, True, False, True, True, True, False])
    stats = calibration_stats(logits, labels)
    assert set(stats.selective) == {"100", "90", "80", "50"}
    assert stats.selective["100"] == pytest.approx(5 / 8)
    assert CalibrationStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


def test_a_measurement_written_before_calibration_loads() -> None:
    old = {"metric": "accuracy", "higher_is_better": True, "metrics": {"accuracy": 0.9}, "n_test": 10}
    m = Measurement.from_json(old)
    assert m.calibration is None and m.calibration_missing == {} and m.temperature is None
    stats = calibration_stats(*binary([0.9, 0.6], [True, False]))
    new = Measurement(metric="accuracy", higher_is_better=True, metrics={"accuracy": 0.5}, n_test=2,
                      calibration=stats, calibration_missing={"a": stats}, calibration_noise={"a": {"1": stats}},
                      temperature=2.0, uncalibrated=stats, uncalibrated_missing={"a": stats})
    assert Measurement.from_json(json.loads(json.dumps(new.to_json()))) == new


# ------------------------------------------------------------------ temperature scaling
def test_temperature_scaling_undoes_a_known_overconfidence() -> None:
    # labels drawn from softmax(z); the model says 4 z: the NLL-optimal temperature is about 4
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 5, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(4 * z, y)
    assert 3.3 < t < 4.7
    assert nll(4 * z / t, y) <= min(nll(4 * z / (t * 1.001), y), nll(4 * z / (t / 1.001), y))  # a minimum
    assert nll(4 * z / t, y) < nll(4 * z, y) - 0.1
    assert expected_calibration_error(4 * z / t, y) < expected_calibration_error(4 * z, y)
    assert torch.equal((4 * z / t).argmax(1), (4 * z).argmax(1))


def test_a_bad_calibrate_value_names_the_allowed_ones() -> None:
    with pytest.raises(TrainConfigError, match=r"calibrate: expected None or one of \['temperature'\], got 'platt'"):
        TrainConfig(calibrate="platt")


def test_calibrate_changes_the_training_key_and_off_keeps_the_old_one() -> None:
    spec = ExperimentSpec(DataSpec("synthetic"), ModelSpec(fusion="late"), TrainConfig())
    on = spec.replace(train=TrainConfig(calibrate="temperature"))
    assert on.key != spec.key
    assert "calibrate" not in spec.weights_identity()["train"]  # keys from before the setting stay valid
    assert ExperimentSpec.from_json(on.to_json()).train.calibrate == "temperature"


def test_an_old_checkpoint_without_temperature_loads_as_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    specs = {"a": ModalitySpec("vector", (5,)), "b": ModalitySpec("vector", (3,))}
    torch.manual_seed(0)
    model = build_model(specs, 3, "gated", hidden_dim=8, dropout=0.0).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "weights_sha256"}
    state = {k: v for k, v in load_file(str(path)).items() if k != "temperature"}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=metadata)
    old = load_checkpoint(tmp_path / "old.safetensors")
    assert float(old.temperature) == 1.0
    x = {"a": torch.randn(4, 5), "b": torch.randn(4, 3)}
    with torch.no_grad():
        assert torch.equal(old(x), model(x))


def test_fit_with_temperature_saves_t_and_predict_returns_calibrated_probabilities(small_splits,
                                                                                   tmp_path: Path) -> None:
    from mmfuse.training import fit

    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, progress=False, calibrate="temperature")
    torch.manual_seed(0)
    model = build_model(small_splits, fusion="late", hidden_dim=8)
    result = fit(model, small_splits, cfg, tmp_path / "fit")
    t = float(result.model.temperature)
    assert t != 1.0
    # the stored T is the NLL optimum of the validation outputs at T = 1
    from mmfuse.training.metrics import predict_logits

    raw = predict_logits(result.model, small_splits.val) * t
    assert t == pytest.approx(fit_temperature(raw, small_splits.val.labels), rel=1e-6)
    assert nll(raw / t, small_splits.val.labels) <= nll(raw, small_splits.val.labels)
    loaded = load_checkpoint(result.checkpoint)
    assert float(loaded.temperature) == pytest.approx(t)

    folder = mmfuse.save_run(tmp_path / "run", result.model, small_splits, metrics={})
    run = mmfuse.load_run(folder)
    test = small_splits.test
    with torch.no_grad():
        z = result.model({m: x[:16] for m, x in test.inputs.items()}, {m: k[:16] for m, k in test.masks.items()})
    want = torch.softmax(z, dim=1).numpy()
    got = run._probabilities(run.outputs(_rows(test, 16)))
    assert got == pytest.approx(want, abs=1e-6)
    uncalibrated = torch.softmax(z * t, dim=1).numpy()
    assert abs(got - uncalibrated).max() > 1e-3


def _rows(ds: Any, n: int) -> Any:
    """The first ``n`` rows of ``ds`` as the predictor's transformed input (every row usable)."""
    import numpy as np

    return type("T", (), {"inputs": {m: x[:n] for m, x in ds.inputs.items()},
                          "masks": {m: k[:n] for m, k in ds.masks.items()},
                          "usable": np.ones(n, dtype=bool), "__len__": lambda self: n})()


def test_calibrate_without_a_classification_task_or_a_val_split_is_refused_before_training() -> None:
    from mmfuse.data import DatasetSplits, MultimodalDataset
    from mmfuse.training import fit
    from mmfuse.training.calibration import check_calibrate

    specs = {"a": ModalitySpec("vector", (4,)), "b": ModalitySpec("vector", (4,))}

    def part(n: int) -> MultimodalDataset:
        x = {"a": torch.randn(n, 4), "b": torch.randn(n, 4)}
        return MultimodalDataset("ml", x, (torch.rand(n, 3) > 0.5).float(), specs=specs, num_classes=3,
                                 task="multilabel")

    splits = DatasetSplits("ml", part(20), part(10), part(10))
    model = build_model(splits, fusion="early", hidden_dim=4)
    with pytest.raises(TrainConfigError, match="calibrate: 'temperature' needs a classification task"):
        fit(model, splits, TrainConfig(epochs=1, progress=False, calibrate="temperature"))
    with pytest.raises(TrainConfigError, match="validation split"):
        check_calibrate("temperature", task="binary", has_val=False)
    check_calibrate(None, task="regression", has_val=False)  # off: nothing to check


# ------------------------------------------------------------------ one grammar
def _train_config(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainConfig:
    return train_spec(["--dataset", "synthetic", *argv], tmp_path, monkeypatch).train


def _bench_config(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return bench_config(["--dataset", "synthetic", *argv], monkeypatch)


@pytest.mark.parametrize("route", ["setting", "train.setting", "yaml"])
def test_calibrate_reaches_train_and_bench_by_every_route(route: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if route == "yaml":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("train:\n  calibrate: temperature\n")
        argv = ["--config", str(cfg)]
    else:
        argv = [f"{'train.' if route == 'train.setting' else ''}calibrate=temperature"]
    assert _train_config(argv, tmp_path, monkeypatch).calibrate == "temperature"
    assert _bench_config(argv, monkeypatch).train.calibrate == "temperature"


def test_a_bad_calibrate_setting_on_the_command_line_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("mmfuse.bench.run_bench", lambda *a, **k: pytest.fail("the bench ran"))
    assert main(["bench", "--dataset", "synthetic", "calibrate=isotonic"]) != 0
    assert "calibrate: expected None or one of ['temperature'], got 'isotonic'" in capsys.readouterr().err



def test_a_temperature_at_the_search_bound_is_said_to_be_one() -> None:
    """Scores that say nothing about the labels: the validation NLL falls as T grows, so the fit
    stops at the search's upper bound, and the note says why (not an optimum)."""
    from mmfuse.training.calibration import TEMPERATURE_BOUNDS, fit_temperature, temperature_note

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 3, generator=g) * 5
    labels = torch.randint(0, 3, (400,), generator=g)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)
    assert "upper bound" in (temperature_note(t) or "")
    assert temperature_note(1.7) is None
    assert "lower bound" in (temperature_note(TEMPERATURE_BOUNDS[0]) or "")
