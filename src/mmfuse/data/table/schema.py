"""A table's schema: each column's kind and modality, inferred once and then frozen.

Column kinds are inferred from the registered kinds (:mod:`mmfuse.data.table.kinds`),
tried in order: ``image``, ``audio`` (paths with those extensions), ``embedding``
(lists, arrays or ``.npy`` paths), ``categorical`` (booleans, integers with at most
``int_categories`` values, strings with at most ``max_categories`` values),
``numeric`` (numbers), ``text`` (other strings); values of mixed types are
categorical. A column of strings that are mostly numbers (at least 90 %, not all) is
not guessed: it is a :class:`~mmfuse.data.DataError` that names it and its
non-numbers, and ``kinds={col: "numeric"}`` (reads them as missing, counted) or
``kinds={col: "text"}`` decides. ``kinds=`` overrides any inference.

Modalities: by default every numeric and categorical column goes into ``tabular``,
and every other column is its own modality named after it; ``modalities=`` chooses.

Once fitted, the schema is saved with the preprocessing and never inferred again:
new rows are read with the training kinds, whatever they look like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data._base import DataError
from mmfuse.data.table.kinds import column_kind, is_missing, list_kinds
from mmfuse.data.table.source import TableSource

__all__ = ["Schema", "infer_kind", "infer_schema"]

#: a string column whose values parse as numbers in at least this share of rows (but not all) is ambiguous
MOSTLY_NUMERIC = 0.9


@dataclass(frozen=True)
class Schema:
    """The frozen schema (see the module docstring).

    Attributes:
        columns: the training table's columns, in order.
        kinds: feature column -> kind.
        modalities: modality -> its columns.
        blocks: modality -> the block class (registry name) that reads it.
        special: column -> ``target``, ``split`` or ``group``.
        excluded: columns not used.
        forced: columns whose kind was given, not inferred.
    """

    columns: tuple[str, ...]
    kinds: Mapping[str, str]
    modalities: Mapping[str, tuple[str, ...]]
    blocks: Mapping[str, str]
    special: Mapping[str, str]
    excluded: tuple[str, ...]
    forced: tuple[str, ...]

    @property
    def feature_columns(self) -> list[str]:
        return [c for cols in self.modalities.values() for c in cols]

    def modality_of(self, column: str) -> str | None:
        return next((m for m, cols in self.modalities.items() if column in cols), None)

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "kinds": dict(self.kinds),
                "modalities": {m: list(c) for m, c in self.modalities.items()}, "blocks": dict(self.blocks),
                "special": dict(self.special), "excluded": list(self.excluded), "forced": list(self.forced)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Schema:
        return cls(tuple(d["columns"]), dict(d["kinds"]), {m: tuple(c) for m, c in d["modalities"].items()},
                   dict(d["blocks"]), dict(d["special"]), tuple(d["excluded"]), tuple(d["forced"]))


def _mostly_numeric(values: pd.Series, column: str, where: str) -> None:
    """:class:`DataError` for a string column that is mostly, not entirely, numbers."""
    items = values.tolist()
    if not items or not all(isinstance(v, str) for v in items):
        return
    conv = pd.to_numeric(values, errors="coerce")
    numbers = int(conv.notna().sum())
    if numbers < len(items) and numbers >= MOSTLY_NUMERIC * len(items):
        odd = values[conv.isna()]
        examples = ", ".join(f"{v!r} (row {r})" for r, v in list(odd.items())[:3])
        raise DataError(
            f"{where}: column {column!r}: {numbers} of {len(items)} values are numbers, {len(odd)} are not "
            f"({examples}); say which it is: --kind {column}=numeric (kinds={{{column!r}: 'numeric'}}) reads "
            f"the non-numbers as missing and counts them, --kind {column}=text keeps it as text")


def _mostly_arrays(values: pd.Series, column: str, where: str) -> None:
    """:class:`DataError` for a column of lists (embeddings) with a few cells that are not lists."""
    items = values.tolist()
    arrays = sum(isinstance(v, (list, tuple, np.ndarray)) for v in items)
    if 0 < len(items) - arrays and arrays >= MOSTLY_NUMERIC * len(items):
        r, v = next((r, v) for r, v in values.items() if not isinstance(v, (list, tuple, np.ndarray)))
        raise DataError(f"{where}: column {column!r} row {r}: {v!r} in a column of lists ({arrays} of "
                        f"{len(items)} rows); an embedding cell holds a list of numbers, or nothing")


def infer_kind(s: pd.Series, options: TableSource, *, column: str = "", where: str = "") -> str:
    """The kind of column ``s`` (see the module docstring)."""
    values = s[~s.map(lambda v: not isinstance(v, (list, tuple, np.ndarray)) and is_missing(v))]
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        _mostly_numeric(values, column or str(s.name), where or "table")
        _mostly_arrays(values, column or str(s.name), where or "table")
    for name in list_kinds():
        if column_kind(name).infer(values, options):
            return name
    return "categorical"


def infer_schema(frame: pd.DataFrame, options: TableSource, where: str) -> Schema:
    """The schema of ``frame`` under ``options`` (:class:`DataError` naming what is wrong)."""
    columns = [str(c) for c in frame.columns]

    def need(col: str, what: str) -> None:
        if col not in frame.columns:
            raise DataError(f"{where}: {what} column {col!r} does not exist; the columns are {columns}")

    for t in options.targets:
        need(t, "target")
    special = {t: "target" for t in options.targets}
    if isinstance(options.split, str):
        need(options.split, "split")
        special[options.split] = "split"
    elif isinstance(options.split, Mapping):
        need(options.split["group"], "group")
        special[options.split["group"]] = "group"
    for c in options.exclude:
        need(c, "excluded")
    for c in options.kinds:
        need(c, "kinds:")
    if options.modalities is not None:
        for m, cols in options.modalities.items():
            for c in cols:
                need(c, f"modality {m!r}:")
                if c in special:
                    raise DataError(f"{where}: modality {m!r}: column {c!r} is the {special[c]} column")
        used = [c for cols in options.modalities.values() for c in cols]
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise DataError(f"{where}: columns {twice} are in more than one modality")
    else:
        used = [c for c in columns if c not in special and c not in options.exclude]
    if not used:
        raise DataError(f"{where}: no feature columns left besides {sorted(special)}; the columns are {columns}")
    kinds = {c: options.kinds.get(c) or infer_kind(frame[c], options, column=c, where=where) for c in used}

    if options.modalities is not None:
        groups = {m: tuple(cols) for m, cols in options.modalities.items()}
    else:
        groups = {}
        tab = [c for c in used if column_kind(kinds[c]).block.name == "tabular"]
        if tab:
            groups["tabular"] = tuple(tab)
        for c in used:
            if column_kind(kinds[c]).block.name != "tabular":
                if c in groups:
                    raise DataError(f"{where}: column {c!r} would be a modality of the same name as another; "
                                    "pass modalities=")
                groups[c] = (c,)
    blocks = {}
    for m, cols in groups.items():
        names = {column_kind(kinds[c]).block.name for c in cols}
        if len(names) > 1:
            first = column_kind(kinds[cols[0]]).block.name
            odd = next(c for c in cols if column_kind(kinds[c]).block.name != first)
            same = [c for c in cols if column_kind(kinds[c]).block.name == first]
            raise DataError(f"{where}: modality {m!r}: column {odd!r} is {kinds[odd]}, it cannot go with the "
                            f"{'/'.join(sorted({kinds[c] for c in same}))} columns {same}; give it its own modality")
        block = names.pop()
        cls = column_kind(kinds[cols[0]]).block
        if len(cols) != 1 and not cls.multi_column:
            raise DataError(f"{where}: modality {m!r}: an {kinds[cols[0]]} modality takes one column, got "
                            f"{list(cols)}")
        blocks[m] = block
    excluded = tuple(c for c in columns if c not in special and c not in kinds)
    return Schema(tuple(columns), kinds, groups, blocks, special, excluded,
                  tuple(c for c in options.kinds if c in kinds))
