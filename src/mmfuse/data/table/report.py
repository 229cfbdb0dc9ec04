"""What loading a table found: the schema report ``mmfuse data inspect`` prints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from mmfuse.data.table.kinds import BadFile, is_blank
from mmfuse.records import stamp

__all__ = ["BadFile", "ColumnReport", "TableReport", "missing_rate"]


def missing_rate(s: pd.Series) -> float:
    return float(s.map(is_blank).mean())


@dataclass(frozen=True)
class ColumnReport:
    name: str
    kind: str  # one of KINDS, or "target", "split", "group", "excluded"
    modality: str | None
    missing_rate: float
    dtype: str


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
    notes: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``mmfuse data inspect --json``'s document, ``"format": "mmfuse.table_report/1"``
        (before: ``"schema_version": 1``). Nothing reads it back (no ``from_json``): it is
        a report for people and scripts."""
        return stamp("table_report", 1, asdict(self))

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
        for what, n in self.notes.items():
            lines.append(f"note: {what}: {n} rows")
        lines.append(f"bad files: {len(self.bad_files)}")
        for b in self.bad_files[:10]:
            lines.append(f"  column {b.column!r} row {b.row}: {b.path}: {b.reason}")
        if len(self.bad_files) > 10:
            lines.append(f"  ... and {len(self.bad_files) - 10} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

