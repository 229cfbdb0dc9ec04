"""The four tasks in training: heads, losses, metrics (against formulas written out
here), the main metric's direction, and a model that learns each task better than a
constant predictor."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmfuse.data import DatasetSplits, ModalitySpec, MultimodalDataset
from mmfuse.errors import FusionError, MmfuseError
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, evaluate, fit, load_checkpoint, save_checkpoint
from mmfuse.training.metrics import (
    average_precision,
    binary_auroc,
    main_metric,
    metric_names,
    task_metrics,
)

K = {"binary": 2, "multiclass": 3, "multilabel": 3, "regression": 2}


def make_task(task: str, n: int = 600, seed: int = 0) -> DatasetSplits:
    """Two vector modalities; the target is a simple function of both."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    z = a[:, :3] + b[:, :3]  # (n, 3) signal that needs both modalities
    if task == "binary":
        y = (z[:, 0] > 0).long()
    elif task == "multiclass":
        y = z.argmax(dim=1)
    elif task == "multilabel":
        y = (z > 0.3).float()
    else:  # two target columns in large, different units: standardisation matters
        y = torch.stack([1000 + 50 * z[:, 0], -3 + 0.01 * (z[:, 1] - z[:, 2])], dim=1)
    specs = {"a": ModalitySpec("vector", (4,)), "b": ModalitySpec("vector", (4,))}

    def part(idx):
        return MultimodalDataset(task, {"a": a[idx], "b": b[idx]}, y[idx], specs=specs, num_classes=K[task], task=task)

    idx = torch.arange(n)
    return DatasetSplits(task, part(idx[: n * 6 // 10]), part(idx[n * 6 // 10 : n * 8 // 10]), part(idx[n * 8 // 10 :]))


class Constant(nn.Module):
    """Predicts the same row for every sample."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("row", row.float())

    def forward(self, inputs, masks=None):
        b = next(iter(inputs.values())).shape[0]
        return self.row.expand(b, -1)


def constant_for(splits: DatasetSplits) -> Constant:
    """The best constant: the majority class, the label prevalences, the mean target."""
    y = splits.train.labels
    if splits.task in ("binary", "multiclass"):
        row = torch.full((splits.num_classes,), -10.0)
        row[torch.bincount(y, minlength=splits.num_classes).argmax()] = 10.0
        return Constant(row)
    if splits.task == "multilabel":
        return Constant(torch.logit(y.mean(0).clamp(0.01, 0.99)))
    return Constant(y.mean(0))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression"])
def test_each_task_learns_better_than_a_constant(task) -> None:
    splits = make_task(task)
    torch.manual_seed(0)
    model = build_model(splits, fusion="early", hidden_dim=32, dropout=0.0)
    assert model.config["task"] == task and model.config["num_classes"] == K[task]
    result = fit(model, splits, TrainConfig(epochs=25, batch_size=32, lr=3e-3, progress=False, patience=100))
    got, base = evaluate(result.model, splits.test), evaluate(constant_for(splits), splits.test)
    assert set(got) == set(metric_names(task)) | {"n"}
    name, higher = main_metric(task)
    if higher:
        assert got[name] > base[name] + 0.15, (got, base)
    else:
        assert got[name] < 0.5 * base[name], (got, base)
    if task == "regression":
        assert got["r2"] > 0.7 and base["r2"] < 0.05
        # every validation loss in the history is the standardised MSE of that epoch
        val = splits.val
        s = splits.train.labels.std(0, unbiased=False)
        with torch.no_grad():
            pred = result.model(val.inputs, val.masks)
        want = (((pred - val.labels) / s) ** 2).mean()
        assert math.isclose(float(want), result.history[result.best_epoch]["val_loss"], rel_tol=1e-4)
    if task == "multilabel":
        val = splits.val
        with torch.no_grad():
            logit = result.model(val.inputs, val.masks)
        p, y = torch.sigmoid(logit.double()), val.labels.double()
        bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
        assert math.isclose(float(bce), result.history[result.best_epoch]["val_loss"], rel_tol=1e-4)
    assert "val_accuracy" in result.history[0] if task in ("binary", "multiclass") else "val_accuracy" not in result.history[0]


def test_regression_head_predicts_in_target_units_and_survives_a_checkpoint(tmp_path) -> None:
    splits = make_task("regression")
    torch.manual_seed(0)
    model = build_model(splits, fusion="gated", hidden_dim=8)
    y = splits.train.labels
    assert torch.allclose(model.head.target_mean, y.mean(0))
    assert torch.allclose(model.head.target_std, y.std(0, unbiased=False))
    unimodal = build_unimodal_model(splits, modality="a", hidden_dim=8)
    assert torch.allclose(unimodal.head.target_mean, y.mean(0))
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    test = splits.test
    with torch.no_grad():
        out = model.eval()(test.inputs, test.masks)
        assert torch.equal(loaded(test.inputs, test.masks), out)
    assert abs(float(out[:, 0].mean()) - 1000) < 100  # an untrained model starts near the mean target


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_decision_level_fusion_is_refused_where_log_probabilities_mean_nothing(task) -> None:
    splits = make_task(task, n=50)
    with pytest.raises(FusionError, match=f"decision-level fusion.*got '{task}'"):
        build_model(splits, fusion="late", fusion_options={"level": "decision"})
    build_model(make_task("multiclass", n=50), fusion="late", fusion_options={"level": "decision"})


def test_head_size_follows_num_classes_for_every_task() -> None:
    for task, k in K.items():
        splits = make_task(task, n=40)
        model = build_model(splits, fusion="gated", hidden_dim=8)
        with torch.no_grad():
            assert model(splits.test.inputs, splits.test.masks).shape == (len(splits.test), k)
    specs = make_task("regression", n=40).specs
    assert build_model(specs, 1, "early", task="regression").config["num_classes"] == 1
    with pytest.raises(FusionError, match="num_classes: expected an int >= 2 for a multiclass task"):
        build_model(specs, 1, "early")
    with pytest.raises(FusionError, match="num_classes: expected 2 for a binary task"):
        build_model(specs, 3, "early", task="binary")
    with pytest.raises(FusionError, match="task: expected one of"):
        build_model(specs, 3, "early", task="ranking")


def test_old_configs_without_a_task_rebuild_as_classifiers() -> None:
    from mmfuse.models import build_model_from_config

    specs = make_task("binary", n=40).specs
    config = dict(build_model(specs, 3, "early").config)
    del config["task"]
    assert build_model_from_config(config).config["task"] == "multiclass"


# --------------------------------------------------------------- metric parity
def test_multilabel_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, -1, 0.5], [-1, 1, -2], [1, 0.8, 1], [-3, -1, 2], [0.2, -0.5, -1]])
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]])
    out = task_metrics(logits, y, "multilabel")
    pred = logits > 0
    # per label (tp, fp, fn): label 0: tp2 fp1 fn0 ; label 1: tp1 fp1 fn1 ; label 2: tp2 fp1 fn0
    f1 = [4 / (4 + 1), 2 / (2 + 1 + 1), 4 / (4 + 1)]
    assert out["macro_f1"] == pytest.approx(sum(f1) / 3)
    tp, fp, fn = 5, 3, 1
    assert int((pred & (y > 0)).sum()) == tp
    assert out["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))

    def ap(scores, labels):  # precision at each positive, ranked by score (no ties above a positive here)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        hits, total = 0, 0.0
        for rank, i in enumerate(order, 1):
            if labels[i]:
                hits += 1
                total += hits / rank
        return total / sum(labels)

    aps = [ap(logits[:, j].tolist(), y[:, j].tolist()) for j in range(3)]
    assert out["map"] == pytest.approx(sum(aps) / 3)
    assert out["n"] == 5


def test_average_precision_and_auroc_with_ties() -> None:
    # all scores tied: one threshold, precision = prevalence, recall 1
    assert average_precision(torch.zeros(5), torch.tensor([1, 0, 0, 1, 0])) == pytest.approx(2 / 5)
    # two tie groups {0.9: +,-} {0.1: +,-,-}: recall 1/2 at precision 1/2, then 1 at 2/5
    s, t = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.1]), torch.tensor([1, 0, 1, 0, 0])
    assert average_precision(s, t) == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    # AUROC: pairs (pos, neg) won, ties 1/2: pos 0.9 beats 0.1,0.1 and ties 0.9; pos 0.1 ties 0.1,0.1, loses 0.9
    assert binary_auroc(s, t) == pytest.approx((2 + 0.5 + 0 + 0.5 + 0.5) / 6)
    assert math.isnan(binary_auroc(s, torch.zeros(5)))
    assert math.isnan(average_precision(s, torch.zeros(5)))


def test_regression_metrics_by_hand() -> None:
    pred = torch.tensor([[1.0, 10], [2, 20], [4, 25], [3, 45]])
    y = torch.tensor([[1.5, 12], [2, 18], [3, 30], [3, 40]])
    out = task_metrics(pred, y, "regression")
    err = [[-0.5, -2], [0, 2], [1, -5], [0, 5]]
    flat = [e for row in err for e in row]
    assert out["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in flat) / 8))
    assert out["mae"] == pytest.approx(sum(abs(e) for e in flat) / 8)
    r2 = []
    for j in range(2):
        col = [float(v) for v in y[:, j]]
        mean = sum(col) / 4
        ss_tot = sum((v - mean) ** 2 for v in col)
        ss_res = sum(err[i][j] ** 2 for i in range(4))
        r2.append(1 - ss_res / ss_tot)
    assert out["r2"] == pytest.approx(sum(r2) / 2)
    # a 1-d target of a single column is the same as (n, 1)
    assert task_metrics(pred[:, :1], y[:, 0], "regression")["rmse"] == pytest.approx(
        math.sqrt(sum(err[i][0] ** 2 for i in range(4)) / 4))


def test_main_metric_and_its_direction() -> None:
    assert main_metric("binary") == ("accuracy", True)
    assert main_metric("multiclass") == ("accuracy", True)
    assert main_metric("multilabel") == ("map", True)
    assert main_metric("regression") == ("rmse", False)
    with pytest.raises(MmfuseError, match="task: expected one of"):
        main_metric("ranking")
    with pytest.raises(MmfuseError, match="task: expected one of"):
        task_metrics(torch.zeros(2, 2), torch.zeros(2), "ranking")
