"""Embedding columns: a vector or a sequence of vectors per row.

Shape legend: ``n`` rows, ``t`` tokens, ``d`` features.

A cell holds a list or array (a Parquet ``list<float>`` or ``list<list<float>>``), or
the path of a ``.npy`` file. Fitted on the training rows: 1-d arrays of one length
``d`` make a ``vector`` ``(d,)`` modality; 2-d arrays (or 1-d ones of varying length,
read as ``t`` tokens of ``d = 1``) a ``sequence`` ``(t, d)`` with a token mask, ``t``
the longest training row (ragged lengths allowed; a longer row at prediction is cut to
``t`` and counted). A NaN in an embedding makes it missing. A row of another length or
width than training's is a :class:`~mmfuse.data.DataError` naming the column and row.
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
    is_arraylike,
    is_blank,
    paths_ending,
    register_kind,
    resolve_path,
)

__all__ = ["EmbeddingBlock"]

#: a 1-d list column with one length in at least this share of rows is a fixed-length vector:
#: the other rows are errors, not a reason to read every row as a sequence
ODD_ROWS = 0.9


def _as_array(v: Any) -> np.ndarray:
    """A cell as a float32 array; a list of vectors (Parquet ``list<list<float>>``, read as an
    object array of arrays) as ``(t, d)``."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        items = [np.asarray(e, dtype=np.float32) for e in v]
        if not items:
            return np.zeros((0,), dtype=np.float32)
        if all(e.ndim == 0 for e in items):
            return np.asarray(items, dtype=np.float32)
        widths = {e.shape for e in items}
        if len(widths) != 1:
            raise ValueError(f"its vectors have different shapes {sorted(widths)}")
        return np.stack(items).astype(np.float32)
    if isinstance(v, (list, tuple)) and v and all(is_arraylike(e) for e in v):
        return _as_array(np.array([np.asarray(e, dtype=np.float32) for e in v] + [None], dtype=object)[:-1])
    return np.asarray(v, dtype=np.float32)


class EmbeddingBlock(Block):
    name = "embedding"

    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        (col,) = self.columns
        n = len(frame)
        arrays: list[np.ndarray | None] = [None] * n
        values = frame[col].tolist() if col in frame.columns else [None] * n
        from_file = False
        for r, v in enumerate(values):
            if not isinstance(v, (np.ndarray, list, tuple)) and is_blank(v):
                continue
            if isinstance(v, str):
                from_file = True
                path = ctx.path(col, r, v)
                if not path.is_file():
                    ctx.bad(col, r, path, "file not found" if not path.exists() else "not a regular file")
                    continue
                try:
                    a = np.load(path, allow_pickle=False)
                except (OSError, ValueError, EOFError) as e:
                    raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: {path}: cannot read as "
                                    f".npy: {e}") from e
                where = f": {path}"
            else:
                try:
                    a = _as_array(v)
                except (ValueError, TypeError) as e:
                    raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: expected a list of numbers "
                                    f"or of vectors, got {e}") from e
                where = ""
            if a.ndim not in (1, 2) or a.size == 0:
                raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}{where}: expected a 1-d or 2-d "
                                f"non-empty array, got shape {a.shape}")
            a = a.astype(np.float32, copy=False)
            if not np.all(np.isfinite(a)):
                continue  # a NaN embedding is a missing one
            arrays[r] = a
        if not from_file and not self.fitted:  # one odd row in a fixed-length column is an error, not a sequence
            got = [(r, a) for r, a in enumerate(arrays) if a is not None and a.ndim == 1]
            lengths = [a.shape[0] for _, a in got]
            if len(set(lengths)) > 1:
                want = max(set(lengths), key=lengths.count)
                if lengths.count(want) >= ODD_ROWS * len(lengths):
                    r, a = next((r, a) for r, a in got if a.shape[0] != want)
                    raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: an embedding of length "
                                    f"{a.shape[0]}, expected {want} like {lengths.count(want)} of the "
                                    f"{len(lengths)} rows (variable lengths make a sequence only when no one "
                                    "length holds 90 % of the rows)")
        if from_file and not self.fitted:  # .npy files of one column have one length
            got = [(r, a) for r, a in enumerate(arrays) if a is not None and a.ndim == 1]
            lengths = [a.shape[0] for _, a in got]
            if len(set(lengths)) > 1:
                want = max(set(lengths), key=lengths.count)
                r, a = next((r, a) for r, a in got if a.shape[0] != want)
                raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: {resolve_path(values[r], ctx.base)}: "
                                f"embedding of length {a.shape[0]}, expected {want} like the other rows")
        present = np.array([a is not None for a in arrays], dtype=bool)
        return Raw(present, {"arrays": arrays, "from_file": from_file})

    def fit(self, raw: Raw) -> None:
        (col,) = self.columns
        got = [a for a in raw.data["arrays"] if a is not None]
        if not got:
            raise DataError(f"column {col!r}: no training row has an embedding")
        dims = {a.ndim for a in got}
        if dims == {1}:
            lengths = sorted({a.shape[0] for a in got})
            if len(lengths) == 1:
                self.layout, self.length, self.dim = "vector", None, lengths[0]
                self.fitted = True
                return
            if raw.data["from_file"]:
                want = max(lengths, key=[a.shape[0] for a in got].count)
                raise DataError(f"column {col!r}: .npy embeddings of lengths {lengths} in the training rows; "
                                f"1-d files must all have one length (expected {want} like most rows)")
            self.layout, self.length, self.dim = "sequence", max(lengths), 1
        elif dims == {2}:
            ds = sorted({a.shape[1] for a in got})
            if len(ds) != 1:
                raise DataError(f"column {col!r}: embedding tokens of {ds} features in the training rows; "
                                "expected one width")
            self.layout, self.length, self.dim = "sequence", max(a.shape[0] for a in got), ds[0]
        else:
            raise DataError(f"column {col!r}: training rows mix 1-d and 2-d embeddings")
        self.fitted = True

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        self._need_fitted()
        (col,) = self.columns
        arrays = raw.data["arrays"]
        n = len(arrays)
        if self.layout == "vector":
            x = np.zeros((n, self.dim), dtype=np.float32)
            for r, a in enumerate(arrays):
                if a is None:
                    continue
                if a.ndim != 1 or a.shape[0] != self.dim:
                    raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: embedding of shape "
                                    f"{a.shape}, expected ({self.dim},) as in training")
                x[r] = a
            return Encoded(torch.from_numpy(x), torch.from_numpy(raw.present.copy()))
        t, d = self.length, self.dim
        x = np.zeros((n, t, d), dtype=np.float32)
        tm = np.zeros((n, t), dtype=bool)
        cut = 0
        for r, a in enumerate(arrays):
            if a is None:
                continue
            if a.ndim == 1 and d == 1:
                a = a[:, None]
            if a.ndim != 2 or a.shape[1] != d:
                raise DataError(f"{ctx.where}: column {col!r} row {ctx.row(r)}: embedding of shape {a.shape}, "
                                f"expected (tokens, {d}) as in training")
            if a.shape[0] > t:
                a, cut = a[:t], cut + 1
            x[r, :a.shape[0]] = a
            tm[r, :a.shape[0]] = True
        ctx.count(f"{col}: sequence longer than training's {t} tokens, cut", cut)
        return Encoded(torch.from_numpy(x), torch.from_numpy(tm))

    def spec(self) -> ModalitySpec:
        self._need_fitted()
        if self.layout == "vector":
            return ModalitySpec("vector", (self.dim,), {"columns": list(self.columns)})
        return ModalitySpec("sequence", (self.length, self.dim), {"columns": list(self.columns)})

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_fitted()
        return {"layout": self.layout, "length": self.length, "dim": self.dim}, {}

    def load_state(self, state: Any, arrays: Any) -> None:
        if state["layout"] not in ("vector", "sequence"):
            raise DataError(f"modality {self.modality!r}: unknown embedding layout {state['layout']!r}")
        self.layout = str(state["layout"])
        self.length = None if state["length"] is None else int(state["length"])
        self.dim = int(state["dim"])
        self.fitted = True


def _is_embedding(values: pd.Series, options: Any) -> bool:
    items = values.tolist()
    if not items:
        return False
    return all(is_arraylike(v) for v in items) or paths_ending(values, (".npy",))


register_kind(ColumnKind("embedding", EmbeddingBlock, _is_embedding, priority=30,
                         summary="lists, arrays or .npy paths: a vector, or a sequence with a token mask"))
