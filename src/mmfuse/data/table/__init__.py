"""Your own data: a table of columns and files in, :class:`DatasetSplits` out.

Shape legend: ``n`` rows, ``k`` tabular columns, ``t`` tokens or frames, ``d``
features, ``c``/``h``/``w`` image channels/height/width, ``f`` mel bands.

:func:`from_table` reads a pandas DataFrame, or a CSV, TSV, Parquet (file or folder of
files) or JSON Lines file, and returns the same :class:`DatasetSplits` as
:func:`mmfuse.data.load_dataset`. :class:`TableSource` holds every option in a frozen,
JSON-able record (the file, not a DataFrame) and :func:`load_table` loads it, so a run
on a user's table can be described in a config. :func:`describe_table` returns the
schema report (:class:`TableReport`) that ``mmfuse data inspect`` prints.

Everything learned from the table is one fitted object, the
:class:`TablePreprocessor` (``splits.info["preprocessor"]``): the schema (each
column's kind and modality, :mod:`~mmfuse.data.table.schema`), the target
(:mod:`~mmfuse.data.table.target`) and one fitted block per modality, each fitted on
the *training rows only* (:mod:`~mmfuse.data.table.kinds`: numeric medians and scales
and the missing indicators chosen from training rows, categorical codes with an
unknown code, the text vocabulary, image and audio statistics, embedding lengths). It
is saved with a trained model and transforms new rows the same way
(:meth:`TablePreprocessor.transform`), without the training table.

Missing values are masks, never silent imputation: an empty or missing text, a
missing, absent or undecodable image/audio file, a NaN embedding make that modality
missing for that row; a numeric/categorical modality is missing only when all its
columns are. A row with every modality missing, or with a missing target, is dropped
and counted.

Memory: files are decoded one at a time, once, at load, into compact arrays of the
fixed per-item shape (``image_size``, ``audio_seconds``): a table's dataset holds its
decoded tensors, never the files' bytes. For a Parquet folder larger than memory see
:mod:`mmfuse.data.stream`.

Example::

    from mmfuse.data import from_table, describe_table
    splits = from_table("reviews.parquet", target="Rating", task="regression",
                        exclude=["Recommended IND"], modalities={"text": ["Title", "Review Text"],
                                                                 "tabular": ["Age", "Class Name"]})
    print(describe_table("reviews.parquet", target="Recommended IND"))  # the schema report

Splits (:mod:`~mmfuse.data.table.split`): seeded and stratified by class (random for
multilabel/regression) with ``val_fraction``/``test_fraction``; or ``split="column"``
naming a column of ``train``/``val``/``test``; or ``split={"group": "column"}`` so that
no group spans two splits (whole groups, in seeded random order, fill test then val).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.data._base import DataError, DatasetSplits, register_dataset
from mmfuse.data.table.kinds import BadFile, list_kinds, register_kind
from mmfuse.data.table.preprocessor import TablePreprocessor, Transformed, fit_table
from mmfuse.data.table.reading import iter_parquet, read_table, table_format
from mmfuse.data.table.report import ColumnReport, TableReport
from mmfuse.data.table.schema import Schema
from mmfuse.data.table.source import KINDS, TableSource
from mmfuse.data.table.target import Target

__all__ = [
    "BadFile",
    "ColumnReport",
    "KINDS",
    "Schema",
    "TablePreprocessor",
    "TableReport",
    "TableSource",
    "Target",
    "Transformed",
    "describe_table",
    "from_table",
    "iter_parquet",
    "list_kinds",
    "load_table",
    "read_table",
    "register_kind",
    "table_fingerprint",
    "table_format",
    "table_options",
]


def _build(frame: pd.DataFrame, opts: TableSource, where: str, base: Path,
           within: Path | None) -> tuple[DatasetSplits, TableReport]:
    return fit_table(frame, opts, where, base, within=within)


def _options(source: Any, target: Any, extra: Mapping[str, Any]) -> tuple[TableSource, pd.DataFrame | None]:
    if isinstance(source, pd.DataFrame):
        return TableSource(path="<DataFrame>", target=target, **extra), source
    if isinstance(source, TableSource):
        raise DataError("from_table: pass a TableSource to load_table(), not from_table()")
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"from_table: source: expected a DataFrame or a path, got {type(source).__name__}")
    return TableSource(path=str(source), target=target, **extra), None


def _load(opts: TableSource, frame: pd.DataFrame | None) -> tuple[DatasetSplits, TableReport]:
    folder: Path | None = None  # the folder file paths must stay in
    if frame is None:
        frame = read_table(opts.path, opts.format)
        where = str(Path(opts.path).expanduser())
        folder = Path(where) if Path(where).is_dir() else Path(where).parent
    else:  # a DataFrame has no folder, unless base_dir gives one
        where = opts.name or "<DataFrame>"
    if opts.base_dir is not None:
        folder = Path(opts.base_dir).expanduser()
    base = folder if folder is not None else Path.cwd()
    return _build(frame, opts, where, base, None if opts.allow_outside else folder)


def from_table(
    source: pd.DataFrame | str | os.PathLike[str],
    *,
    target: str | Sequence[str],
    modalities: Mapping[str, Sequence[str] | str] | None = None,
    task: str | None = None,
    split: str | Mapping[str, str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    base_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetSplits:
    """A user's table as :class:`DatasetSplits` (see the module docstring).

    Args:
        source: a DataFrame, or a CSV/TSV/Parquet (file or folder)/JSON Lines path.
        target: the target column, or several (multilabel or multi-output regression).
        modalities: modality name -> columns (default: ``tabular`` + one per text,
            image, audio and embedding column).
        task: override of the inferred task.
        split: None (seeded, stratified), a train/val/test column, or ``{"group": col}``.
        val_fraction, test_fraction, seed: of the random and group splits.
        base_dir: where relative file paths resolve (default: the table's folder; the
            current folder for a DataFrame).
        **options: the other fields of :class:`TableSource` (``kinds``, ``exclude``,
            ``image_size``, ``on_bad_file``, ...).

    Returns:
        the splits; ``info["schema"]`` is the :class:`TableReport`, ``info["indices"]``
        the table rows (0-based) of each split.
    """
    extra = dict(options, modalities=modalities, task=task, split=split, val_fraction=val_fraction,
                 test_fraction=test_fraction, seed=seed,
                 base_dir=None if base_dir is None else str(base_dir))
    opts, frame = _options(source, target, extra)
    return _load(opts, frame)[0]


def load_table(options: TableSource) -> DatasetSplits:
    """Load the table that ``options`` describes (the config / CLI way in)."""
    if not isinstance(options, TableSource):
        raise DataError(f"load_table: expected a TableSource, got {type(options).__name__}")
    return _load(options, None)[0]


def describe_table(
    source: pd.DataFrame | str | os.PathLike[str] | TableSource,
    *,
    target: str | Sequence[str] | None = None,
    **options: Any,
) -> TableReport:
    """The schema report of a table: the same loading as :func:`from_table`, its :class:`TableReport` out."""
    if isinstance(source, TableSource):
        if target is not None or options:
            raise DataError("describe_table: with a TableSource, pass no other options")
        return _load(source, None)[1]
    if target is None:
        raise DataError("describe_table: expected target=")
    if options.get("base_dir") is not None:
        options["base_dir"] = str(options["base_dir"])
    opts, frame = _options(source, target, options)
    return _load(opts, frame)[1]


# ---------------------------------------------------------------- as a registered dataset
def table_fingerprint(path: str | os.PathLike[str]) -> str:
    """A digest of the table's own file(s): its bytes (a file under 1 GiB), else each file's
    name, size and modification time. Image, audio and ``.npy`` files the table points at
    are not part of it."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    if not files:
        raise DataError(f"{p}: no such table file or folder")
    for f in files:
        st = f.stat()
        if p.is_file() and st.st_size < 2**30:
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(f"{f.relative_to(p) if f != p else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def table_options(
    path: str | os.PathLike[str],
    *,
    target: str | Sequence[str],
    modalities: Mapping[str, Sequence[str]] | None = None,
    task: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The loader options of the registered ``table`` dataset for the table at ``path``:
    the :class:`TableSource` fields (checked now) and the table's fingerprint, so a changed
    file is other data (a new training key) and never a stale result."""
    source = TableSource(path=str(Path(path).resolve()), target=target if isinstance(target, str) else tuple(target),
                         modalities={k: tuple(v) for k, v in modalities.items()} if modalities else None,
                         task=task, **options)
    d = source.to_json()
    d.pop("seed", None)  # the split seed is the DataSpec's
    return {**d, "fingerprint": table_fingerprint(path)}


@register_dataset("table")
def load_table_dataset(*, root: str | None = None, seed: int = 0, fingerprint: str | None = None,
                       **options: Any) -> DatasetSplits:
    """A user's table as a registered dataset: ``options`` are :class:`TableSource` fields
    (see :func:`table_options`); ``root`` is not used; ``fingerprint`` only keys the data."""
    if fingerprint is not None and "path" in options and table_fingerprint(options["path"]) != fingerprint:
        raise DataError(f"{options['path']}: the table changed since this run was set up (fingerprint "
                        f"{table_fingerprint(options['path'])}, expected {fingerprint}): set it up again")
    return load_table(TableSource.from_json({**options, "seed": seed}))
