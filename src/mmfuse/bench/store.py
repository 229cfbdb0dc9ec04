"""The results folder: an append-only JSON-lines log of finished runs, and the tables written from it.

Layout of a results folder::

    runs.jsonl     one record per finished run (ok or failed), appended as each run
                   ends: one ``write`` of one line, flushed and fsynced, so a crash of
                   the whole process loses at most the runs still in flight
    results.json   settings, environment (package versions, git commit) and every record
    results.csv    one row per run, flat columns
    plots/*.png    figures
    report.html    the self-contained report

A record is a dict with at least ``key``, ``status`` (``"ok"`` or ``"failed"``) and
``spec`` (the :class:`~mmfuse.bench.grid.RunSpec` as a dict). The last record of a
key wins, so a failed run that is re-run successfully is reported as ok.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse.io import atomic_write

__all__ = ["CSV_COLUMNS", "ResultsStore", "flat_row"]

#: columns every ``results.csv`` has, in order; per-modality robustness columns
#: (``missing:<modality>``, ``noise:<scale>``) follow them
CSV_COLUMNS = [
    "key",
    "status",
    "dataset",
    "model",
    "modality",
    "variant",
    "seed",
    "accuracy",
    "macro_f1",
    "auroc",
    "params",
    "train_time_s",
    "epochs_run",
    "throughput_sps",
    "peak_rss_mb",
    "peak_method",
    "missing_worst",
    "wall_s",
    "finished_at",
    "error",
    "settings",
]


def _finite(x: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``None``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class ResultsStore:
    """The results folder of one comparison (see the module docstring for its layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.log = self.root / "runs.jsonl"

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed and fsynced before returning."""
        if "key" not in record or "status" not in record:
            raise ValueError(f"a result record needs 'key' and 'status', got keys {sorted(record)}")
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_finite(dict(record)), sort_keys=True, default=str) + "\n"
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line.encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # a short write only happens on odd file systems
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every record in the log, oldest first; a torn last line (crash mid-write) is skipped."""
        if not self.log.is_file():
            return []
        out: list[dict[str, Any]] = []
        with self.log.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    warnings.warn(f"{self.log}: line {n} is not valid JSON (interrupted write?); skipped", stacklevel=2)
                    continue
                if isinstance(rec, dict) and "key" in rec:
                    out.append(rec)
        return out

    def latest(self, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """The last record of each key (restricted to ``keys`` when given)."""
        wanted = None if keys is None else set(keys)
        out: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            if wanted is None or rec["key"] in wanted:
                out[rec["key"]] = rec
        return out

    def finished(self) -> set[str]:
        """Keys whose last record is a successful run (failed runs are run again)."""
        return {k for k, rec in self.latest().items() if rec.get("status") == "ok"}

    # ------------------------------------------------------------------ tables
    def write_json(self, records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any],
                   summary: Sequence[Mapping[str, Any]]) -> Path:
        path = self.root / "results.json"
        doc = {"meta": dict(meta), "summary": list(summary), "runs": list(records)}
        atomic_write(path, json.dumps(_finite(doc), indent=1, sort_keys=True, default=str) + "\n")
        return path

    def write_csv(self, records: Sequence[Mapping[str, Any]]) -> Path:
        path = self.root / "results.csv"
        rows = [flat_row(r) for r in records]
        extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS), key=_extra_order)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + extra, extrasaction="raise", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write(path, buf.getvalue())
        return path


def _extra_order(col: str) -> tuple[int, str, float]:
    kind, _, rest = col.partition(":")
    if kind == "noise":
        try:
            return (1, "", float(rest))
        except ValueError:
            return (1, rest, 0.0)
    return (0 if kind == "missing" else 2, rest, 0.0)


def flat_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row of a record: settings, metrics, costs and robustness in flat columns."""
    spec = record.get("spec", {})
    res = record.get("result") or {}
    metrics = res.get("metrics") or {}
    row: dict[str, Any] = {
        "key": record["key"],
        "status": record["status"],
        "dataset": spec.get("dataset_label"),
        "model": record.get("label"),
        "modality": spec.get("modality"),
        "variant": spec.get("variant"),
        "seed": spec.get("seed"),
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "auroc": metrics.get("auroc"),
        "params": res.get("params"),
        "train_time_s": res.get("train_time_s"),
        "epochs_run": res.get("epochs_run"),
        "throughput_sps": res.get("throughput_sps"),
        "peak_rss_mb": res.get("peak_rss_mb"),
        "peak_method": res.get("peak_method"),
        "missing_worst": None,
        "wall_s": record.get("wall_s"),
        "finished_at": record.get("finished_at"),
        "error": record.get("error"),
        "settings": json.dumps(spec, sort_keys=True, default=str),
    }
    missing = res.get("missing") or {}
    for mod, acc in missing.items():
        row[f"missing:{mod}"] = acc
    if missing:
        row["missing_worst"] = min(missing.values())
    for scale, acc in (res.get("noise_mean") or {}).items():
        row[f"noise:{float(scale):g}"] = acc
    return row
