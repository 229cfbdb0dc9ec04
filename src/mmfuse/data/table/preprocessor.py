"""The fitted preprocessing of a table: fit on training rows, transform any frame, save, load.

Shape legend: ``n`` rows.

:class:`TablePreprocessor` holds the schema (each column's kind and modality, frozen),
the target (task, classes in order) and one fitted block per modality
(:mod:`mmfuse.data.table.kinds`). :func:`fit_table` is what :func:`~mmfuse.data.from_table`
does: infer the schema, read every row once, split, fit every block on the training
rows only, transform every split. :meth:`TablePreprocessor.transform` applies the same
steps to any other frame, with the rules of new data:

- a feature column absent from the frame, or a missing value, masks that modality for
  those rows (the fusion contract's masks, never zeros without a mask);
- a category never seen in training takes the unknown code (counted);
- columns the schema does not know are ignored (listed);
- a value of the wrong kind (a string in a numeric column) is a
  :class:`~mmfuse.data.DataError` naming the column and row;
- a row with every modality missing cannot be predicted (``usable`` is False for it;
  ``strict=True`` raises instead).

Saved as ``preprocessor.json`` (+ ``preprocessor.safetensors`` for arrays), never a
pickle, with a format version checked on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data._base import DataError, DatasetSplits, ModalitySpec, MultimodalDataset
from mmfuse.data.table.kinds import Block, ReadContext, block_class
from mmfuse.data.table.report import ColumnReport, TableReport, missing_rate
from mmfuse.data.table.schema import Schema, infer_schema
from mmfuse.data.table.source import TableSource
from mmfuse.data.table.split import split_parts
from mmfuse.data.table.target import Target
from mmfuse.errors import CheckpointError
from mmfuse.io import atomic_write
from mmfuse.records import check_format, format_tag

__all__ = ["PREPROCESSOR_FORMAT", "TablePreprocessor", "Transformed", "fit_table"]

PREPROCESSOR_RECORD, PREPROCESSOR_VERSION = "preprocessor", 1
PREPROCESSOR_FORMAT = format_tag(PREPROCESSOR_RECORD, PREPROCESSOR_VERSION)
JSON_FILE = "preprocessor.json"
ARRAYS_FILE = "preprocessor.safetensors"


@dataclass
class Transformed:
    """A frame as the model's inputs (:meth:`TablePreprocessor.transform`).

    Attributes:
        inputs, masks: modality -> ``(n, ...)`` tensor and ``(n,)``/``(n, t)`` bool mask, every row.
        usable: ``(n,)`` bool: the row has at least one modality (the others cannot be predicted).
        labels: the encoded targets of the rows that have one (``has_target``), or None
            when the frame has no target column.
        has_target: ``(n,)`` bool, or None.
        extra_columns: columns of the frame the schema does not use (ignored).
        absent_columns: feature columns the frame lacks (their modality is masked).
        counts: what reading found, ``"<column>: <what>" -> rows`` (unseen categories, ...).
        bad_files: files that could not be read (their modality is masked for that row).
        texts: text modality -> the joined raw strings of every row (for a pretrained tokenizer).
    """

    inputs: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    usable: np.ndarray
    labels: np.ndarray | None = None
    has_target: np.ndarray | None = None
    extra_columns: list[str] = field(default_factory=list)
    absent_columns: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    bad_files: list[Any] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.usable.shape[0])



class TablePreprocessor:
    """The fitted preprocessing of one table (see the module docstring)."""

    def __init__(self, options: TableSource, schema: Schema, target: Target, blocks: Mapping[str, Block]) -> None:
        self.options, self.schema, self.target = options, schema, target
        self.blocks = dict(blocks)

    # ------------------------------------------------------------------ facts
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.blocks)

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return {m: b.spec() for m, b in self.blocks.items()}

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def class_names(self) -> list[str]:
        return list(self.target.names)

    # ------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame, *, base_dir: str | os.PathLike[str] | None = None,
                  where: str = "<DataFrame>", strict: bool = False, first_row: int = 0,
                  within: str | os.PathLike[str] | None = None,
                  how_to_allow: str | None = None) -> Transformed:
        """The model's inputs for ``frame`` (see the module docstring). ``first_row``: the table row
        number of the frame's first row (for messages, when a large table comes in batches).
        ``within``: the folder file paths must stay in (None: no such rule), and ``how_to_allow``
        what the refusal of one that leaves it says to do."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"transform: expected a pandas DataFrame, got {type(frame).__name__}")
        frame = frame.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        dup = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
        if dup:
            raise DataError(f"{where}: duplicate column names {dup}")
        known = set(self.schema.feature_columns) | set(self.schema.special) | set(self.schema.excluded)
        extra = [c for c in frame.columns if c not in known]
        absent = [c for c in self.schema.feature_columns if c not in frame.columns]
        base = Path(base_dir).expanduser() if base_dir is not None else Path.cwd()
        ctx = ReadContext(where, base, np.arange(first_row, first_row + len(frame)), self.options.on_bad_file,
                          within=None if within is None else Path(within))
        if how_to_allow is not None:
            ctx.how_to_allow = how_to_allow
        inputs, masks = {}, {}
        usable = np.zeros(len(frame), dtype=bool)
        texts = {}
        for m, block in self.blocks.items():
            raw = block.read(frame, ctx)
            enc = block.apply(raw, ctx)
            inputs[m], masks[m] = enc.x, enc.mask
            usable |= raw.present
            if isinstance(raw.data, dict) and "strings" in raw.data:
                texts[m] = raw.data["strings"]
        if strict and not usable.all():
            r = first_row + int(np.flatnonzero(~usable)[0])
            raise DataError(f"{where}: row {r}: every modality is missing ({int((~usable).sum())} such rows)")
        labels = has = None
        if self.target.present_in(frame):
            labels, has = self.target.encode(frame, where, ctx.rows)
        return Transformed(inputs, masks, usable, labels, has, extra, absent, dict(ctx.counts),
                           list(ctx.bad_files), texts)

    def dataset(self, frame: pd.DataFrame, *, name: str = "table", **kwargs: Any) -> tuple[MultimodalDataset, Transformed]:
        """The frame's usable rows with a target as a :class:`MultimodalDataset` (for evaluation)."""
        out = self.transform(frame, **kwargs)
        if out.labels is None or out.has_target is None:
            raise DataError(f"{kwargs.get('where', name)}: no target column {list(self.target.columns)} to evaluate on")
        keep = out.usable & out.has_target
        if not keep.any():
            raise DataError(f"{kwargs.get('where', name)}: no row has both a target and a modality")
        pos = np.flatnonzero(keep)
        label_pos = np.cumsum(out.has_target) - 1
        labels = torch.from_numpy(out.labels[label_pos[pos]])
        idx = torch.from_numpy(pos)
        ds = MultimodalDataset(name, {m: x[idx] for m, x in out.inputs.items()}, labels, specs=self.specs,
                               num_classes=self.target.num_outputs, masks={m: k[idx] for m, k in out.masks.items()},
                               class_names=self.class_names, task=self.task)  # type: ignore[arg-type]
        return ds, out

    # ------------------------------------------------------------------ saving
    def to_document(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(preprocessor.json's document, the arrays of preprocessor.safetensors)``."""
        from mmfuse import __version__

        blocks, arrays = {}, {}
        for m, b in self.blocks.items():
            state, arr = b.state()
            blocks[m] = {"block": b.name, "columns": list(b.columns), "state": state}
            arrays.update({f"{m}/{k}": v for k, v in arr.items()})
        options = self.options.to_json()
        return {"format": PREPROCESSOR_FORMAT, "mmfuse_version": __version__, "options": options,
                "schema": self.schema.to_json(), "target": self.target.to_json(), "blocks": blocks}, arrays

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``preprocessor.json`` (and ``preprocessor.safetensors`` when there are arrays) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc, arrays = self.to_document()
        if arrays:
            from safetensors.numpy import save

            atomic_write(folder / ARRAYS_FILE, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
        atomic_write(folder / JSON_FILE, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False))
        return folder / JSON_FILE

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> TablePreprocessor:
        """Read a saved preprocessor (no training data needed)."""
        path = Path(folder)
        path = path / JSON_FILE if path.is_dir() else path
        if not path.is_file():
            raise CheckpointError(f"{path}: no saved preprocessing (expected {JSON_FILE})")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the saved preprocessing: {e}") from e
        return cls.from_document(doc, path.parent, where=str(path))

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], folder: Path | None = None, *,
                      where: str = "preprocessor") -> TablePreprocessor:
        """From :meth:`to_document`'s document, its arrays read from ``folder``'s
        ``preprocessor.safetensors`` (when there is one)."""
        check_format(doc, PREPROCESSOR_RECORD, PREPROCESSOR_VERSION, where=where, error=CheckpointError)
        arrays: dict[str, np.ndarray] = {}
        if folder is not None and (folder / ARRAYS_FILE).is_file():
            from safetensors.numpy import load_file

            arrays = load_file(str(folder / ARRAYS_FILE))
        try:
            options = TableSource.from_json(doc["options"])
            schema = Schema.from_json(doc["schema"])
            target = Target.from_json(doc["target"])
            blocks = {}
            for m, b in doc["blocks"].items():
                block = block_class(b["block"])(m, tuple(b["columns"]), schema.kinds, options,
                                                frozenset(schema.forced))
                block.load_state(b["state"], {k.split("/", 1)[1]: v for k, v in arrays.items()
                                              if k.startswith(f"{m}/")})
                blocks[m] = block
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: the saved preprocessing is incomplete or damaged "
                                  f"({type(e).__name__}: {e})") from e
        return cls(options, schema, target, blocks)


def fit_table(frame: pd.DataFrame, options: TableSource, where: str,
              base: Path, *, within: Path | None = None) -> tuple[DatasetSplits, TableReport]:
    """Infer, read, split, fit on the training rows, transform every split (see the module docstring).
    ``within``: the folder file paths must stay in (None: no such rule)."""
    frame = frame.reset_index(drop=True)
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{where}: duplicate column names {dup}")
    frame.columns = columns
    schema = infer_schema(frame, options, where)

    # the target first: rows without one are dropped and counted
    rows = len(frame)
    target = Target.infer(frame, options.targets, task=options.task, max_classes=options.max_classes, where=where)
    labels, has_target = target.encode(frame, where)
    dropped: dict[str, int] = {}
    if not has_target.all():
        dropped["missing target"] = int((~has_target).sum())
    original_rows = np.flatnonzero(has_target)
    frame_t = frame[has_target].reset_index(drop=True)

    ctx = ReadContext(where, base, original_rows, options.on_bad_file, within=within)
    blocks = {m: block_class(schema.blocks[m])(m, cols, schema.kinds, options, frozenset(schema.forced))
              for m, cols in schema.modalities.items()}
    raws = {m: b.read(frame_t, ctx) for m, b in blocks.items()}
    any_present = np.zeros(len(frame_t), dtype=bool)
    for raw in raws.values():
        any_present |= raw.present
    if not any_present.all():
        dropped["every modality missing"] = int((~any_present).sum())
    if not any_present.any():
        raise DataError(f"{where}: every row has every modality missing")
    keep = np.flatnonzero(any_present)
    frame_k = frame_t.iloc[keep].reset_index(drop=True)
    labels = labels[keep]
    original_rows = original_rows[keep]
    raws = {m: r.take(keep) for m, r in raws.items()}

    parts, how = split_parts(frame_k, labels, target.task, options, where, original_rows)
    if target.task in ("binary", "multiclass"):
        missing_classes = sorted(set(range(target.num_outputs)) - set(labels[parts[0]].tolist()))
        if missing_classes:
            raise DataError(f"{where}: target {options.targets[0]!r}: classes "
                            f"{[target.names[i] for i in missing_classes]} have no training row")
    target.fit_stats(labels[parts[0]])
    inputs, masks = {}, {}
    for m, b in blocks.items():
        b.fit(raws[m].take(parts[0]))
        enc = b.apply(raws[m], ctx)
        inputs[m], masks[m] = enc.x, enc.mask
    prep = TablePreprocessor(options, schema, target, blocks)
    specs = prep.specs
    name = options.name or Path(where).name
    full = MultimodalDataset(name, inputs, torch.from_numpy(labels), specs=specs, num_classes=target.num_outputs,
                             masks=masks, class_names=target.names, task=target.task)  # type: ignore[arg-type]
    train, val, test = (full.subset(torch.from_numpy(p)) for p in parts)

    col_reports = []
    for c in columns:
        if c in schema.special:
            kind, modality = schema.special[c], None
        elif c not in schema.kinds:
            kind, modality = "excluded", None
        else:
            kind, modality = schema.kinds[c], schema.modality_of(c)
        col_reports.append(ColumnReport(c, kind, modality, missing_rate(frame[c]), str(frame[c].dtype)))
    mod_reports = {
        m: {"kind": specs[m].kind, "shape": list(specs[m].shape), "columns": list(blocks[m].columns),
            "missing": int((~raws[m].present).sum())}
        for m in sorted(blocks)
    }
    if target.task == "regression":
        summary = {c: {"min": float(labels[:, j].min()), "max": float(labels[:, j].max()),
                       "mean": float(labels[:, j].mean()), "std": float(labels[:, j].std())}
                   for j, c in enumerate(target.names)}
    elif target.task == "multilabel":
        summary = {n: int(v) for n, v in zip(target.names, labels.sum(axis=0), strict=True)}
    else:
        summary = {n: int(v) for n, v in
                   zip(target.names, np.bincount(labels, minlength=target.num_outputs), strict=True)}
    report = TableReport(
        source=where, rows=rows, rows_used=len(labels), columns=tuple(col_reports), modalities=mod_reports,
        target=options.targets, task=target.task, num_classes=target.num_outputs, target_summary=summary,
        split=how, split_sizes={k: len(p) for k, p in zip(("train", "val", "test"), parts, strict=True)},
        dropped=dropped, bad_files=tuple(ctx.bad_files), notes=dict(ctx.counts),
    )
    texts = {}
    for m, raw in raws.items():
        if isinstance(raw.data, dict) and "strings" in raw.data:
            strings = raw.data["strings"]
            texts[m] = {k: [strings[i] for i in p] for k, p in zip(("train", "val", "test"), parts, strict=True)}
    info = {
        "source": where,
        "options": options.to_json(),
        "schema": report,
        "preprocessor": prep,
        "texts": texts,
        "seed": options.seed,
        # rows of the table (0-based) in each split
        "indices": {k: original_rows[p].tolist() for k, p in zip(("train", "val", "test"), parts, strict=True)},
    }
    return DatasetSplits(name, train, val, test, info), report
