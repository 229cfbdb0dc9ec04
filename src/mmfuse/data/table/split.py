"""Which rows of a table train, validate and test: seeded and stratified, a column, or by group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfuse.data._base import DataError
from mmfuse.data._common import stratified_split
from mmfuse.data.table.kinds import is_missing
from mmfuse.data.table.source import TableSource

__all__ = ["SPLIT_NAMES", "split_parts"]

SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def split_parts(
    frame: pd.DataFrame, labels: np.ndarray, task: str, opts: TableSource, where: str, rows: np.ndarray
) -> tuple[list[np.ndarray], str]:
    """Row positions of ``frame`` in train, val, test; ``rows`` are the table's row numbers, for messages."""
    n = len(frame)
    fr = [1.0 - opts.val_fraction - opts.test_fraction, opts.val_fraction, opts.test_fraction]
    if opts.split is None:
        strata = labels if task in ("binary", "multiclass") else np.zeros(n, dtype=np.int64)
        parts, how = stratified_split(strata, fr, opts.seed), (
            "stratified random" if task in ("binary", "multiclass") else "random")
    elif isinstance(opts.split, str):
        col = opts.split
        which = np.empty(n, dtype=np.int64)
        for r, v in enumerate(frame[col].tolist()):
            key = str(v).strip().lower() if not is_missing(v) else None
            if key not in SPLIT_NAMES:
                raise DataError(f"{where}: split column {col!r} row {rows[r]}: expected train, val or test, got {v!r}")
            which[r] = SPLIT_NAMES[key]
        parts, how = [np.flatnonzero(which == k) for k in range(3)], f"column {col!r}"
    else:
        col = opts.split["group"]
        groups = frame[col]
        miss = groups.map(is_missing).to_numpy(dtype=bool)
        if miss.any():
            raise DataError(f"{where}: group column {col!r} row {rows[int(np.flatnonzero(miss)[0])]}: missing group")
        codes, uniq = pd.factorize(groups.map(str), sort=True)
        sizes = np.bincount(codes, minlength=len(uniq))
        order = np.random.default_rng(opts.seed).permutation(len(uniq))
        assign = np.zeros(len(uniq), dtype=np.int64)
        filled = [0, 0, 0]
        goals = [None, opts.val_fraction * n, opts.test_fraction * n]
        for g in order:
            k = 2 if filled[2] < goals[2] else 1 if filled[1] < goals[1] else 0
            assign[g] = k
            filled[k] += int(sizes[g])
        which = assign[codes]
        parts, how = [np.flatnonzero(which == k) for k in range(3)], f"by group {col!r}"
    for name, p in zip(("train", "val", "test"), parts, strict=True):
        if len(p) == 0:
            if opts.split is None and task in ("binary", "multiclass"):
                counts = np.bincount(labels)
                counts = counts[counts > 0]
                need = int(np.ceil(1.0 / min(opts.val_fraction, opts.test_fraction)))
                few = int((counts < need).sum())
                if few:
                    raise DataError(
                        f"{where}: {few} of the {len(counts)} classes have fewer than {need} rows (the median class "
                        f"has {int(np.median(counts))}), so a split stratified by class leaves the {name} split "
                        f"empty: a class needs about 1 / min(val_fraction, test_fraction) = {need} rows; use more "
                        "rows per class, fewer classes, or a split column (--split)")
            raise DataError(f"{where}: split {how}: the {name} split is empty ({n} rows); use more rows or other fractions")
    return [np.sort(p).astype(np.int64) for p in parts], how

