"""mfeat (UCI Multiple Features, six views) against its known facts and by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.data import DataError, load_dataset
from mmfuse.data.mfeat import MFEAT_VIEWS


@pytest.fixture(scope="module")
def splits(real_root: Path):
    return load_dataset("mfeat")


def test_views_dims_and_sizes(splits) -> None:
    assert splits.modalities == ("fac", "fou", "kar", "mor", "pix", "zer")
    assert {m: s.shape[0] for m, s in splits.specs.items()} == {
        "fou": 76,
        "fac": 216,
        "kar": 64,
        "pix": 240,
        "zer": 47,
        "mor": 6,
    }
    assert all(s.kind == "vector" for s in splits.specs.values())
    # 40% train, 10% val, 50% test, stratified: 80 / 20 / 100 digits of each class.
    assert splits.train.class_counts().tolist() == [80] * 10
    assert splits.val.class_counts().tolist() == [20] * 10
    assert splits.test.class_counts().tolist() == [100] * 10
    assert splits.num_classes == 10


def test_splits_partition_all_rows_and_are_seeded(splits) -> None:
    idx = splits.info["indices"]
    rows = idx["train"] + idx["val"] + idx["test"]
    assert sorted(rows) == list(range(2000))
    again = load_dataset("mfeat")
    assert again.info["indices"] == idx
    other = load_dataset("mfeat", seed=1)
    assert other.info["indices"]["test"] != idx["test"]
    # Labels in blocks of 200: the label of row r is r // 200.
    assert splits.test.labels.tolist() == [r // 200 for r in idx["test"]]


def test_standardised_with_train_statistics_by_hand(splits, data_root: Path) -> None:
    for view in ("fou", "mor"):
        raw = pd.read_csv(data_root / "mfeat" / f"mfeat-{view}.csv").to_numpy(dtype=np.float64)[
            :, :-1
        ]
        train = raw[splits.info["indices"]["train"]]
        mean, std = train.mean(0), train.std(0)
        std[std < 1e-8] = 1.0
        want = (raw[splits.info["indices"]["test"]] - mean) / std
        np.testing.assert_allclose(splits.test.inputs[view].numpy(), want, rtol=1e-4, atol=1e-4)
    tr = splits.train.inputs["pix"]
    assert tr.dtype == torch.float32
    assert tr.mean(0).abs().max() < 1e-4


def test_view_subset_and_bad_views(data_root: Path) -> None:
    two = load_dataset("mfeat", views=["mor", "zer"])
    assert two.modalities == ("mor", "zer")
    assert set(MFEAT_VIEWS) == {"fou", "fac", "kar", "pix", "zer", "mor"}
    with pytest.raises(DataError, match="views must be distinct names"):
        load_dataset("mfeat", views=["pix", "nope"])
    with pytest.raises(DataError, match="views must be distinct names"):
        load_dataset("mfeat", views=[])
    with pytest.raises(DataError, match="test_fraction: expected a float in"):
        load_dataset("mfeat", test_fraction=1.0)


def test_other_fractions(data_root: Path) -> None:
    s = load_dataset("mfeat", val_fraction=0.2, test_fraction=0.2, views=["mor"])
    assert (len(s.train), len(s.val), len(s.test)) == (1200, 400, 400)


def test_wrong_shape_csv_is_rejected(tmp_path: Path) -> None:
    from mmfuse.data.mfeat import _read_view

    path = tmp_path / "mfeat-mor.csv"
    pd.DataFrame(np.zeros((10, 7))).to_csv(path, index=False)
    with pytest.raises(DataError, match="expected 2000 rows x 7 columns"):
        _read_view(path, "mor")
    frame = pd.DataFrame(np.zeros((2000, 7)))
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="labels are not 0-9 in blocks of 200"):
        _read_view(path, "mor")


def test_text_in_a_numeric_field_names_file_column_and_row(tmp_path: Path) -> None:
    from mmfuse.data.mfeat import _read_view

    rows = ["a,b,c,d,e,f,g"] + [f"1,2,3,4.5,5,6,{r // 200}" for r in range(2000)]
    rows[11] = "1,2,abc,4.5,5,6,0"
    path = tmp_path / "mfeat-mor.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"{path}: column 'c' row 10: expected a number, got 'abc'"):
        _read_view(path, "mor")
