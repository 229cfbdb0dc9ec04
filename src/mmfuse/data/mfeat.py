"""UCI Multiple Features (``mfeat``): 2,000 handwritten digits seen through six feature views.

Shape legend: ``n`` samples, ``d`` features of one view.

Views (modality name, ``d``): ``fou`` Fourier coefficients (76), ``fac`` profile
correlations (216), ``kar`` Karhunen-Loeve coefficients (64), ``pix`` pixel averages
(240), ``zer`` Zernike moments (47), ``mor`` morphological features (6). Every view
is a ``vector`` modality ``(d,)``, standardised per feature with training statistics.
Ten balanced classes (200 digits each).

Split: seeded and stratified; by default 40% train, 10% validation, 50% test, so
that train + validation is the half used for training in published multi-view
results and the test half matches their evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mmfuse.data._base import (
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    register_dataset,
)
from mmfuse.data._common import check_fractions, fit_standardise, stratified_split
from mmfuse.data._files import require

__all__ = ["MFEAT_VIEWS", "load_mfeat"]

MFEAT_VIEWS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
_ROWS = 2000


def _read_view(path: os.PathLike[str], view: str) -> tuple[np.ndarray, np.ndarray]:
    """``(2000, d)`` features and ``(2000,)`` labels of one view's CSV, checked against known facts."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from e
    d = MFEAT_VIEWS[view]
    if frame.shape != (_ROWS, d + 1):
        raise DataError(f"{path}: expected {_ROWS} rows x {d + 1} columns, got {frame.shape}")
    for col in frame.columns:
        conv = pd.to_numeric(frame[col], errors="coerce")
        bad = conv.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {col!r} row {row}: expected a number, got {frame[col].iloc[row]!r}"
            )
        frame[col] = conv
    values = frame.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        row, col = (int(i) for i in np.argwhere(np.isnan(values))[0])
        raise DataError(f"{path}: column {frame.columns[col]!r} row {row}: missing value")
    labels = values[:, -1].astype(np.int64)
    if not np.array_equal(labels, np.repeat(np.arange(10), _ROWS // 10)):
        raise DataError(f"{path}: labels are not 0-9 in blocks of 200")
    return values[:, :-1].astype(np.float32), labels


@register_dataset("mfeat")
def load_mfeat(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    views: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.5,
) -> DatasetSplits:
    """Load UCI Multiple Features as six (or ``views``) vector modalities.

    Args:
        root: data root holding ``mfeat/mfeat-<view>.csv``.
        seed: seed of the stratified split.
        views: subset of ``fou fac kar pix zer mor`` (default all six).
        val_fraction: fraction of all digits used for validation.
        test_fraction: fraction of all digits used for test.
    """
    chosen = list(MFEAT_VIEWS) if views is None else list(views)
    unknown = [v for v in chosen if v not in MFEAT_VIEWS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise DataError(
            f"mfeat: views must be distinct names from {list(MFEAT_VIEWS)}, got {chosen}"
        )
    check_fractions("mfeat", val_fraction, test_fraction)
    base = require("mfeat", root)
    feats: dict[str, np.ndarray] = {}
    labels = np.repeat(np.arange(10), _ROWS // 10)
    for v in chosen:
        feats[v], _ = _read_view(base / "mfeat" / f"mfeat-{v}.csv", v)
    parts = stratified_split(
        labels, [1.0 - val_fraction - test_fraction, val_fraction, test_fraction], seed
    )
    train_idx = parts[0]
    scaled: dict[str, torch.Tensor] = {}
    for v, x in feats.items():
        mean, std = fit_standardise(x[train_idx])
        scaled[v] = torch.from_numpy(((x - mean) / std).astype(np.float32))
    specs = {v: ModalitySpec("vector", (MFEAT_VIEWS[v],), {"view": v}) for v in chosen}
    y = torch.from_numpy(labels)
    full = MultimodalDataset(
        "mfeat", scaled, y, specs=specs, num_classes=10, class_names=[str(i) for i in range(10)]
    )
    train, val, test = (full.subset(torch.from_numpy(p)) for p in parts)
    info = {
        "source": "UCI Multiple Features (data set 72)",
        "split": "stratified, seeded",
        "fractions": {
            "train": 1.0 - val_fraction - test_fraction,
            "val": val_fraction,
            "test": test_fraction,
        },
        "indices": {k: p.tolist() for k, p in zip(("train", "val", "test"), parts, strict=True)},
        "seed": seed,
    }
    return DatasetSplits("mfeat", train, val, test, info)
