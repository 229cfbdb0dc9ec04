"""A short training run on each real dataset beats chance clearly (subsampled, few
epochs, a few seconds each on a CPU)."""

from __future__ import annotations

import pytest
import torch

from mmfuse.data import DatasetSplits, list_datasets, load_dataset
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, evaluate, fit

CASES = {
    # name: (loader options, train rows kept, epochs, fusion, metric, must exceed)
    "avdigits": ({}, 600, 4, "early", "accuracy", 0.5),  # 10 classes: chance 0.1
    "mfeat": ({"views": ["fou", "kar", "zer"]}, None, 4, "gated", "accuracy", 0.8),  # chance 0.1
    "reviews": ({"n": 4000}, None, 3, "late", "auroc", 0.7),  # chance AUROC 0.5
}


def _subsample(splits: DatasetSplits, n_train: int | None) -> DatasetSplits:
    if n_train is None or n_train >= len(splits.train):
        return splits
    idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:n_train]
    return DatasetSplits(splits.name, splits.train.subset(idx), splits.val, splits.test, splits.info)


@pytest.mark.parametrize("name", list(CASES))
def test_short_fit_beats_chance(name: str, data_root) -> None:
    assert name in list_datasets(), f"built-in dataset {name!r} is not registered"  # a failure, not a skip
    options, n_train, epochs, fusion, metric, threshold = CASES[name]
    splits = _subsample(load_dataset(name, root=data_root, **options), n_train)
    torch.manual_seed(0)
    model = build_model(splits.specs, splits.num_classes, fusion, hidden_dim=32)
    result = fit(model, splits, TrainConfig(epochs=epochs, batch_size=64, progress=False, seed=0))
    scores = evaluate(result.model, splits.test)
    assert scores[metric] > threshold, scores
    # the unimodal baseline trains through the same path
    if name == "mfeat":
        torch.manual_seed(0)
        uni = build_unimodal_model(splits.specs, splits.num_classes, "kar", hidden_dim=32)
        uni_scores = evaluate(fit(uni, splits, TrainConfig(epochs=epochs, progress=False)).model, splits.test)
        assert uni_scores["accuracy"] > 0.6, uni_scores
