"""What ``mmfuse predict`` does: load the run, predict the table in batches, write, report.

Shape legend: none (no tensors here).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError, DataError

__all__ = ["predict_command", "table_rows"]


def table_rows(path: Path) -> int | None:
    """Rows of a Parquet file or folder from its metadata (None for other formats: not read twice)."""
    from mmfuse.data.table import table_format

    try:
        if table_format(path, None) != "parquet":
            return None
        import pyarrow.dataset as pads

        return int(pads.dataset(str(path), format="parquet").count_rows())
    except Exception:  # noqa: BLE001  (only the progress bar's total)
        return None


def predict_command(
    run_path: str,
    *,
    data: str,
    out: str | None,
    strategy: str | None = None,
    id_column: str | None = None,
    explain: bool = False,
    strict: bool = False,
    base_dir: str | None = None,
    batch_rows: int = 4096,
    progress: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
) -> int:
    """Everything ``mmfuse predict`` does; returns the exit code.

    Without ``out`` the predictions go to standard output as CSV and the summary to
    standard error, so the command can be piped. ``executor="ray"``: on Ray Data
    (:func:`mmfuse.runs.cluster.predict_on_ray`), ``out`` a folder.
    """
    from rich.console import Console
    from rich.markup import escape

    from mmfuse.runs.predictor import load_run

    if batch_rows < 1:
        raise ConfigError(f"--batch-rows: expected a positive int, got {batch_rows}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor: expected 'local' or 'ray', got {executor!r}")
    if executor != "ray" and (ray_address is not None or ray_workers is not None):
        flag = "--ray-address" if ray_address is not None else "--ray-workers"
        raise ConfigError(f"{flag} is for --executor ray (this run predicts in this process)")
    src = Path(data).expanduser()
    if not src.exists():
        raise DataError(f"--data {data}: no such file or folder")
    err = Console(stderr=True)
    if executor == "ray":
        return _predict_on_ray(err, run_path, src=src, out=out, strategy=strategy, id_column=id_column,
                               explain=explain, strict=strict, base_dir=base_dir, batch_rows=batch_rows,
                               progress=progress, address=ray_address, workers=ray_workers)
    run = load_run(run_path, strategy=strategy)
    err.print(f"[bold]mmfuse predict[/]: {escape(run.label)} ({run.task}) from {escape(str(run.bundle.folder))} "
              f"on {escape(str(src))}")
    to_stdout = out is None
    if to_stdout:
        import tempfile

        target = Path(tempfile.mkdtemp(prefix="mmfuse-predict-")) / "predictions.csv"
    else:
        target = Path(out)
    total = table_rows(src)
    show = progress and err.is_terminal
    if show:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=err, transient=True)
        with bar:
            task = bar.add_task("rows", total=total)
            summary = run.predict_file(src, target, id_column=id_column, explain=explain, batch_rows=batch_rows,
                                       base_dir=base_dir, strict=strict,
                                       progress=lambda k: bar.advance(task, k))
    else:
        summary = run.predict_file(src, target, id_column=id_column, explain=explain, batch_rows=batch_rows,
                                   base_dir=base_dir, strict=strict)
    if to_stdout:
        with target.open() as fh:
            sys.stdout.write(fh.read())
        sys.stdout.flush()
        target.unlink()
        target.parent.rmdir()
    for line in summary.lines():
        err.print(escape(line))
    if summary.metrics is not None:
        shown = ", ".join(f"{k} {v:.4f}" if k != "n" else f"n {int(v)}" for k, v in summary.metrics.items())
        err.print(f"metrics (the target column is present; not used as input): {shown}")
    if not to_stdout:
        print(f"predictions: {summary.out}")  # plain print: a path must not be wrapped
    return 0


def _predict_on_ray(err: Any, run_path: str, *, src: Path, out: str | None, strategy: str | None,
                    id_column: str | None, explain: bool, strict: bool, base_dir: str | None, batch_rows: int,
                    progress: bool, address: str | None, workers: int | None) -> int:
    from rich.markup import escape

    from mmfuse.runs.cluster import ROW_COLUMN, predict_on_ray

    if out is None:
        raise ConfigError("--executor ray: --out FOLDER is required (the predictions are a folder of Parquet files)")
    err.print(f"[bold]mmfuse predict[/] on Ray: {escape(str(run_path))} on {escape(str(src))}")
    summary = predict_on_ray(run_path, data=src, out=out, strategy=strategy, id_column=id_column, explain=explain,
                             strict=strict, base_dir=base_dir, batch_rows=batch_rows, address=address,
                             workers=workers, progress=progress and err.is_terminal)
    for line in summary.lines():
        err.print(escape(line))
    print(f"predictions: {summary.out} (sort by {ROW_COLUMN} for the input's order)")
    return 0
