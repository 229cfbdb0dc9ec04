"""Numeric and categorical columns: one ``tabular`` (or ``vector``) modality.

Shape legend: ``n`` rows, ``k`` features.

Numeric columns: a NaN is replaced by the column's training median, the values are
standardised with the training mean and std, and every column that had a NaN in a
*training* row gets a 0/1 missing indicator (appended after the numeric columns), so
the width is fixed at fit: a NaN at prediction in a column without an indicator is
filled with the median all the same. A value that is not a number is a
:class:`~mmfuse.data.DataError` naming the column and row, unless the user gave the
column's kind (``kinds={"Age": "numeric"}``) and at most 10 % of the training values are
not numbers: those (and any at prediction) are then read as missing and counted.
``inf`` is not a number here either.

Categorical columns: codes ``1..c`` for the values seen in training rows (sorted),
``0`` for a missing value and for a value never seen in training (counted at
prediction). The modality is missing for a row only when all its columns are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data._base import DataError, ModalitySpec
from mmfuse.data.table.kinds._base import (
    Block,
    ColumnKind,
    Encoded,
    Raw,
    ReadContext,
    is_blank,
    register_kind,
)

#: a column whose kind is given as numeric reads non-numbers as missing when they are at most 10 % of its values
MOSTLY_NUMERIC = 0.9

__all__ = ["TabularBlock", "numeric_values"]


def numeric_values(s: pd.Series, *, coerce: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(float64 values with NaN for missing, (n,) bool: a cell that is not a number)``.

    Blank strings are missing; ``inf`` is not a number. With ``coerce`` the second array
    marks the cells read as missing; without it the caller raises on them.
    """
    if pd.api.types.is_bool_dtype(s):
        vals = s.astype(np.float64).to_numpy()
        return vals, np.zeros(len(s), dtype=bool)
    if pd.api.types.is_numeric_dtype(s):  # no strings to read: only inf is not a number
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isinf(vals)
        return (np.where(bad, np.nan, vals) if bad.any() else vals), bad
    conv = pd.to_numeric(s, errors="coerce")
    vals = conv.to_numpy(dtype=np.float64, na_value=np.nan)
    blank = s.map(is_blank).to_numpy(dtype=bool)
    bad = (np.isnan(vals) & ~blank) | np.isinf(vals)
    vals = np.where(bad, np.nan, vals)
    return vals, bad


class TabularBlock(Block):
    """Numeric and categorical columns as one modality (see the module docstring)."""

    name = "tabular"
    multi_column = True

    @property
    def num_cols(self) -> list[str]:
        return [c for c in self.columns if self.kinds[c] == "numeric"]

    @property
    def cat_cols(self) -> list[str]:
        return [c for c in self.columns if self.kinds[c] == "categorical"]

    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        n = len(frame)
        num = np.full((n, len(self.num_cols)), np.nan, dtype=np.float64)
        for j, c in enumerate(self.num_cols):
            if c not in frame.columns:
                continue
            vals, bad = numeric_values(frame[c], coerce=c in self.forced)
            if bad.any():
                given = frame[c].map(lambda v: not is_blank(v)).to_numpy(dtype=bool)
                mostly = bad.sum() <= (1 - MOSTLY_NUMERIC) * max(int(given.sum()), 1)
                if c not in self.forced or (not self.fitted and not mostly):
                    r = int(np.flatnonzero(bad)[0])
                    value = frame[c].iloc[r]
                    value = value.item() if isinstance(value, np.generic) else value
                    raise DataError(
                        f"{ctx.where}: column {c!r} (modality {self.modality!r}, numeric) row {ctx.row(r)}: "
                        f"expected a number, got {value!r}"
                        + ("" if self.fitted else f" ({int(bad.sum())} such rows); give the column's kind to "
                           f"read them as missing (kinds={{{c!r}: 'numeric'}}, --kind {c}=numeric) or to "
                           f"make it text (--kind {c}=text)"))
                ctx.count(f"{c}: not a number, read as missing", int(bad.sum()))
            num[:, j] = vals
        cats = np.full((n, len(self.cat_cols)), None, dtype=object)  # (n, categorical columns)
        for j, c in enumerate(self.cat_cols):
            if c in frame.columns:
                cats[:, j] = _categories(frame[c])
        present = (~np.isnan(num)).any(axis=1) if self.num_cols else np.zeros(n, dtype=bool)
        if self.cat_cols:
            present |= (cats != None).any(axis=1)  # noqa: E711  (elementwise on an object array)
        return Raw(present, {"num": num, "cats": cats})

    def fit(self, raw: Raw) -> None:
        num, cats = raw.data["num"], raw.data["cats"]
        med, mean, std, indicators = [], [], [], []
        for j, c in enumerate(self.num_cols):
            col = num[:, j]
            ok = col[~np.isnan(col)]
            m = float(np.median(ok)) if ok.size else 0.0
            filled = np.where(np.isnan(col), m, col)
            mu = float(filled.mean(dtype=np.float64)) if filled.size else 0.0
            sd = float(filled.std(dtype=np.float64)) if filled.size else 1.0
            med.append(m)
            mean.append(mu)
            std.append(sd if sd >= 1e-8 else 1.0)
            if np.isnan(col).any():
                indicators.append(c)
        self.medians, self.means, self.stds, self.indicators = med, mean, std, indicators
        self.categories = {c: sorted({v for v in s.tolist() if v is not None}) for c, s in
                           zip(self.cat_cols, cats.T, strict=True)}
        self._lookup()
        self.fitted = True

    def _lookup(self) -> None:
        self._codes = {c: {v: i + 1 for i, v in enumerate(vals)} for c, vals in self.categories.items()}

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        self._need_fitted()
        num, cats = raw.data["num"], raw.data["cats"]
        n = raw.present.shape[0]
        blocks = []
        if self.num_cols:
            nan = np.isnan(num)
            med = np.asarray(self.medians, dtype=np.float64)
            filled = np.where(nan, med[None, :], num)
            blocks.append((filled - np.asarray(self.means)[None, :]) / np.asarray(self.stds)[None, :])
            idx = [self.num_cols.index(c) for c in self.indicators]
            if idx:
                blocks.append(nan[:, idx].astype(np.float64))
        for c, s in zip(self.cat_cols, cats.T, strict=True):
            # code i + 1 for the i-th training category, 0 for missing and unseen: one hash-table pass
            known = pd.Index(self.categories[c], dtype=object).get_indexer(s).astype(np.int64)
            given = s != None  # noqa: E711  (elementwise on an object array)
            ctx.count(f"{c}: category not seen in training (unknown code)", int((given & (known < 0)).sum()))
            blocks.append((known + 1).astype(np.float64)[:, None])
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
        return Encoded(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(raw.present.copy()))

    @property
    def feature_names(self) -> list[str]:
        return [*self.num_cols, *(f"{c} missing" for c in self.indicators), *self.cat_cols]

    def spec(self) -> ModalitySpec:
        self._need_fitted()
        names = self.feature_names
        if self.cat_cols:
            return ModalitySpec("tabular", (len(names),), {
                "columns": names, "num_numeric": len(self.num_cols) + len(self.indicators),
                "cardinalities": [len(self.categories[c]) + 1 for c in self.cat_cols]})
        return ModalitySpec("vector", (len(names),), {"columns": names})

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_fitted()
        return {"medians": self.medians, "means": self.means, "stds": self.stds, "indicators": self.indicators,
                "categories": self.categories}, {}

    def load_state(self, state: Any, arrays: Any) -> None:
        self.medians = [float(v) for v in state["medians"]]
        self.means = [float(v) for v in state["means"]]
        self.stds = [float(v) for v in state["stds"]]
        self.indicators = [str(c) for c in state["indicators"]]
        self.categories = {str(c): [str(v) for v in vals] for c, vals in state["categories"].items()}
        if len(self.medians) != len(self.num_cols) or set(self.categories) != set(self.cat_cols):
            raise DataError(f"modality {self.modality!r}: the saved state does not match its columns")
        self._lookup()
        self.fitted = True


def _categories(s: pd.Series) -> np.ndarray:
    """``(n,)`` object array: each cell's category key (:func:`_category`), None where it is missing."""
    out = np.full(len(s), None, dtype=object)
    miss = s.isna().to_numpy(dtype=bool)
    vals = s[~miss]
    if pd.api.types.is_integer_dtype(vals) and not pd.api.types.is_bool_dtype(vals):
        out[~miss] = vals.astype(np.int64).astype(str).to_numpy(dtype=object)
    elif pd.api.types.is_object_dtype(vals) or pd.api.types.is_string_dtype(vals):
        items = vals.tolist()
        out[~miss] = [v if isinstance(v, str) else _category(v) for v in items]
    else:
        out[~miss] = [_category(v) for v in vals.tolist()]
    return out


def _category(v: Any) -> str:
    """A category's key: its text, with integral floats written as integers (a column of
    1.0, 2.0 read back as 1, 2 from another file is the same categories)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    return str(v)


def _integral(values: pd.Series) -> bool:
    v = values.to_numpy(dtype=np.float64)
    return bool(len(v)) and bool(np.all(np.isfinite(v))) and bool(np.all(np.mod(v, 1.0) == 0.0))


def _is_categorical(values: pd.Series, options: Any) -> bool:
    if len(values) == 0:
        return False
    if pd.api.types.is_bool_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values):
        return _integral(values) and values.nunique() <= options.int_categories
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return len(set(items)) <= options.max_categories
    return False


def _is_numeric(values: pd.Series, options: Any) -> bool:
    return len(values) == 0 or (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def _is_mixed(values: pd.Series, options: Any) -> bool:
    """The last resort: values of several types are categories."""
    return True


register_kind(ColumnKind("categorical", TabularBlock, _is_categorical, priority=40,
                         summary="few distinct strings, booleans, integers with few values: codes"))
register_kind(ColumnKind("numeric", TabularBlock, _is_numeric, priority=50,
                         summary="numbers: median-filled, standardised, missing indicators"))
