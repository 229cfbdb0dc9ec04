"""Reading a table file into a DataFrame, whole or in batches of rows."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from mmfuse.data._base import DataError

__all__ = ["iter_parquet", "read_table", "table_format"]


def table_format(path: Path, fmt: str | None) -> str:
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
    kind = table_format(p, fmt)
    if kind in ("csv", "tsv"):
        _check_header(p, "," if kind == "csv" else "\t")
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



def _check_header(path: Path, sep: str) -> None:
    """:class:`DataError` for a header that names a column twice (pandas would rename the second)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    names = [h.strip() for h in header]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: the header names columns {dup} more than once; rename them")


def iter_parquet(path: str | os.PathLike[str], *, batch_rows: int = 4096,
                 columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The Parquet file or folder at ``path`` as DataFrames of at most ``batch_rows`` rows, in
    order (files sorted by path, then their row groups), reading one row group at a time without
    read-ahead, so memory stays near one row group's; ``columns`` (None: all) those present."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    try:
        files = sorted(f.path for f in pads.dataset(str(p), format="parquet").get_fragments())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read as parquet: {type(e).__name__}: {e}") from e
    for file in files:
        try:
            with pq.ParquetFile(file) as pf:
                names = set(pf.schema_arrow.names)
                cols = None if columns is None else [c for c in columns if c in names]
                for group in range(pf.metadata.num_row_groups):
                    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=cols,
                                                 use_threads=False):
                        if batch.num_rows:
                            yield batch.to_pandas()
        except (OSError, ValueError) as e:
            raise DataError(f"{file}: cannot read as parquet: {type(e).__name__}: {e}") from e
