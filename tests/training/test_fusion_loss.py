"""A fusion with its own training objective (``trusted``) is trained on it, epoch by epoch,
while validation and early stopping read the plain NLL of the model's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfuse.fusions.trusted import TrustedFusion
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, fit
from mmfuse.training.metrics import predict_logits


def test_fit_trains_on_the_fusions_loss_and_validates_on_nll(small_splits, monkeypatch) -> None:
    calls: list[tuple[int, float]] = []
    original = TrustedFusion.training_loss

    def spy(self, info, target, *, epoch):
        loss = original(self, info, target, epoch=epoch)
        calls.append((epoch, float(loss.detach())))
        return loss

    monkeypatch.setattr(TrustedFusion, "training_loss", spy)
    torch.manual_seed(0)
    model = build_model(small_splits, fusion="trusted", hidden_dim=16, fusion_options={"hidden_dims": []})
    cfg = TrainConfig(epochs=2, batch_size=100, progress=False, patience=100)
    result = fit(model, small_splits, cfg)
    steps = -(-len(small_splits.train) // 100)
    assert [e for e, _ in calls] == [0] * steps + [1] * steps
    # train_loss is the mean of the fusion's loss over the epoch's rows
    sizes = [min(100, len(small_splits.train) - 100 * i) for i in range(steps)]
    epoch2 = sum(v * n for (_, v), n in zip(calls[steps:], sizes, strict=True)) / len(small_splits.train)
    assert abs(result.history[1]["train_loss"] - epoch2) < 1e-4
    # val_loss is the NLL of the output (the best epoch's weights are the model returned)
    logits = predict_logits(result.model, small_splits.val)
    nll = F.cross_entropy(logits.float(), small_splits.val.labels).item()
    assert abs(result.history[result.best_epoch]["val_loss"] - nll) < 1e-5
