"""The target of a table: its task, its classes in order, and how a cell becomes a label.

Shape legend: ``n`` rows, ``k`` classes, labels or target columns.

Tasks (inferred, overridable with ``task=``): a list column or several target columns
of 0/1 values is ``multilabel`` (several non-0/1 columns: ``regression``); strings,
booleans and integer-valued numbers with at most ``max_classes`` distinct values are
``binary`` (2 classes) or ``multiclass``; other numbers ``regression``. A multilabel
list column holds either 0/1 vectors of one length (labels ``"0"``, ``"1"``, ...) or
lists of label names; a numeric list of another length or with values other than 0/1
is a :class:`~mmfuse.data.DataError` naming the row.

The :class:`Target` is fitted once (:meth:`Target.infer`) and saved with the
preprocessing, so new rows' labels (for ``evaluate``) and the model's outputs
(:meth:`Target.decode`) use the training classes, in the training order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data._base import DataError, classification_task
from mmfuse.data.table.kinds._base import is_arraylike, is_missing

__all__ = ["Target"]


def _is_01(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def _class_key(v: Any, numeric: bool) -> str:
    if numeric:
        f = float(v)
        return str(int(f)) if f.is_integer() else str(f)
    return str(v)


@dataclass
class Target:
    """The fitted target (see the module docstring).

    Attributes:
        columns: the target column(s).
        task: binary, multiclass, multilabel or regression.
        names: class names (binary/multiclass, in label order), label names (multilabel),
            or the target columns (regression).
        numeric: class values were numbers (their names are the numbers' text).
        form: multilabel only: ``indicator`` (0/1 vectors) or ``names`` (lists of labels).
        mean, std: regression only: of the training rows' targets, per column.
    """

    columns: tuple[str, ...]
    task: str
    names: list[str]
    numeric: bool = False
    form: str | None = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def num_outputs(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------ inference
    @classmethod
    def infer(cls, frame: pd.DataFrame, columns: Sequence[str], *, task: str | None, max_classes: int,
              where: str) -> Target:
        cols = tuple(columns)
        if len(cols) > 1:
            vals = cls._numbers(frame, cols, where)
            keep = ~np.isnan(vals).any(axis=1)
            if not keep.any():
                raise DataError(f"{where}: target columns {list(cols)}: every row has a missing value")
            inferred = "multilabel" if _is_01(vals[keep]) else "regression"
            task = task or inferred
            if task == "multilabel" and inferred != "multilabel":
                raise DataError(f"{where}: target columns {list(cols)}: multilabel needs 0/1 values")
            if task not in ("multilabel", "regression"):
                raise DataError(f"{where}: target columns {list(cols)}: several columns make a multilabel or "
                                f"regression target, got task={task!r}")
            return cls(cols, task, list(cols), numeric=True, form="columns" if task == "multilabel" else None)
        col = cols[0]
        s = frame[col]
        keep = cls._has(s)
        if not keep.any():
            raise DataError(f"{where}: target column {col!r}: every value is missing")
        present = s[keep]
        if is_arraylike(present.iloc[0]) or task == "multilabel":
            return cls._multilabel(present, col, task, where)
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if numeric:
            v = present.to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(v)):
                r = int(present.index[~np.isfinite(v)][0])
                raise DataError(f"{where}: target column {col!r} row {r}: expected a finite number, got {v[~np.isfinite(v)][0]}")
            uniq = np.unique(v)
            integral = bool(np.all(np.mod(v, 1.0) == 0.0))
            inferred = "regression" if not integral or len(uniq) > max_classes else None
            names = [_class_key(u, True) for u in uniq]
        else:
            names = sorted({str(x) for x in present})
            inferred = None
        if task == "regression" or (task is None and inferred == "regression"):
            if not numeric:
                raise DataError(f"{where}: target column {col!r}: regression needs numbers, got {s.dtype}")
            return cls(cols, "regression", [col], numeric=True)
        if len(names) < 2:
            raise DataError(f"{where}: target column {col!r}: only one class ({names[0]!r}) in "
                            f"{int(keep.sum())} rows; a classifier needs at least two")
        task = task or classification_task(len(names))
        if task == "binary" and len(names) != 2:
            raise DataError(f"{where}: target column {col!r}: task binary needs 2 classes, got {len(names)}")
        return cls(cols, task, names, numeric=numeric)

    @classmethod
    def _multilabel(cls, present: pd.Series, col: str, task: str | None, where: str) -> Target:
        bad = next((r for r, v in present.items() if not is_arraylike(v)), None)
        if bad is not None:
            raise DataError(f"{where}: target column {col!r} row {bad}: a multilabel target needs a list, "
                            f"got {present.loc[bad]!r}")
        if task not in (None, "multilabel"):
            raise DataError(f"{where}: target column {col!r} holds lists: expected task multilabel, got {task!r}")
        lists = {r: np.asarray(v) for r, v in present.items()}
        numeric = [r for r, v in lists.items() if v.dtype.kind in "biuf"]
        if numeric and len(numeric) == len(lists):
            first = lists[numeric[0]]
            for r, v in lists.items():
                if len(v) != len(first):
                    raise DataError(f"{where}: target column {col!r} row {r}: a 0/1 list of length {len(v)}, "
                                    f"expected {len(first)} like row {numeric[0]}")
                if not _is_01(v):
                    raise DataError(f"{where}: target column {col!r} row {r}: a multilabel vector holds 0 and 1 "
                                    f"only, got {v.tolist()}")
            if len(first) < 1:
                raise DataError(f"{where}: target column {col!r}: no labels in any row")
            return cls((col,), "multilabel", [str(i) for i in range(len(first))], numeric=True, form="indicator")
        names = sorted({str(x) for v in lists.values() for x in v.tolist()})
        if not names:
            raise DataError(f"{where}: target column {col!r}: no labels in any row")
        return cls((col,), "multilabel", names, form="names")

    # ------------------------------------------------------------------ encoding
    @staticmethod
    def _has(s: pd.Series) -> np.ndarray:
        keep = ~s.map(lambda v: not is_arraylike(v) and is_missing(v)).to_numpy(dtype=bool)
        if pd.api.types.is_float_dtype(s):
            keep &= ~np.isnan(s.to_numpy(dtype=np.float64))
        return keep

    @staticmethod
    def _numbers(frame: pd.DataFrame, cols: Sequence[str], where: str) -> np.ndarray:
        vals = np.empty((len(frame), len(cols)), dtype=np.float64)
        for j, c in enumerate(cols):
            try:
                vals[:, j] = pd.to_numeric(frame[c], errors="raise").to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: target column {c!r}: expected numbers, got {e}") from e
            bad = np.isinf(vals[:, j])
            if bad.any():
                raise DataError(f"{where}: target column {c!r} row {int(frame.index[bad][0])}: expected a finite "
                                "number, got inf")
        return vals

    def present_in(self, frame: pd.DataFrame) -> bool:
        return all(c in frame.columns for c in self.columns)

    def encode(self, frame: pd.DataFrame, where: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels of the rows that have a target, (n,) bool: the row has one)``. A class not in
        training is a :class:`DataError` naming the row (``rows``: the table's row numbers)."""
        rows = np.arange(len(frame)) if rows is None else rows
        if len(self.columns) > 1:
            vals = self._numbers(frame, self.columns, where)
            keep = ~np.isnan(vals).any(axis=1)
            y = vals[keep]
            if self.task == "multilabel" and not _is_01(y):
                r = rows[keep][np.flatnonzero(~((y == 0) | (y == 1)).all(axis=1))[0]]
                raise DataError(f"{where}: target columns {list(self.columns)} row {r}: multilabel needs 0/1 values")
            return y.astype(np.float32), keep
        col = self.columns[0]
        s = frame[col]
        keep = self._has(s)
        present = s[keep].tolist()
        at = rows[keep]
        if self.task == "regression":
            try:
                y = np.asarray(present, dtype=np.float64)
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: target column {col!r}: regression needs numbers ({e})") from e
            if not np.all(np.isfinite(y)):
                raise DataError(f"{where}: target column {col!r} row {at[~np.isfinite(y)][0]}: expected a finite "
                                "number")
            return y.astype(np.float32).reshape(-1, 1), keep
        if self.task == "multilabel":
            y = np.zeros((len(present), len(self.names)), dtype=np.float32)
            pos = {n: i for i, n in enumerate(self.names)}
            for i, v in enumerate(present):
                if not is_arraylike(v):
                    raise DataError(f"{where}: target column {col!r} row {at[i]}: a multilabel target needs a list, "
                                    f"got {v!r}")
                a = np.asarray(v)
                if self.form == "indicator":
                    if len(a) != len(self.names) or a.dtype.kind not in "biuf" or not _is_01(a):
                        raise DataError(f"{where}: target column {col!r} row {at[i]}: expected a 0/1 list of "
                                        f"length {len(self.names)}, got {a.tolist()}")
                    y[i] = a
                else:
                    for x in a.tolist():
                        if str(x) not in pos:
                            raise DataError(f"{where}: target column {col!r} row {at[i]}: label {x!r} was not "
                                            f"in training; the labels are {self.names}")
                        y[i, pos[str(x)]] = 1.0
            return y, keep
        lookup = {n: i for i, n in enumerate(self.names)}
        y = np.empty(len(present), dtype=np.int64)
        for i, v in enumerate(present):
            try:
                key = _class_key(v, self.numeric)
            except (TypeError, ValueError):
                key = str(v)
            if key not in lookup:
                raise DataError(f"{where}: target column {col!r} row {at[i]}: class {v!r} was not in training; "
                                f"the classes are {self.names}")
            y[i] = lookup[key]
        return y, keep

    def fit_stats(self, labels: np.ndarray) -> None:
        """Regression: the training rows' target mean and std (per column)."""
        if self.task == "regression" and len(labels):
            y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
            self.mean = [float(v) for v in y.mean(axis=0)]
            self.std = [float(v) for v in y.std(axis=0)]

    # ------------------------------------------------------------------ saving
    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "task": self.task, "names": list(self.names),
                "numeric": self.numeric, "form": self.form, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Target:
        return cls(tuple(d["columns"]), str(d["task"]), [str(n) for n in d["names"]], bool(d.get("numeric")),
                   d.get("form"), [float(v) for v in d.get("mean", [])], [float(v) for v in d.get("std", [])])
