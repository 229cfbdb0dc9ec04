"""What a column kind is, and the registry of kinds.

Shape legend: ``n`` rows.

A *column kind* (``numeric``, ``text``, ...) says how one column is read. A modality
of a table is one *block*: a set of columns whose kinds share a :class:`Block` class
(numeric and categorical columns share :class:`~mmfuse.data.table.kinds.tabular.TabularBlock`).
A block goes through four steps, the same at training and at prediction:

1. :meth:`Block.read` turns a frame's cells into per-row raw values (:class:`Raw`):
   decoded files, tokens, numbers with NaN; which rows have the modality at all;
2. :meth:`Block.fit` learns its state from the raw values of the training rows only
   (medians, codes, vocabulary, channel statistics, lengths);
3. :meth:`Block.apply` turns raw values into the model's tensor and mask with that
   state; :meth:`Block.spec` is the :class:`~mmfuse.data.ModalitySpec` it gives;
4. :meth:`Block.state` / :meth:`Block.from_state` save and load the fitted state as
   JSON (and named arrays, saved as safetensors), never pickle.

Adding a kind (say, video) is one module with a :class:`ColumnKind`, a :class:`Block`
and a :func:`register_kind` call, imported in ``kinds/__init__.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from mmfuse.data._base import DataError, ModalitySpec

__all__ = [
    "BadFile",
    "Block",
    "ColumnKind",
    "Encoded",
    "Raw",
    "ReadContext",
    "block_class",
    "column_kind",
    "is_blank",
    "is_missing",
    "list_kinds",
    "paths_ending",
    "register_kind",
    "resolve_path",
]


def is_missing(v: Any) -> bool:
    """None, NaN, ``pd.NA`` or ``NaT``."""
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def is_blank(v: Any) -> bool:
    """Missing, or a string of white space."""
    return is_missing(v) or (isinstance(v, str) and not v.strip())


def is_arraylike(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def paths_ending(values: pd.Series, extensions: tuple[str, ...]) -> bool:
    """Every value is a string ending in one of ``extensions`` (case-insensitive): a column of file paths."""
    items = values.tolist()
    return bool(items) and all(isinstance(v, str) and v.strip().lower().endswith(extensions) for v in items)


def resolve_path(value: str, base: Path) -> Path:
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else base / p


@dataclass(frozen=True)
class BadFile:
    """A file a row points at that could not be used (the row's modality is then missing)."""

    column: str
    row: int
    path: str
    reason: str


@dataclass
class ReadContext:
    """Where a frame comes from and what reading it found.

    Attributes:
        where: the table's name, for messages.
        base: folder that relative file paths resolve against.
        rows: ``(n,)`` the table's own row numbers of the frame's rows (for messages).
        on_bad_file: ``missing`` (a bad file makes the modality missing, recorded) or ``error``.
        bad_files: what was recorded.
        counts: ``"<column>: <what>"`` -> rows, e.g. unseen categories, non-numbers read as
            missing, sequences cut to the trained length (the summary ``predict`` prints).
        within: the folder every file path must stay in once resolved (``..``, an absolute
            path, a link out of it are refused, whatever ``on_bad_file`` says), or None for
            no such rule (``allow_outside``, or a DataFrame with no folder of its own).
        how_to_allow: what the refusal tells the user to do.
    """

    where: str
    base: Path
    rows: np.ndarray
    on_bad_file: str = "missing"
    bad_files: list[BadFile] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    within: Path | None = None
    how_to_allow: str = "set allow_outside=true (data.allow_outside=true, or allow_outside: true under data:)"

    def __post_init__(self) -> None:
        if self.within is not None:
            self.within = Path(self.within).expanduser().resolve()

    def path(self, column: str, position: int, value: str) -> Path:
        """The file a cell names, resolved against :attr:`base`.

        Raises:
            DataError: it leaves :attr:`within` (the message names the row, the value, where
                it leads and how to allow it).
        """
        path = resolve_path(value, self.base)
        if self.within is not None:
            real = path.resolve()
            if not real.is_relative_to(self.within):
                raise DataError(f"{self.where}: column {column!r} row {self.row(position)}: {value.strip()!r} "
                                f"leads to {real}, outside the folder {self.within}: paths that leave the table's "
                                f"folder are refused; {self.how_to_allow} to read it")
        return path

    def bad(self, column: str, position: int, path: Path, reason: str) -> None:
        row = int(self.rows[position])
        if self.on_bad_file == "error":
            raise DataError(f"{self.where}: column {column!r} row {row}: {path}: {reason}")
        self.bad_files.append(BadFile(column, row, str(path), reason))

    def count(self, what: str, n: int) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + int(n)

    def row(self, position: int) -> int:
        return int(self.rows[position])


@dataclass
class Raw:
    """One block's raw values for ``n`` rows: ``present`` ``(n,)`` bool, ``data`` (an array,
    a list, or a dict of them, first axis the rows), ``token_mask`` ``(n, t)`` or None."""

    present: np.ndarray
    data: Any
    token_mask: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Raw:
        return Raw(self.present[idx], _take(self.data, idx),
                   None if self.token_mask is None else self.token_mask[idx])


def _take(data: Any, idx: np.ndarray) -> Any:
    if isinstance(data, np.ndarray):
        return data[idx]
    if isinstance(data, list):
        return [data[i] for i in idx]
    if isinstance(data, dict):
        return {k: _take(v, idx) for k, v in data.items()}
    if isinstance(data, tuple):
        return tuple(_take(v, idx) for v in data)
    return data


@dataclass
class Encoded:
    """What the model gets for one modality: ``x`` ``(n, ...)``, ``mask`` ``(n,)`` or ``(n, t)``."""

    x: torch.Tensor
    mask: torch.Tensor


class Block:
    """One modality of a table: its columns, its fitted state and the transform (see the module docstring).

    Args:
        modality: the modality's name.
        columns: its columns, in order.
        kinds: column -> kind, for these columns.
        options: the table's :class:`~mmfuse.data.table.TableSource` (the settings of every kind).
        forced: the columns whose kind the user gave (not inferred).
    """

    #: the registry name of this block class (the modality's ``block`` in the schema)
    name: ClassVar[str] = ""
    #: whether one modality may hold several columns of this block
    multi_column: ClassVar[bool] = False

    def __init__(self, modality: str, columns: tuple[str, ...], kinds: Mapping[str, str], options: Any,
                 forced: frozenset[str] = frozenset()) -> None:
        self.modality = modality
        self.columns = tuple(columns)
        self.kinds = {c: kinds[c] for c in columns}
        self.options = options
        self.forced = frozenset(c for c in forced if c in self.columns)
        self.fitted = False

    # the four steps
    def read(self, frame: pd.DataFrame, ctx: ReadContext) -> Raw:
        raise NotImplementedError

    def fit(self, raw: Raw) -> None:
        """Learn the state from ``raw`` (the training rows only)."""
        raise NotImplementedError

    def apply(self, raw: Raw, ctx: ReadContext) -> Encoded:
        raise NotImplementedError

    def spec(self) -> ModalitySpec:
        raise NotImplementedError

    # saving
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted state: a JSON-able dict and named arrays."""
        raise NotImplementedError

    def load_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def transform(self, frame: pd.DataFrame, ctx: ReadContext) -> Encoded:
        """``apply(read(frame))``."""
        return self.apply(self.read(frame, ctx), ctx)

    def _need_fitted(self) -> None:
        if not self.fitted:
            raise DataError(f"modality {self.modality!r}: the preprocessing is not fitted (call fit first)")


@dataclass(frozen=True)
class ColumnKind:
    """A column kind: its name, the block class that reads it, and how it is recognised.

    ``infer(values, options)`` gets the column's non-missing values (a Series) and says
    whether they are of this kind; kinds are tried in ``priority`` order (lowest first).
    """

    name: str
    block: type[Block]
    infer: Callable[[pd.Series, Any], bool]
    priority: int = 100
    summary: str = ""


_KINDS: dict[str, ColumnKind] = {}
_BLOCKS: dict[str, type[Block]] = {}


def register_kind(kind: ColumnKind) -> ColumnKind:
    """Add a column kind (and its block class) to the registry."""
    if kind.name in _KINDS:
        raise ValueError(f"column kind {kind.name!r} is registered already")
    if not kind.block.name:
        raise ValueError(f"column kind {kind.name!r}: its block class has no name")
    _KINDS[kind.name] = kind
    _BLOCKS[kind.block.name] = kind.block
    return kind


def list_kinds() -> tuple[str, ...]:
    """The registered column kinds, in inference order."""
    return tuple(k.name for k in sorted(_KINDS.values(), key=lambda k: k.priority))


def column_kind(name: str) -> ColumnKind:
    if name not in _KINDS:
        raise DataError(f"column kind {name!r}: expected one of {list(list_kinds())}")
    return _KINDS[name]


def block_class(name: str) -> type[Block]:
    if name not in _BLOCKS:
        raise DataError(f"block {name!r}: expected one of {sorted(_BLOCKS)}")
    return _BLOCKS[name]
