"""Your own data: a table of columns and files in, :class:`DatasetSplits` out.

Shape legend: ``n`` rows, ``k`` tabular columns, ``t`` tokens or frames, ``d``
features, ``c``/``h``/``w`` image channels/height/width, ``f`` mel bands.

:func:`from_table` reads a pandas DataFrame, or a CSV, TSV, Parquet (file or folder of
files) or JSON Lines file, and returns the same :class:`DatasetSplits` as
:func:`mmfuse.data.load_dataset`. :class:`TableSource` holds every option in a frozen,
JSON-able record (the file, not a DataFrame) and :func:`load_table` loads it, so a run
on a user's table can be described in a config. :func:`describe_table` returns the
schema report (:class:`TableReport`) that ``mmfuse data inspect`` prints.

Column kinds (inferred, overridable with ``kinds={column: kind}``):

- ``numeric``: numbers (integers with more than ``int_categories`` distinct values).
- ``categorical``: strings with at most ``max_categories`` distinct values, booleans,
  integers with at most ``int_categories`` distinct values.
- ``text``: other strings; tokenised like the reviews dataset
  (:func:`mmfuse.data.reviews.tokenize`), vocabulary built on the training split only
  (words seen ``min_count`` times, at most ``max_vocab`` ids with pad 0 and unknown 1),
  padded or cut to ``max_tokens``.
- ``image``: paths ending in an image extension; decoded with Pillow, converted to
  ``image_mode`` (``RGB`` or ``L``), resized to ``image_size`` (bilinear), scaled to
  [0, 1] and standardised per channel with training statistics.
- ``audio``: paths ending in ``.wav`` (``.flac``/``.ogg`` too when ``soundfile`` is
  installed); mixed to mono, resampled to ``audio_sample_rate``, cropped around the
  centre or padded to ``audio_seconds``, log-mel (:func:`mmfuse.data._audio.log_mel`)
  standardised with one training mean and std; the ``(t,)`` frame mask is False on
  frames that start after the clip's end.
- ``embedding``: a list/array in the cell, or a path to a ``.npy`` file. Fixed length
  ``d`` gives a ``vector`` ``(d,)`` modality; variable length (or ``(t, d)`` arrays)
  a ``sequence`` ``(t, d)`` one with a token mask (a variable-length 1-d list is ``t``
  tokens of ``d = 1``). ``.npy`` files of one column must all have the same length
  (for 1-d arrays) or the same ``d``.

Modalities: by default all numeric and categorical columns form ``tabular`` (kind
``tabular`` when it has a categorical column, ``vector`` when all are numeric), and
every text, image, audio and embedding column is its own modality named after the
column. ``modalities={name: [columns]}`` chooses; several text columns in one modality
are joined with a space.

Missing values are masks, never silent imputation: an empty or missing text, a
missing, absent or undecodable image/audio file, a NaN embedding make that modality
missing for that row. Inside a numeric modality, a NaN is replaced by the column's
training median and the column gets a 0/1 missing indicator (appended after the
numeric columns, so the model sees that the value was missing); a categorical NaN
takes code 0 (also used for values unseen in training). A numeric/categorical
modality is missing for a row only when all its columns are. A row with every
modality missing, or with a missing target, is dropped and counted.

Memory: files are decoded one at a time, once, at load, into compact arrays of the
fixed per-item shape (``image_size``, ``audio_seconds``): a table's dataset holds its
decoded tensors (``n x c x h x w`` floats for images), never the files' bytes. For a
Parquet folder larger than memory see :mod:`mmfuse.data.stream`.

Example::

    from mmfuse.data import from_table, describe_table
    splits = from_table("reviews.parquet", target="Rating", task="regression",
                        exclude=["Recommended IND"], modalities={"text": ["Title", "Review Text"],
                                                                 "tabular": ["Age", "Class Name"]})
    print(describe_table("reviews.parquet", target="Recommended IND"))  # the schema report

Tasks (inferred, overridable with ``task=``): a list column or several target columns
of 0/1 values is ``multilabel`` (several non-0/1 columns: ``regression``); strings,
booleans and integer-valued numbers with at most ``max_classes`` distinct values are
``binary`` (2 classes) or ``multiclass``; other numbers ``regression``.

Splits: seeded and stratified by class (random for multilabel/regression) with
``val_fraction``/``test_fraction``; or ``split="column"`` naming a column of
``train``/``val``/``test``; or ``split={"group": "column"}`` so that no group spans two
splits (whole groups, in seeded random order, fill test then val).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from mmfuse.data._audio import log_mel
from mmfuse.data._base import (
    TASKS,
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    register_dataset,
)
from mmfuse.data._common import check_fractions, fit_standardise, stratified_split
from mmfuse.data.reviews import PAD_ID, UNK_ID, build_vocab, encode, tokenize

__all__ = [
    "BadFile",
    "ColumnReport",
    "KINDS",
    "TableReport",
    "TableSource",
    "describe_table",
    "from_table",
    "load_table",
    "read_table",
]

KINDS: tuple[str, ...] = ("numeric", "categorical", "text", "image", "audio", "embedding")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
_SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SCHEMA_VERSION = 1


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class TableSource:
    """Everything :func:`from_table` takes, for a table in a file (JSON-able, frozen).

    Attributes:
        path: CSV, TSV, Parquet (file or folder) or JSON Lines file.
        target: the target column, or several (multilabel / multi-output regression).
        modalities: modality name -> its columns (None: the defaults of the module docstring).
        kinds: column -> kind (one of :data:`KINDS`), overriding the inference.
        exclude: columns not to use.
        task: ``binary``, ``multiclass``, ``multilabel``, ``regression`` or None (inferred).
        split: None (stratified random), a column of train/val/test, or ``{"group": column}``.
        val_fraction, test_fraction, seed: of the random and group splits.
        base_dir: folder that relative file paths resolve against (default: the table's).
        format: ``csv``, ``tsv``, ``parquet``, ``jsonl`` (default: from the extension).
        image_size: ``(h, w)`` images are resized to.
        image_mode: ``RGB`` (3 channels) or ``L`` (1 channel).
        audio_sample_rate, audio_seconds, n_mels, n_fft, hop: the log-mel front end.
        max_tokens, min_count, max_vocab: text encoding.
        max_categories: a string column with at most this many distinct values is categorical.
        int_categories: an integer column with at most this many distinct values is categorical.
        max_classes: an integer-valued target with at most this many values is a class label.
        on_bad_file: ``missing`` (a bad image/audio file makes the modality missing, counted)
            or ``error`` (a :class:`DataError`).
        name: dataset name in reports (default: the file's name).
    """

    path: str
    target: str | tuple[str, ...]
    modalities: Mapping[str, tuple[str, ...]] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    task: str | None = None
    split: str | Mapping[str, str] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    base_dir: str | None = None
    format: str | None = None
    image_size: tuple[int, int] = (32, 32)
    image_mode: Literal["RGB", "L"] = "RGB"
    audio_sample_rate: int = 16000
    audio_seconds: float = 1.0
    n_mels: int = 40
    n_fft: int = 400
    hop: int = 160
    max_tokens: int = 64
    min_count: int = 2
    max_vocab: int = 20000
    max_categories: int = 50
    int_categories: int = 10
    max_classes: int = 50
    on_bad_file: Literal["missing", "error"] = "missing"
    name: str | None = None

    def __post_init__(self) -> None:
        norm = object.__setattr__
        if isinstance(self.target, (list, tuple)):
            norm(self, "target", tuple(str(t) for t in self.target))
            if not self.target:
                raise DataError("target: expected a column name or a non-empty list of them, got []")
        elif not isinstance(self.target, str):
            raise DataError(f"target: expected a column name, got {self.target!r}")
        if self.modalities is not None:
            mods = {}
            for m, cols in dict(self.modalities).items():
                cols = (cols,) if isinstance(cols, str) else tuple(cols)
                if not cols:
                    raise DataError(f"modality {m!r}: expected at least one column, got none")
                mods[str(m)] = cols
            if not mods:
                raise DataError("modalities: expected at least one modality, got none")
            norm(self, "modalities", mods)
        norm(self, "kinds", dict(self.kinds))
        for col, kind in self.kinds.items():
            if kind not in KINDS:
                raise DataError(f"kinds: column {col!r}: expected one of {list(KINDS)}, got {kind!r}")
        norm(self, "exclude", tuple(self.exclude))
        if self.task is not None and self.task not in TASKS:
            raise DataError(f"task: expected one of {list(TASKS)} or None, got {self.task!r}")
        if isinstance(self.split, Mapping):
            if set(self.split) != {"group"} or not isinstance(self.split["group"], str):
                raise DataError(f"split: expected None, a column name or {{'group': column}}, got {dict(self.split)!r}")
            norm(self, "split", dict(self.split))
        elif self.split is not None and not isinstance(self.split, str):
            raise DataError(f"split: expected None, a column name or {{'group': column}}, got {self.split!r}")
        check_fractions(self.path, self.val_fraction, self.test_fraction)
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise DataError(f"image_size: expected (h, w) positive ints, got {self.image_size!r}")
        norm(self, "image_size", size)
        if self.image_mode not in ("RGB", "L"):
            raise DataError(f"image_mode: expected 'RGB' or 'L', got {self.image_mode!r}")
        if self.on_bad_file not in ("missing", "error"):
            raise DataError(f"on_bad_file: expected 'missing' or 'error', got {self.on_bad_file!r}")
        if self.format is not None and self.format not in ("csv", "tsv", "parquet", "jsonl"):
            raise DataError(f"format: expected csv, tsv, parquet or jsonl, got {self.format!r}")
        for what in ("audio_sample_rate", "n_mels", "n_fft", "hop", "max_tokens", "min_count",
                     "max_vocab", "max_categories", "int_categories", "max_classes"):
            v = getattr(self, what)
            if not isinstance(v, int) or isinstance(v, bool) or v < (3 if what == "max_vocab" else 0 if "categories" in what else 1):
                raise DataError(f"{what}: expected a positive int, got {v!r}")
        if not (isinstance(self.audio_seconds, (int, float)) and self.audio_seconds * self.audio_sample_rate >= self.n_fft):
            raise DataError(
                f"audio_seconds: expected at least n_fft / audio_sample_rate = "
                f"{self.n_fft / self.audio_sample_rate:g} s, got {self.audio_seconds!r}"
            )

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = self.target if isinstance(self.target, str) else list(self.target)
        d["modalities"] = None if self.modalities is None else {m: list(c) for m, c in self.modalities.items()}
        d["exclude"] = list(self.exclude)
        d["image_size"] = list(self.image_size)
        return {"schema_version": SCHEMA_VERSION, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | Mapping[str, Any]) -> TableSource:
        """From :meth:`to_json`'s text (or its dict); unknown keys are a :class:`DataError`."""
        d = dict(json.loads(raw) if isinstance(raw, str) else raw)
        version = d.pop("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise DataError(f"TableSource: schema_version {version!r}, expected {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"TableSource: unknown keys {unknown}; expected some of {sorted(known)}")
        if "path" not in d or "target" not in d:
            raise DataError("TableSource: expected keys 'path' and 'target'")
        if isinstance(d.get("image_size"), list):
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class ColumnReport:
    name: str
    kind: str  # one of KINDS, or "target", "split", "group", "excluded"
    modality: str | None
    missing_rate: float
    dtype: str


@dataclass(frozen=True)
class BadFile:
    column: str
    row: int
    path: str
    reason: str


@dataclass(frozen=True)
class TableReport:
    """The inferred schema of a table and what loading it did (``mmfuse data inspect``).

    ``target_summary``: per class (binary/multiclass) or label (multilabel) the number
    of rows; per target column ``min``/``max``/``mean``/``std`` (regression).
    ``dropped``: reason -> rows dropped. ``rows``: rows in the table; ``rows_used``: kept.
    """

    source: str
    rows: int
    rows_used: int
    columns: tuple[ColumnReport, ...]
    modalities: Mapping[str, Mapping[str, Any]]
    target: tuple[str, ...]
    task: str
    num_classes: int
    target_summary: Mapping[str, Any]
    split: str
    split_sizes: Mapping[str, int]
    dropped: Mapping[str, int]
    bad_files: tuple[BadFile, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    def render(self) -> str:
        lines = [f"table: {self.source}", f"rows: {self.rows} ({self.rows_used} used)"]
        width = max([len(c.name) for c in self.columns] + [6])
        lines.append(f"  {'column':<{width}}  {'kind':<11}  {'modality':<16}  missing  dtype")
        for c in self.columns:
            lines.append(f"  {c.name:<{width}}  {c.kind:<11}  {c.modality or '-':<16}  {100 * c.missing_rate:6.1f}%  {c.dtype}")
        lines.append("modalities:")
        for m, d in self.modalities.items():
            lines.append(f"  {m}: {d['kind']} {tuple(d['shape'])} from {', '.join(d['columns'])}; "
                         f"missing in {d['missing']} rows")
        lines.append(f"target: {', '.join(self.target)} -> task {self.task} ({self.num_classes} outputs)")
        if self.task == "regression":
            for col, s in self.target_summary.items():
                lines.append(f"  {col}: min {s['min']:.4g}, max {s['max']:.4g}, mean {s['mean']:.4g}, std {s['std']:.4g}")
        else:
            total = max(self.rows_used, 1)
            lines.append("  " + ", ".join(f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in self.target_summary.items()))
        lines.append(f"split ({self.split}): " + ", ".join(f"{k} {v}" for k, v in self.split_sizes.items()))
        lines.append("dropped rows: " + (", ".join(f"{v} ({k})" for k, v in self.dropped.items()) if self.dropped else "none"))
        lines.append(f"bad files: {len(self.bad_files)}")
        for b in self.bad_files[:10]:
            lines.append(f"  column {b.column!r} row {b.row}: {b.path}: {b.reason}")
        if len(self.bad_files) > 10:
            lines.append(f"  ... and {len(self.bad_files) - 10} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


# ---------------------------------------------------------------- reading


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    if path.is_dir():
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    for ext, f in ((".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if ext in suffixes:
            return f
    raise DataError(f"{path}: cannot tell the format from the extension; expected .csv, .tsv, .parquet, "
                    ".jsonl or a folder of Parquet files, or pass format=")


def read_table(path: str | os.PathLike[str], fmt: str | None = None) -> pd.DataFrame:
    """The table at ``path`` as a DataFrame; :class:`DataError` naming the file when it cannot be read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    kind = _format_of(p, fmt)
    try:
        if kind == "csv":
            frame = pd.read_csv(p)
        elif kind == "tsv":
            frame = pd.read_csv(p, sep="\t")
        elif kind == "jsonl":
            frame = pd.read_json(p, lines=True)
        else:
            frame = pd.read_parquet(p)
    except (OSError, ValueError, TypeError) as e:  # parser, codec, Arrow (ArrowInvalid is a ValueError)
        raise DataError(f"{p}: cannot read as {kind}: {type(e).__name__}: {e}") from e
    if len(frame) == 0:
        raise DataError(f"{p}: the table has no rows")
    return frame


# ---------------------------------------------------------------- inference


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def _is_arraylike(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _infer_kind(s: pd.Series, opts: TableSource) -> str:
    values = s.dropna()
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        if len(values) and np.all(np.mod(values.to_numpy(dtype=np.float64), 1.0) == 0.0):
            if values.nunique() <= opts.int_categories:
                return "categorical"
        return "numeric"
    non_null = [v for v in values.tolist() if not _is_missing(v)]
    if not non_null:
        return "numeric"
    if all(_is_arraylike(v) for v in non_null):
        return "embedding"
    strings = [v for v in non_null if isinstance(v, str)]
    if len(strings) == len(non_null):
        lower = [v.strip().lower() for v in strings]
        if all(v.endswith(".npy") for v in lower):
            return "embedding"
        if all(v.endswith(IMAGE_EXTENSIONS) for v in lower):
            return "image"
        if all(v.endswith(AUDIO_EXTENSIONS) for v in lower):
            return "audio"
        return "categorical" if len(set(strings)) <= opts.max_categories else "text"
    return "categorical"


def _missing_rate(s: pd.Series) -> float:
    miss = s.map(lambda v: _is_missing(v) or (isinstance(v, str) and not v.strip()))
    return float(miss.mean())


# ---------------------------------------------------------------- targets


def _is_01(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def _targets(frame: pd.DataFrame, opts: TableSource, where: str) -> tuple[np.ndarray, np.ndarray, str, int, list[str]]:
    """Labels of the rows that have a target, those rows' mask, the task, outputs and class names."""
    cols = list(opts.targets)
    task = opts.task
    if len(cols) > 1:
        vals = np.empty((len(frame), len(cols)), dtype=np.float64)
        for j, c in enumerate(cols):
            try:
                vals[:, j] = pd.to_numeric(frame[c], errors="raise").to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: target column {c!r}: expected numbers, got {e}") from e
        keep = ~np.isnan(vals).any(axis=1)
        if not keep.any():
            raise DataError(f"{where}: target columns {cols}: every row has a missing value")
        inferred = "multilabel" if _is_01(vals[keep]) else "regression"
        task = task or inferred
        if task == "multilabel" and inferred != "multilabel":
            raise DataError(f"{where}: target columns {cols}: multilabel needs 0/1 values")
        if task not in ("multilabel", "regression"):
            raise DataError(f"{where}: target columns {cols}: several columns make a multilabel or regression "
                            f"target, got task={task!r}")
        return vals[keep].astype(np.float32), keep, task, len(cols), cols
    col = cols[0]
    s = frame[col]
    keep = ~s.map(_is_missing).to_numpy(dtype=bool)
    if pd.api.types.is_float_dtype(s):
        keep &= ~np.isnan(s.to_numpy(dtype=np.float64))
    if not keep.any():
        raise DataError(f"{where}: target column {col!r}: every value is missing")
    present = s[keep]
    first = present.iloc[0]
    if _is_arraylike(first) or task == "multilabel":
        if not all(_is_arraylike(v) for v in present):
            bad = next(i for i, v in zip(np.flatnonzero(keep), present, strict=True) if not _is_arraylike(v))
            raise DataError(f"{where}: target column {col!r} row {bad}: a multilabel target needs a list, got {present.loc[bad]!r}")
        if task not in (None, "multilabel"):
            raise DataError(f"{where}: target column {col!r} holds lists: expected task multilabel, got {task!r}")
        lists = [np.asarray(v) for v in present]
        same = len({len(v) for v in lists}) == 1
        if same and all(v.dtype.kind in "biuf" and _is_01(v) for v in lists):
            y = np.stack(lists).astype(np.float32)
            names = [str(i) for i in range(y.shape[1])]
        else:
            names = sorted({str(x) for v in lists for x in v.tolist()})
            pos = {n: i for i, n in enumerate(names)}
            y = np.zeros((len(lists), len(names)), dtype=np.float32)
            for r, v in enumerate(lists):
                for x in v.tolist():
                    y[r, pos[str(x)]] = 1.0
        if y.shape[1] < 1:
            raise DataError(f"{where}: target column {col!r}: no labels in any row")
        return y, keep, "multilabel", y.shape[1], names
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if numeric:
        v = present.to_numpy(dtype=np.float64)
        integral = bool(np.all(np.mod(v, 1.0) == 0.0))
        uniq = np.unique(v)
        inferred = "regression" if not integral or len(uniq) > opts.max_classes else None
    else:
        uniq = np.array(sorted({str(x) for x in present}))
        inferred = None
    if task == "regression" or (task is None and inferred == "regression"):
        if not numeric:
            raise DataError(f"{where}: target column {col!r}: regression needs numbers, got {s.dtype}")
        return present.to_numpy(dtype=np.float32).reshape(-1, 1), keep, "regression", 1, [col]
    if len(uniq) < 2:
        raise DataError(f"{where}: target column {col!r}: only one class ({uniq[0]!r}) in "
                        f"{int(keep.sum())} rows; a classifier needs at least two")
    task = task or ("binary" if len(uniq) == 2 else "multiclass")
    if task == "binary" and len(uniq) != 2:
        raise DataError(f"{where}: target column {col!r}: task binary needs 2 classes, got {len(uniq)}")
    if numeric:
        lookup = {float(u): i for i, u in enumerate(uniq)}
        y = np.array([lookup[float(x)] for x in present.to_numpy(dtype=np.float64)], dtype=np.int64)
        names = [str(int(u)) if float(u).is_integer() else str(u) for u in uniq]
    else:
        lookup = {str(u): i for i, u in enumerate(uniq)}
        y = np.array([lookup[str(x)] for x in present], dtype=np.int64)
        names = [str(u) for u in uniq]
    return y, keep, task, len(uniq), names


# ---------------------------------------------------------------- files


def _resolve(value: str, base: Path) -> Path:
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else base / p


class _BadFiles:
    def __init__(self, opts: TableSource, where: str) -> None:
        self.opts, self.where, self.items = opts, where, []

    def add(self, column: str, row: int, path: Path, reason: str) -> None:
        if self.opts.on_bad_file == "error":
            raise DataError(f"{self.where}: column {column!r} row {row}: {path}: {reason}")
        self.items.append(BadFile(column, row, str(path), reason))


def _decode_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError("file not found") from e
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode as an image: {type(e).__name__}: {e}") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read_wave(path: Path) -> tuple[int, np.ndarray]:
    """Sample rate and ``(s,)`` float32 mono samples in [-1, 1]."""
    if not path.is_file():
        raise DataError("file not found")
    try:
        import soundfile  # type: ignore[import-not-found]
    except ImportError:
        soundfile = None
    try:
        if soundfile is not None:
            data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
            x = data.mean(axis=1)
        else:
            from scipy.io import wavfile

            sr, data = wavfile.read(path)
            if data.dtype.kind == "u":
                x = (data.astype(np.float32) - 128.0) / 128.0
            elif data.dtype.kind == "i":
                x = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
            else:
                x = data.astype(np.float32)
            if x.ndim == 2:
                x = x.mean(axis=1)
    except Exception as e:  # noqa: BLE001  (every decoder failure is a bad file)
        raise DataError(f"cannot decode as audio: {type(e).__name__}: {e}") from e
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise DataError(f"cannot decode as audio: empty or non-finite samples, shape {x.shape}")
    return int(sr), x.astype(np.float32)


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(sr, target)
    return resample_poly(x, target // g, sr // g).astype(np.float32)


# ---------------------------------------------------------------- modalities


@dataclass
class _Mod:
    """One modality while it is built: raw per-row values until the split is known."""

    name: str
    kind: str  # tabular/vector/text/image/audio/vector-embedding/sequence
    columns: tuple[str, ...]
    present: np.ndarray  # (n,) bool
    data: Any = None
    token_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _numeric_block(frame: pd.DataFrame, m: str, cols: list[str], kinds: dict[str, str], where: str) -> _Mod:
    num_cols = [c for c in cols if kinds[c] == "numeric"]
    cat_cols = [c for c in cols if kinds[c] == "categorical"]
    num = np.empty((len(frame), len(num_cols)), dtype=np.float64)
    for j, c in enumerate(num_cols):
        s = frame[c]
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna().to_numpy() & ~s.map(lambda v: _is_missing(v) or (isinstance(v, str) and not v.strip())).to_numpy()
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: column {c!r} (modality {m!r}, numeric) row {r}: expected a number, "
                            f"got {s.iloc[r]!r}; a text column needs its own modality (kinds={{{c!r}: 'text'}})")
        num[:, j] = conv.to_numpy(dtype=np.float64)
    cats = [np.array([None if _is_missing(v) else str(v) for v in frame[c].tolist()], dtype=object) for c in cat_cols]
    present_any = (~np.isnan(num)).any(axis=1) if num_cols else np.zeros(len(frame), bool)
    for s in cats:
        present_any |= s != None  # noqa: E711  (elementwise on an object array)
    kind = "tabular" if cat_cols else "vector"
    return _Mod(m, kind, tuple(cols), present_any, {"num": num, "num_cols": num_cols, "cats": cats, "cat_cols": cat_cols})


def _text_block(frame: pd.DataFrame, m: str, cols: list[str]) -> _Mod:
    joined = [" ".join(str(v) for v in row if not _is_missing(v)) for row in zip(*(frame[c].tolist() for c in cols), strict=True)]
    docs = [tokenize(t) for t in joined]
    return _Mod(m, "text", tuple(cols), np.array([len(d) > 0 for d in docs], dtype=bool), docs)


def _image_block(frame: pd.DataFrame, m: str, col: str, opts: TableSource, base: Path, bad: _BadFiles) -> _Mod:
    c = 1 if opts.image_mode == "L" else 3
    h, w = opts.image_size
    out = np.zeros((len(frame), c, h, w), dtype=np.uint8)
    present = np.zeros(len(frame), dtype=bool)
    for r, v in enumerate(frame[col].tolist()):
        if _is_missing(v) or not str(v).strip():
            continue
        path = _resolve(str(v), base)
        try:
            out[r] = _decode_image(path, (h, w), opts.image_mode)
        except DataError as e:
            bad.add(col, r, path, str(e))
            continue
        present[r] = True
    return _Mod(m, "image", (col,), present, out)


def _audio_block(frame: pd.DataFrame, m: str, col: str, opts: TableSource, base: Path, bad: _BadFiles) -> _Mod:
    sr, n_fft, hop = opts.audio_sample_rate, opts.n_fft, opts.hop
    frames = 1 + (int(round(opts.audio_seconds * sr)) - n_fft) // hop
    length = (frames - 1) * hop + n_fft
    out = np.zeros((len(frame), opts.n_mels, frames), dtype=np.float32)
    fmask = np.zeros((len(frame), frames), dtype=bool)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            mel = log_mel(np.stack([w for _, w in pending]), sr=sr, n_fft=n_fft, hop=hop, n_mels=opts.n_mels)
            for (r, _), x in zip(pending, mel, strict=True):
                out[r] = x
            pending.clear()

    for r, v in enumerate(frame[col].tolist()):
        if _is_missing(v) or not str(v).strip():
            continue
        path = _resolve(str(v), base)
        try:
            rate, x = _read_wave(path)
        except DataError as e:
            bad.add(col, r, path, str(e))
            continue
        x = _resample(x, rate, sr)
        if x.shape[0] >= length:
            start = (x.shape[0] - length) // 2
            x, valid = x[start : start + length], length
        else:
            valid = x.shape[0]
            x = np.pad(x, (0, length - valid))
        fmask[r, : min(frames, -(-valid // hop))] = True
        pending.append((r, x))
        if len(pending) >= 64:
            flush()
    flush()
    present = fmask.any(axis=1)
    mod = _Mod(m, "audio", (col,), present, out, token_mask=fmask)
    mod.meta = {"sample_rate": sr, "n_fft": n_fft, "hop": hop, "n_mels": opts.n_mels}
    return mod


def _embedding_block(frame: pd.DataFrame, m: str, col: str, base: Path, where: str) -> _Mod:
    n = len(frame)
    arrays: list[np.ndarray | None] = [None] * n
    from_file = False
    for r, v in enumerate(frame[col].tolist()):
        if _is_missing(v) or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, str):
            from_file = True
            path = _resolve(v, base)
            try:
                a = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise DataError(f"{where}: column {col!r} row {r}: {path}: cannot read as .npy: {e}") from e
        else:
            path = None
            try:
                a = np.asarray(v, dtype=np.float32)
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: column {col!r} row {r}: expected a list of numbers, got {e}") from e
        if a.ndim not in (1, 2) or a.size == 0:
            raise DataError(f"{where}: column {col!r} row {r}{f': {path}' if path else ''}: expected a 1-d or 2-d "
                            f"non-empty array, got shape {a.shape}")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            continue  # a NaN embedding is a missing one
        arrays[r] = a
    got = [(r, a) for r, a in enumerate(arrays) if a is not None]
    if not got:
        raise DataError(f"{where}: column {col!r}: no row has an embedding")
    dims = {a.ndim for _, a in got}
    if dims == {1}:
        lengths = [a.shape[0] for _, a in got]
        if len(set(lengths)) == 1:
            x = np.zeros((n, lengths[0]), dtype=np.float32)
            for r, a in got:
                x[r] = a
            return _Mod(m, "vector", (col,), np.array([a is not None for a in arrays]), x)
        if from_file:
            want = max(set(lengths), key=lengths.count)
            r, a = next((r, a) for r, a in got if a.shape[0] != want)
            raise DataError(f"{where}: column {col!r} row {r}: {_resolve(frame[col].iloc[r], base)}: embedding of "
                            f"length {a.shape[0]}, expected {want} like the other rows")
        got = [(r, a[:, None]) for r, a in got]
    elif dims != {2}:
        raise DataError(f"{where}: column {col!r}: rows mix 1-d and 2-d embeddings")
    ds = {a.shape[1] for _, a in got}
    if len(ds) != 1:
        want = max(ds, key=[a.shape[1] for _, a in got].count)
        r, a = next((r, a) for r, a in got if a.shape[1] != want)
        raise DataError(f"{where}: column {col!r} row {r}: embedding tokens of {a.shape[1]} features, expected {want}")
    t = max(a.shape[0] for _, a in got)
    d = ds.pop()
    x = np.zeros((n, t, d), dtype=np.float32)
    tm = np.zeros((n, t), dtype=bool)
    for r, a in got:
        x[r, : a.shape[0]] = a
        tm[r, : a.shape[0]] = True
    return _Mod(m, "sequence", (col,), tm.any(axis=1), x, token_mask=tm)


# ---------------------------------------------------------------- splits


def _split_parts(
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
            key = str(v).strip().lower() if not _is_missing(v) else None
            if key not in _SPLIT_NAMES:
                raise DataError(f"{where}: split column {col!r} row {rows[r]}: expected train, val or test, got {v!r}")
            which[r] = _SPLIT_NAMES[key]
        parts, how = [np.flatnonzero(which == k) for k in range(3)], f"column {col!r}"
    else:
        col = opts.split["group"]
        groups = frame[col]
        miss = groups.map(_is_missing).to_numpy(dtype=bool)
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
            raise DataError(f"{where}: split {how}: the {name} split is empty ({n} rows); use more rows or other fractions")
    return [np.sort(p).astype(np.int64) for p in parts], how


# ---------------------------------------------------------------- building


def _finish(mod: _Mod, train: np.ndarray, opts: TableSource) -> tuple[torch.Tensor, torch.Tensor, ModalitySpec, dict[str, Any]]:
    """The modality's tensor, mask and spec, with statistics fitted on the ``train`` rows."""
    extra: dict[str, Any] = {}
    tr_present = train[mod.present[train]]
    if mod.kind in ("tabular", "vector") and isinstance(mod.data, dict):
        num, num_cols, cats, cat_cols = mod.data["num"], mod.data["num_cols"], mod.data["cats"], mod.data["cat_cols"]
        blocks, names = [], list(num_cols)
        if num_cols:
            nan = np.isnan(num)
            med = np.zeros(len(num_cols))
            for j in range(len(num_cols)):
                col = num[train, j]
                col = col[~np.isnan(col)]
                med[j] = float(np.median(col)) if col.size else 0.0
            filled = np.where(nan, med[None, :], num)
            mean, std = fit_standardise(filled[train])
            blocks.append(((filled - mean) / std).astype(np.float32))
            with_nan = [j for j in range(len(num_cols)) if nan[:, j].any()]
            if with_nan:
                blocks.append(nan[:, with_nan].astype(np.float32))
                names += [f"{num_cols[j]} missing" for j in with_nan]
            extra["medians"] = {c: float(v) for c, v in zip(num_cols, med, strict=True)}
        num_numeric = len(names)
        cards, categories = [], {}
        for c, s in zip(cat_cols, cats, strict=True):
            seen = sorted({v for v in s[train].tolist() if v is not None})
            lookup = {v: i + 1 for i, v in enumerate(seen)}
            blocks.append(np.array([[lookup.get(v, 0)] for v in s.tolist()], dtype=np.float32))
            cards.append(len(seen) + 1)
            categories[c] = seen
            names.append(c)
        x = np.concatenate(blocks, axis=1).astype(np.float32)
        meta = {"columns": names}
        if mod.kind == "tabular":
            meta.update({"num_numeric": num_numeric, "cardinalities": cards})
            extra["categories"] = categories
        spec = ModalitySpec(mod.kind, (x.shape[1],), meta)
        return torch.from_numpy(x), torch.from_numpy(mod.present), spec, extra
    if mod.kind == "text":
        vocab = build_vocab([mod.data[i] for i in train], min_count=opts.min_count, max_size=opts.max_vocab)
        ids = encode(mod.data, vocab, opts.max_tokens)
        extra["vocab_size"] = len(vocab) + 2
        spec = ModalitySpec("text", (opts.max_tokens,), {"vocab_size": len(vocab) + 2, "pad_id": PAD_ID,
                                                         "unk_id": UNK_ID, "max_tokens": opts.max_tokens,
                                                         "columns": list(mod.columns)})
        return torch.from_numpy(ids), torch.from_numpy(mod.present), spec, extra
    if mod.kind == "image":
        x = mod.data
        c = x.shape[1]
        if tr_present.size:
            sub = x[tr_present].astype(np.float32) / 255.0
            mean = sub.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
            std = sub.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
            std[std < 1e-8] = 1.0
        else:
            mean, std = np.zeros(c, np.float32), np.ones(c, np.float32)
        out = torch.empty(x.shape, dtype=torch.float32)
        for start in range(0, x.shape[0], 1024):  # bounded temporaries
            chunk = x[start : start + 1024].astype(np.float32) / 255.0
            chunk = (chunk - mean[None, :, None, None]) / std[None, :, None, None]
            chunk[~mod.present[start : start + 1024]] = 0.0
            out[start : start + 1024] = torch.from_numpy(chunk)
        extra["image_scale"] = (mean.tolist(), std.tolist())
        spec = ModalitySpec("image", tuple(x.shape[1:]), {"mode": opts.image_mode, "columns": list(mod.columns)})
        return out, torch.from_numpy(mod.present), spec, extra
    x, tm = mod.data, mod.token_mask
    if mod.kind == "audio":
        valid = x.transpose(0, 2, 1)[train][tm[train]]  # (frames, f)
        mean = float(valid.mean()) if valid.size else 0.0
        std = float(valid.std()) if valid.size else 1.0
        std = std if std > 1e-8 else 1.0
        x = ((x - mean) / std).astype(np.float32)
        x *= tm[:, None, :]
        extra["audio_scale"] = (mean, std)
        spec = ModalitySpec("audio", tuple(x.shape[1:]), {**mod.meta, "columns": list(mod.columns)})
        return torch.from_numpy(x), torch.from_numpy(tm), spec, extra
    if mod.kind == "vector":  # a fixed-length embedding: kept as given
        return torch.from_numpy(x), torch.from_numpy(mod.present), ModalitySpec("vector", (x.shape[1],), {"columns": list(mod.columns)}), extra
    return torch.from_numpy(x), torch.from_numpy(tm), ModalitySpec("sequence", tuple(x.shape[1:]), {"columns": list(mod.columns)}), extra


def _build(frame: pd.DataFrame, opts: TableSource, where: str, base: Path) -> tuple[DatasetSplits, TableReport]:
    frame = frame.reset_index(drop=True)
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{where}: duplicate column names {dup}")
    frame.columns = columns

    def need(col: str, what: str) -> None:
        if col not in frame.columns:
            raise DataError(f"{where}: {what} column {col!r} does not exist; the columns are {columns}")

    for t in opts.targets:
        need(t, "target")
    special = {t: "target" for t in opts.targets}
    if isinstance(opts.split, str):
        need(opts.split, "split")
        special[opts.split] = "split"
    elif isinstance(opts.split, Mapping):
        need(opts.split["group"], "group")
        special[opts.split["group"]] = "group"
    for c in opts.exclude:
        need(c, "excluded")
    for c in opts.kinds:
        need(c, "kinds:")
    if opts.modalities is not None:
        for m, cols in opts.modalities.items():
            for c in cols:
                need(c, f"modality {m!r}:")
                if c in special:
                    raise DataError(f"{where}: modality {m!r}: column {c!r} is the {special[c]} column")
        used = [c for cols in opts.modalities.values() for c in cols]
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise DataError(f"{where}: columns {twice} are in more than one modality")
    else:
        used = [c for c in columns if c not in special and c not in opts.exclude]
    if not used:
        raise DataError(f"{where}: no feature columns left besides {sorted(special)}; the columns are {columns}")
    kinds = {c: opts.kinds.get(c) or _infer_kind(frame[c], opts) for c in used}

    # Targets first: rows without one are dropped and counted.
    rows = len(frame)
    labels, has_target, task, num_classes, class_names = _targets(frame, opts, where)
    dropped: dict[str, int] = {}
    if not has_target.all():
        dropped["missing target"] = int((~has_target).sum())
    frame_t = frame[has_target].reset_index(drop=True)
    original_rows = np.flatnonzero(has_target)

    # Modalities.
    if opts.modalities is not None:
        groups = {m: list(cols) for m, cols in opts.modalities.items()}
    else:
        groups = {}
        tab = [c for c in used if kinds[c] in ("numeric", "categorical")]
        if tab:
            groups["tabular"] = tab
        for c in used:
            if kinds[c] not in ("numeric", "categorical"):
                if c in groups:
                    raise DataError(f"{where}: column {c!r} would be a modality of the same name as another; "
                                    "pass modalities=")
                groups[c] = [c]
    bad = _BadFiles(opts, where)
    mods: dict[str, _Mod] = {}
    for m, cols in groups.items():
        ks = {kinds[c] for c in cols}
        if ks <= {"numeric", "categorical"}:
            mods[m] = _numeric_block(frame_t, m, cols, kinds, where)
            continue
        if ks & {"numeric", "categorical"}:
            odd = next(c for c in cols if kinds[c] not in ("numeric", "categorical"))
            nums = [c for c in cols if kinds[c] in ("numeric", "categorical")]
            raise DataError(f"{where}: modality {m!r}: column {odd!r} is {kinds[odd]}, it cannot go with the "
                            f"numeric/categorical columns {nums}; give it its own modality")
        if ks == {"text"}:
            mods[m] = _text_block(frame_t, m, cols)
            continue
        if len(cols) != 1:
            raise DataError(f"{where}: modality {m!r}: an image, audio or embedding modality takes one column, "
                            f"got {cols} ({sorted(ks)})")
        k = kinds[cols[0]]
        if k == "image":
            mods[m] = _image_block(frame_t, m, cols[0], opts, base, bad)
        elif k == "audio":
            mods[m] = _audio_block(frame_t, m, cols[0], opts, base, bad)
        else:
            mods[m] = _embedding_block(frame_t, m, cols[0], base, where)
    # Bad files were recorded by table row of frame_t: report the table's own row numbers.
    bad_files = tuple(BadFile(b.column, int(original_rows[b.row]), b.path, b.reason) for b in bad.items)

    any_present = np.zeros(len(frame_t), dtype=bool)
    for mod in mods.values():
        any_present |= mod.present
    if not any_present.all():
        dropped["every modality missing"] = int((~any_present).sum())
    if not any_present.any():
        raise DataError(f"{where}: every row has every modality missing")
    keep = np.flatnonzero(any_present)
    frame_k = frame_t.iloc[keep].reset_index(drop=True)
    labels = labels[keep]
    original_rows = original_rows[keep]
    for mod in mods.values():
        mod.present = mod.present[keep]
        if mod.token_mask is not None:
            mod.token_mask = mod.token_mask[keep]
        if isinstance(mod.data, dict):
            mod.data = {**mod.data, "num": mod.data["num"][keep], "cats": [s[keep] for s in mod.data["cats"]]}
        elif isinstance(mod.data, list):
            mod.data = [mod.data[i] for i in keep]
        else:
            mod.data = mod.data[keep]

    parts, how = _split_parts(frame_k, labels, task, opts, where, original_rows)
    if task in ("binary", "multiclass"):
        missing_classes = sorted(set(range(num_classes)) - set(labels[parts[0]].tolist()))
        if missing_classes:
            raise DataError(f"{where}: target {opts.targets[0]!r}: classes "
                            f"{[class_names[i] for i in missing_classes]} have no training row")
    inputs, masks, specs, fitted = {}, {}, {}, {}
    for m, mod in mods.items():
        inputs[m], masks[m], specs[m], fitted[m] = _finish(mod, parts[0], opts)
    name = opts.name or Path(where).name
    y = torch.from_numpy(labels)
    full = MultimodalDataset(name, inputs, y, specs=specs, num_classes=num_classes, masks=masks,
                             class_names=class_names, task=task)  # type: ignore[arg-type]
    train, val, test = (full.subset(torch.from_numpy(p)) for p in parts)

    # The schema report.
    col_reports = []
    for c in columns:
        if c in special:
            kind, modality = special[c], None
        elif c not in kinds:
            kind, modality = "excluded", None
        else:
            kind = kinds[c]
            modality = next(m for m, cols in groups.items() if c in cols)
        col_reports.append(ColumnReport(c, kind, modality, _missing_rate(frame[c]), str(frame[c].dtype)))
    mod_reports = {
        m: {"kind": specs[m].kind, "shape": list(specs[m].shape), "columns": list(mods[m].columns),
            "missing": int((~mods[m].present).sum())}
        for m in sorted(mods)
    }
    if task == "regression":
        summary = {c: {"min": float(labels[:, j].min()), "max": float(labels[:, j].max()),
                       "mean": float(labels[:, j].mean()), "std": float(labels[:, j].std())}
                   for j, c in enumerate(class_names)}
    elif task == "multilabel":
        summary = {n: int(v) for n, v in zip(class_names, labels.sum(axis=0), strict=True)}
    else:
        summary = {n: int(v) for n, v in zip(class_names, np.bincount(labels, minlength=num_classes), strict=True)}
    report = TableReport(
        source=where, rows=rows, rows_used=len(labels), columns=tuple(col_reports), modalities=mod_reports,
        target=opts.targets, task=task, num_classes=num_classes, target_summary=summary, split=how,
        split_sizes={k: len(p) for k, p in zip(("train", "val", "test"), parts, strict=True)},
        dropped=dropped, bad_files=bad_files,
    )
    info = {
        "source": where,
        "options": opts.to_dict(),
        "schema": report,
        "fitted": fitted,
        "seed": opts.seed,
        # rows of the table (0-based) in each split
        "indices": {k: original_rows[p].tolist() for k, p in zip(("train", "val", "test"), parts, strict=True)},
    }
    return DatasetSplits(name, train, val, test, info), report


def _options(source: Any, target: Any, extra: Mapping[str, Any]) -> tuple[TableSource, pd.DataFrame | None]:
    if isinstance(source, pd.DataFrame):
        return TableSource(path="<DataFrame>", target=target, **extra), source
    if isinstance(source, TableSource):
        raise DataError("from_table: pass a TableSource to load_table(), not from_table()")
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"from_table: source: expected a DataFrame or a path, got {type(source).__name__}")
    return TableSource(path=str(source), target=target, **extra), None


def _load(opts: TableSource, frame: pd.DataFrame | None) -> tuple[DatasetSplits, TableReport]:
    if frame is None:
        frame = read_table(opts.path, opts.format)
        where = str(Path(opts.path).expanduser())
        default_base = Path(where) if Path(where).is_dir() else Path(where).parent
    else:
        where = opts.name or "<DataFrame>"
        default_base = Path.cwd()
    base = Path(opts.base_dir).expanduser() if opts.base_dir is not None else default_base
    return _build(frame, opts, where, base)


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
    d = source.to_dict()
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
