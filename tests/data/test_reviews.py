"""reviews (clothing review text + tabular) against the known facts of the file and by hand."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.data import DataError, load_dataset
from mmfuse.data.reviews import build_vocab, encode, tokenize

FILE = "clothing_reviews/WomensClothingE-CommerceReviews.parquet.brotli"


@pytest.fixture(scope="module")
def splits(real_root: Path):
    return load_dataset("reviews")


@pytest.fixture(scope="module")
def frame(real_root: Path) -> pd.DataFrame:
    return pd.read_parquet(real_root / FILE)


def _all(splits, attr: str, key: str | None = None) -> torch.Tensor:
    parts = [
        getattr(d, attr) if key is None else getattr(d, attr)[key]
        for d in (splits.train, splits.val, splits.test)
    ]
    return torch.cat(parts)


def test_tokenizer() -> None:
    assert tokenize("Love it!! Don't return; size 10.") == [
        "love",
        "it",
        "don't",
        "return",
        "size",
        "10",
    ]
    assert tokenize("  ") == []


def test_vocab_and_encoding_by_hand() -> None:
    docs = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    vocab = build_vocab(docs, min_count=2, max_size=10)
    assert vocab == {"a": 2, "b": 3}
    assert build_vocab(docs, min_count=1, max_size=4) == {
        "a": 2,
        "b": 3,
    }  # 2 ids left after pad and unk
    ids = encode([["b", "zzz", "a"], []], vocab, 4)
    assert ids.tolist() == [[3, 1, 2, 0], [0, 0, 0, 0]]
    assert encode([["a"] * 9], vocab, 4).tolist() == [[2, 2, 2, 2]]


def test_sizes_and_stratified_splits(splits) -> None:
    sizes = (len(splits.train), len(splits.val), len(splits.test))
    assert sum(sizes) == 23486
    assert sizes == pytest.approx((0.7 * 23486, 0.1 * 23486, 0.2 * 23486), abs=3)
    # Recommended: 19,314 yes, 4,172 no, in every split in the same proportion.
    total = _all(splits, "labels").bincount().tolist()
    assert total == [4172, 19314]
    for ds in (splits.train, splits.val, splits.test):
        assert ds.class_counts()[1].item() / len(ds) == pytest.approx(19314 / 23486, abs=0.002)
    idx = splits.info["indices"]
    assert sorted(idx["train"] + idx["val"] + idx["test"]) == list(range(23486))


def test_missing_text_is_masked_not_dropped(splits, frame: pd.DataFrame) -> None:
    no_text = (frame["Title"].isna() & frame["Review Text"].isna()).to_numpy()
    assert no_text.sum() == 844
    order = np.concatenate([splits.info["indices"][k] for k in ("train", "val", "test")])
    mask = _all(splits, "masks", "text").numpy()
    np.testing.assert_array_equal(mask, ~no_text[order])
    ids = _all(splits, "inputs", "text")
    assert bool((ids[~torch.from_numpy(mask)] == 0).all())
    assert bool((ids[torch.from_numpy(mask)][:, 0] != 0).all())  # present text starts with a token


def test_text_ids_by_hand_and_vocab_from_train_only(splits, frame: pd.DataFrame) -> None:
    vocab_list = splits.info["vocab"]
    vocab = {w: i for i, w in enumerate(vocab_list)}
    meta = splits.specs["text"].meta
    assert (
        meta["vocab_size"] == len(vocab_list)
        and meta["pad_id"] == 0
        and vocab_list[:2] == ["<pad>", "<unk>"]
    )
    assert splits.specs["text"].shape == (64,)
    row = splits.info["indices"]["test"][5]
    title, body = frame["Title"].iloc[row], frame["Review Text"].iloc[row]
    words = tokenize(f"{'' if pd.isna(title) else title} {'' if pd.isna(body) else body}")[:64]
    want = [vocab.get(w, 1) for w in words] + [0] * (64 - len(words))
    assert splits.test.inputs["text"][5].tolist() == want
    # Vocabulary: words with >= 2 occurrences in the training split only.
    titles = frame["Title"].fillna("").tolist()
    bodies = frame["Review Text"].fillna("").tolist()
    train_counts = Counter()
    for r in splits.info["indices"]["train"]:
        train_counts.update(tokenize(f"{titles[r]} {bodies[r]}"))
    kept = {w for w, c in train_counts.items() if c >= 2}
    assert set(vocab_list[2:]) == kept  # fewer than max_vocab - 2 words qualify
    assert train_counts[vocab_list[2]] == max(train_counts.values())


def test_tabular_columns_by_hand(splits, frame: pd.DataFrame) -> None:
    meta = splits.specs["tabular"].meta
    assert meta["num_numeric"] == 2
    assert meta["columns"][2:] == ["Division Name", "Department Name", "Class Name", "Clothing ID"]
    tr = splits.info["indices"]["train"]
    te = splits.info["indices"]["test"]
    age = frame["Age"].to_numpy(dtype=np.float64)
    want = (age[te] - age[tr].mean()) / age[tr].std()
    np.testing.assert_allclose(
        splits.test.inputs["tabular"][:, 0].numpy(), want, rtol=1e-4, atol=1e-4
    )
    fb = np.log1p(frame["Positive Feedback Count"].to_numpy(dtype=np.float64))
    want = (fb[te] - fb[tr].mean()) / fb[tr].std()
    np.testing.assert_allclose(
        splits.test.inputs["tabular"][:, 1].numpy(), want, rtol=1e-4, atol=1e-4
    )
    # Categorical codes: integers in [0, cardinality); train values sorted from 1, missing -> 0.
    x = _all(splits, "inputs", "tabular")
    for j, card in enumerate(meta["cardinalities"]):
        codes = x[:, 2 + j]
        assert bool((codes == codes.round()).all()) and codes.min() >= 0 and codes.max() < card
    dept = sorted(frame["Department Name"].iloc[tr].dropna().unique())
    assert meta["cardinalities"][1] == len(dept) + 1 == 7
    row = te[0]
    value = frame["Department Name"].iloc[row]
    expected = 0 if pd.isna(value) else dept.index(value) + 1
    assert splits.test.inputs["tabular"][0, 3].item() == expected
    missing = frame["Class Name"].isna().to_numpy()
    order = np.concatenate([splits.info["indices"][k] for k in ("train", "val", "test")])
    assert bool((x[torch.from_numpy(missing[order]), 4] == 0).all())
    # Clothing IDs seen fewer than 5 times in training get the reserved code 0.
    ids = frame["Clothing ID"].iloc[tr].value_counts()
    assert meta["cardinalities"][3] == int((ids >= 5).sum()) + 1


def test_rating_target(data_root: Path) -> None:
    s = load_dataset("reviews", target="rating", n=4000)
    assert s.num_classes == 5 and s.train.class_names == ["1", "2", "3", "4", "5"]
    labels = _all(s, "labels")
    assert labels.min() == 0 and labels.max() == 4
    counts = labels.bincount(minlength=5).float() / len(labels)
    full = torch.tensor([842, 1565, 2871, 5077, 13131]) / 23486
    assert torch.allclose(counts, full, atol=0.02)


def test_subsample_is_seeded_and_unseen_categories_get_code_zero(data_root: Path) -> None:
    a = load_dataset("reviews", n=1000, seed=2)
    b = load_dataset("reviews", n=1000, seed=2)
    c = load_dataset("reviews", n=1000, seed=3)
    assert len(a.train) + len(a.val) + len(a.test) == 1000
    assert torch.equal(a.test.inputs["text"], b.test.inputs["text"])
    assert not torch.equal(a.train.inputs["text"][:50], c.train.inputs["text"][:50])
    # With 700 training rows some item ids of val/test were never seen in training: code 0.
    ids = a.test.inputs["tabular"][:, 5]
    assert bool((ids == 0).any())


def test_bad_options_raise(data_root: Path) -> None:
    with pytest.raises(DataError, match="target must be one of"):
        load_dataset("reviews", target="stars")
    with pytest.raises(DataError, match="n must be an int"):
        load_dataset("reviews", n=5)
    with pytest.raises(DataError, match="max_tokens must be an int"):
        load_dataset("reviews", max_tokens=0)
