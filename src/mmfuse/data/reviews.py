"""Women's Clothing E-Commerce Reviews (``reviews``): review text + tabular facts about the buyer and item.

Shape legend: ``n`` samples, ``t`` tokens (``max_tokens``), ``k`` tabular columns.

Modalities:

- ``text`` ``(t,)`` int64: ``Title`` and ``Review Text`` joined, lowercased and split
  into words (letters and digits, with an optional apostrophe suffix such as
  ``don't``); ids from a vocabulary built on the training split only (words seen at
  least ``min_count`` times, the ``max_vocab - 2`` most frequent), pad id 0, unknown
  id 1, padded or truncated to ``max_tokens``. Reviews with neither a title nor a
  text (844 of 23,486) are *missing* text: mask False, all ids pad. The mask is
  ``(n,)`` presence; the encoder handles padding by the pad id.
- ``tabular`` ``(k,)`` float: numeric ``Age`` and ``log1p(Positive Feedback Count)``
  (the count is heavy-tailed), both standardised with training statistics, then the
  categorical codes of ``Division Name``, ``Department Name``, ``Class Name`` and
  ``Clothing ID``. Code 0 is reserved for a value that is missing, unseen in the
  training split, or (``Clothing ID``) seen fewer than ``clothing_id_min_count``
  times there; the other codes number the training values in sorted order.

Targets: ``target="recommended"`` (default, ``Recommended IND``, 2 classes) or
``target="rating"`` (``Rating`` 1-5 as labels 0-4). Splits: seeded and stratified by
the label, 70/10/20 by default; ``n`` draws a seeded random subsample first.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Literal

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
from mmfuse.data._files import SOURCES, require

__all__ = ["PAD_ID", "UNK_ID", "build_vocab", "encode", "load_reviews", "tokenize"]

PAD_ID = 0
UNK_ID = 1
_ROWS = 23486
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMERIC = ("Age", "Positive Feedback Count")
_CATEGORICAL = ("Division Name", "Department Name", "Class Name", "Clothing ID")
_TARGETS = {"recommended": "Recommended IND", "rating": "Rating"}


def tokenize(text: str) -> list[str]:
    """Lowercase words: runs of letters and digits, keeping an apostrophe suffix (``don't``)."""
    return _TOKEN.findall(text.lower())


def build_vocab(docs: list[list[str]], *, min_count: int, max_size: int) -> dict[str, int]:
    """Word -> id for words seen ``>= min_count`` times, most frequent first (ties alphabetical).

    Ids start at 2 (0 is padding, 1 unknown); at most ``max_size`` ids in all.
    """
    counts = Counter(w for doc in docs for w in doc)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return {w: i + 2 for i, w in enumerate(kept[: max(max_size - 2, 0)])}


def encode(docs: list[list[str]], vocab: dict[str, int], max_tokens: int) -> np.ndarray:
    """``(n, max_tokens)`` int64 ids, unknown words -> 1, truncated or padded with 0.

    A plain loop of dict lookups: measured faster, and lighter on memory, than one
    hash-table pass over the flattened words (benchmarks/results/predict_speed_cpu2.md)."""
    out = np.full((len(docs), max_tokens), PAD_ID, dtype=np.int64)
    get = vocab.get
    for r, doc in enumerate(docs):
        if doc:
            ids = [get(w, UNK_ID) for w in doc[:max_tokens]]
            out[r, : len(ids)] = ids
    return out


def _codes(
    values: pd.Series, train_rows: np.ndarray, min_count: int
) -> tuple[np.ndarray, list[str]]:
    """Codes ``1..c`` for values seen ``>= min_count`` times in the train rows, 0 for everything else."""
    as_str = values.astype("string")
    counts = as_str.iloc[train_rows].dropna().value_counts()
    cats = sorted(str(c) for c, k in counts.items() if k >= min_count)
    lookup = {c: i + 1 for i, c in enumerate(cats)}
    codes = np.array(
        [lookup.get(v, 0) if isinstance(v, str) else 0 for v in as_str.tolist()], dtype=np.int64
    )
    return codes, cats


@register_dataset("reviews")
def load_reviews(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    target: Literal["recommended", "rating"] = "recommended",
    n: int | None = None,
    max_tokens: int = 64,
    min_count: int = 2,
    max_vocab: int = 10000,
    clothing_id_min_count: int = 5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Load the clothing reviews as a ``text`` + ``tabular`` dataset (see the module docstring).

    Args:
        root: data root holding ``clothing_reviews/``.
        seed: seed of the subsample and of the stratified split.
        target: ``recommended`` (binary) or ``rating`` (5 classes, labels 0-4).
        n: number of reviews to draw at random first (None: all 23,486).
        max_tokens: token ids per review.
        min_count: a word needs this many training occurrences to get an id.
        max_vocab: vocabulary size including the pad and unknown ids.
        clothing_id_min_count: training occurrences an item id needs to get a code.
        val_fraction: fraction for validation.
        test_fraction: fraction for test.
    """
    if target not in _TARGETS:
        raise DataError(f"reviews: target must be one of {list(_TARGETS)}, got {target!r}")
    for what, v, low in (
        ("max_tokens", max_tokens, 1),
        ("min_count", min_count, 1),
        ("max_vocab", max_vocab, 3),
        ("clothing_id_min_count", clothing_id_min_count, 1),
    ):
        if not isinstance(v, int) or v < low:
            raise DataError(f"reviews: {what} must be an int >= {low}, got {v!r}")
    check_fractions("reviews", val_fraction, test_fraction)
    base = require("reviews", root)
    path = base / SOURCES["clothing_reviews"].files[0].path
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as parquet: {e}") from e
    needed = ["Title", "Review Text", *_NUMERIC, *_CATEGORICAL, *_TARGETS.values()]
    missing_cols = [c for c in needed if c not in frame.columns]
    if missing_cols or len(frame) != _ROWS:
        raise DataError(
            f"{path}: expected {_ROWS} rows with columns {needed}, got {len(frame)} rows, missing {missing_cols}"
        )
    if n is not None:
        if not isinstance(n, int) or not 10 <= n <= _ROWS:
            raise DataError(f"reviews: n must be an int in [10, {_ROWS}] or None, got {n!r}")
        pick = np.sort(np.random.default_rng([seed, 7]).choice(_ROWS, size=n, replace=False))
        frame = frame.iloc[pick].reset_index(drop=True)

    raw_y = np.array(frame[_TARGETS[target]].to_numpy(dtype=np.int64))
    labels = raw_y - 1 if target == "rating" else raw_y
    num_classes = 5 if target == "rating" else 2
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{path}: {_TARGETS[target]} outside the expected range")
    parts = stratified_split(
        labels, [1.0 - val_fraction - test_fraction, val_fraction, test_fraction], seed
    )
    train_rows = parts[0]

    title = frame["Title"].astype("string").fillna("")
    body = frame["Review Text"].astype("string").fillna("")
    docs = [tokenize(f"{a} {b}") for a, b in zip(title.tolist(), body.tolist(), strict=True)]
    vocab = build_vocab([docs[i] for i in train_rows], min_count=min_count, max_size=max_vocab)
    ids = encode(docs, vocab, max_tokens)
    present = np.array([len(d) > 0 for d in docs])

    age = frame["Age"].to_numpy(dtype=np.float32)
    feedback = np.log1p(frame["Positive Feedback Count"].to_numpy(dtype=np.float32))
    numeric = np.stack([age, feedback], axis=1)
    mean, std = fit_standardise(numeric[train_rows])
    numeric = (numeric - mean) / std
    cat_cols, cards, categories = [], [], {}
    for col in _CATEGORICAL:
        codes, cats = _codes(
            frame[col], train_rows, clothing_id_min_count if col == "Clothing ID" else 1
        )
        cat_cols.append(codes.astype(np.float32))
        cards.append(len(cats) + 1)
        categories[col] = cats
    tab = np.concatenate([numeric, np.stack(cat_cols, axis=1)], axis=1).astype(np.float32)
    columns = ["Age", "log1p(Positive Feedback Count)", *_CATEGORICAL]

    specs = {
        "text": ModalitySpec(
            "text",
            (max_tokens,),
            {
                "vocab_size": len(vocab) + 2,
                "pad_id": PAD_ID,
                "unk_id": UNK_ID,
                "max_tokens": max_tokens,
            },
        ),
        "tabular": ModalitySpec(
            "tabular",
            (tab.shape[1],),
            {"num_numeric": 2, "cardinalities": cards, "columns": columns},
        ),
    }
    class_names = (
        ["1", "2", "3", "4", "5"] if target == "rating" else ["not recommended", "recommended"]
    )
    full = MultimodalDataset(
        "reviews",
        {"text": torch.from_numpy(ids), "tabular": torch.from_numpy(tab)},
        torch.from_numpy(labels),
        specs=specs,
        num_classes=num_classes,
        masks={"text": torch.from_numpy(present)},
        class_names=class_names,
    )
    train, val, test = (full.subset(torch.from_numpy(p)) for p in parts)
    info = {
        "target": target,
        "seed": seed,
        "n": len(frame),
        "vocab": ["<pad>", "<unk>", *sorted(vocab, key=vocab.__getitem__)],
        "categories": categories,
        "fractions": {
            "train": 1.0 - val_fraction - test_fraction,
            "val": val_fraction,
            "test": test_fraction,
        },
        "indices": {k: p.tolist() for k, p in zip(("train", "val", "test"), parts, strict=True)},
    }
    return DatasetSplits("reviews", train, val, test, info)
