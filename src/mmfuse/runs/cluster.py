"""Predict a Parquet folder on a Ray cluster: ``mmfuse predict RUN --data DIR --out DIR --executor ray``.

Shape legend: none (tables here; the model's tensors live in :mod:`mmfuse.runs.predictor`).

Ray Data reads the input (``ray.data.read_parquet``), a pool of actors predicts it
(``map_batches`` with :class:`_Predictor`, a callable class that loads the run once per
actor, with one torch thread per CPU it asks for) and Ray writes the predictions
(``write_parquet``) into ``<out>.partial/``, renamed to ``out`` when complete. Each
output row is what :meth:`mmfuse.runs.Run.predict_file` writes for the same input row
(the ``--id`` column when given, then the prediction and the probabilities, and the
Shapley values with ``--explain``), under the same rules of new data, after one more
column first: ``input_row``.

Row order: **``input_row`` is each row's position in the input, from 0: its files
sorted by their path relative to ``DIR`` (the order ``mmfuse predict`` reads a folder
in), each in its own row order; sort the output by it** (``pd.read_parquet(out)
.sort_values("input_row")``), or join on the ``--id`` column. The output files
themselves come in no particular order: the actors run in parallel, and Ray's Parquet
writer (pyarrow's ``write_dataset`` with threads) does not keep row order even within
a file. To number the rows exactly, the input is read with Ray Data's
``preserve_order`` and materialised in Ray's object store (spilled to disk when larger
than memory): each block's first row is the sum of the sizes before it; a small task
per block appends the numbers; then the prediction runs without ``preserve_order``.

The bundle travels with the job: its files are put in Ray's object store and each actor
writes them to a temporary folder of its node, so the nodes need no shared copy of the
run (they do need to read the input, and the output folder must be one the driver can
rename: a shared filesystem). Frozen pretrained encoders load from each node's cache.
The driver checks the run and the input's columns before the job starts; a worker's
:class:`~mmfuse.errors.DataError` (a value of the wrong kind) ends the job with its
message, whose row numbers are ``input_row`` numbers (when, as usual, the failing batch
is one run of input rows; else the message says they count within the batch).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.errors import ConfigError, DataError, MmfuseError

__all__ = ["ROW_COLUMN", "ClusterSummary", "parquet_files", "predict_on_ray"]

_PARQUET = (".parquet", ".pq")
ROW_COLUMN = "input_row"


@dataclass
class ClusterSummary:
    """What :func:`predict_on_ray` did."""

    rows: int = 0
    predicted: int = 0
    files_in: int = 0
    files_out: int = 0
    workers: Any = None
    extra_columns: list[str] = field(default_factory=list)
    absent_columns: list[str] = field(default_factory=list)
    out: Path | None = None

    def lines(self) -> list[str]:
        from mmfuse.runs.predictor import summary_lines

        first, *rest = summary_lines(self.rows, self.predicted, extra_columns=self.extra_columns,
                                     absent_columns=self.absent_columns)
        return [first, f"ray: {self.files_in} input files -> {self.files_out} output files, actors: {self.workers}; "
                       f"sort by {ROW_COLUMN} for the input's order", *rest]


def parquet_files(src: Path) -> list[Path]:
    """The Parquet files of ``src`` (a ``.parquet``/``.pq`` file, or a folder searched recursively),
    sorted by relative path; names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``) are skipped, as Arrow does."""
    if src.is_file():
        return [src] if src.suffix.lower() in _PARQUET else []
    found = []
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in _PARQUET:
            found.append(rel)
    return [src / rel for rel in sorted(found, key=lambda r: r.as_posix())]


def predict_on_ray(
    run_path: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    strategy: str | None = None,
    id_column: str | None = None,
    explain: bool = False,
    strict: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    batch_rows: int = 4096,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    max_rows_per_file: int | None = None,
    progress: bool = False,
) -> ClusterSummary:
    """Predict the Parquet file or folder ``data`` into the folder ``out`` on Ray (see the module
    docstring).

    Args:
        run_path, strategy: the run, as :func:`mmfuse.load_run` takes it.
        id_column: an input column copied first into the output.
        explain, strict, base_dir, batch_rows: as :meth:`~mmfuse.runs.Run.predict_file`
            (``batch_rows``: the rows of one ``map_batches`` call).
        address: a Ray cluster (``ray://...`` or ``host:port``); None: the instance already
            started in this process, else ``$RAY_ADDRESS``, else a local one (stopped at the end).
        workers: actors predicting (None: from 1 up to the cluster's CPUs / ``cpus_per_worker``).
        cpus_per_worker: CPUs each actor asks for (and its torch threads, at least 1).
        max_rows_per_file: most rows in one output file (None: Ray's choice).
        progress: Ray Data's progress bars.

    Raises:
        DataError: the input is not Parquet, lacks ``id_column``, or a worker found a bad value
            (with the preprocessing's message).
        ConfigError: ``out`` exists and is not empty; ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray: ray is not installed ({exc}); pip install 'mmfuse[ray]'") from exc
    import pyarrow.dataset as pads

    from mmfuse.runs.predictor import load_run

    if batch_rows < 1:
        raise ConfigError(f"--batch-rows: expected a positive int, got {batch_rows}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--ray-workers: expected a positive int, got {workers}")
    if not cpus_per_worker > 0:
        raise ConfigError(f"cpus_per_worker: expected a positive number, got {cpus_per_worker}")
    src = Path(data).expanduser().resolve()
    if not src.exists():
        raise DataError(f"--data {data}: no such file or folder")
    files = parquet_files(src)
    if not files:
        raise DataError(f"--data {src}: --executor ray reads Parquet (a file or a folder of .parquet files); "
                        "none found")
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder (the predictions are a folder of "
                          "Parquet files); choose another")
    partial = target.with_name(target.name + ".partial")
    run = load_run(run_path, strategy=strategy)  # checked here, before any job starts
    prep = run.table_preprocessor()
    try:
        schema = pads.dataset([str(f) for f in files], format="parquet").schema
    except (OSError, ValueError) as e:
        raise DataError(f"{src}: cannot read as Parquet: {type(e).__name__}: {e}") from e
    columns = list(schema.names)
    if id_column is not None and id_column not in columns:
        raise DataError(f"{src}: --id column {id_column!r} does not exist; the columns are {columns}")
    if ROW_COLUMN in columns:
        raise DataError(f"{src}: has a column {ROW_COLUMN!r}, the name the output gives each row's input "
                        "position; rename it")
    known = set(prep.schema.feature_columns) | set(prep.schema.special) | set(prep.schema.excluded)
    summary = ClusterSummary(files_in=len(files), extra_columns=[c for c in columns if c not in known],
                             absent_columns=[c for c in prep.schema.feature_columns if c not in columns])
    bundle = _bundle_files(run.bundle.folder, run.bundle.manifest)
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else (src if src.is_dir() else src.parent)

    started = False
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        started = True
    elif address:
        raise ConfigError(f"--ray-address {address}: Ray is already running in this process (connected to "
                          "another instance); leave --ray-address out to use it")
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    try:
        context.enable_progress_bars = progress
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        most = max(1, int(cpus // cpus_per_worker))
        pool = (ray.data.ActorPoolStrategy(size=workers) if workers is not None else
                ray.data.ActorPoolStrategy(min_size=1, max_size=most))
        summary.workers = workers if workers is not None else f"1 to {most}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            # 1. read, in input order, and number the rows (the block sizes give each block's first row)
            context.execution_options.preserve_order = True
            blocks = ray.data.read_parquet([str(f) for f in files], partitioning=None).materialize().to_arrow_refs()
            sizes = ray.get([ray.remote(_num_rows).options(num_cpus=0).remote(b) for b in blocks])
            numbered = []  # and cut into pieces of at most batch_rows rows, so that every actor has some
            first = 0
            for block, size in zip(blocks, sizes, strict=True):
                pieces = max(1, -(-size // batch_rows))
                refs = ray.remote(_numbered).options(num_cpus=0, num_returns=pieces).remote(block, first, pieces)
                numbered += [refs] if pieces == 1 else list(refs)
                first += size
            del blocks
            # 2. predict in parallel, in any order (each row carries its number), and write
            context.execution_options.preserve_order = False
            ds = ray.data.from_arrow_refs(numbered).map_batches(
                _Predictor,
                fn_constructor_kwargs={"bundle": ray.put(bundle), "id_column": id_column, "explain": explain,
                                       "strict": strict, "base_dir": str(base), "where": str(src),
                                       "threads": max(1, int(cpus_per_worker))},
                batch_size=batch_rows, batch_format="pandas", compute=pool, num_cpus=cpus_per_worker)
            ds.write_parquet(str(partial), max_rows_per_file=max_rows_per_file)
        except Exception as exc:  # a worker's MmfuseError comes back wrapped in Ray's errors
            shutil.rmtree(partial, ignore_errors=True)
            cause = _mmfuse_cause(exc)
            if cause is not None:
                raise cause from None
            raise
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            ray.shutdown()
    partial.mkdir(parents=True, exist_ok=True)  # no rows: an empty folder
    written = sorted(p for p in partial.iterdir() if p.suffix == ".parquet")
    summary.files_out = len(written)
    if written:
        table = pads.dataset([str(p) for p in written], format="parquet").to_table(columns=[_first_output(run)])
        summary.rows = table.num_rows
        summary.predicted = table.num_rows - table.column(0).null_count
    if target.exists():
        target.rmdir()
    os.replace(partial, target)
    summary.out = target
    return summary


def _num_rows(block: Any) -> int:
    return int(block.num_rows)


def _numbered(block: Any, first: int, pieces: int) -> Any:
    """The block with its rows' input positions (``first``, ``first + 1``, ...) as ``input_row``,
    in ``pieces`` slices of (nearly) equal rows (one table when ``pieces`` is 1, else a tuple)."""
    import pyarrow as pa

    n = block.num_rows
    table = block.append_column(ROW_COLUMN, pa.array(np.arange(first, first + n, dtype=np.int64)))
    if pieces == 1:
        return table
    cuts = np.linspace(0, n, pieces + 1).round().astype(int)
    return tuple(table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True))


def _first_output(run: Any) -> str:
    if run.task != "regression":
        return "prediction"
    names = run.class_names
    return "prediction" if len(names) <= 1 else f"prediction_{names[0]}"


def _bundle_files(folder: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """The files a run needs, by name: the description, the weights, the preprocessing."""
    from mmfuse.data.table.preprocessor import ARRAYS_FILE
    from mmfuse.runs.bundle import BUNDLE_FILE

    names = [BUNDLE_FILE, str(manifest["model"]["file"])]
    if manifest.get("preprocessor"):
        names.append(str(manifest["preprocessor"]))
        if (folder / ARRAYS_FILE).is_file():
            names.append(ARRAYS_FILE)
    return {name: (folder / name).read_bytes() for name in names}


def _mmfuse_cause(exc: BaseException) -> MmfuseError | None:
    """The :class:`MmfuseError` a worker raised, under Ray's wrappers (None when there is none).

    Ray Data re-raises a UDF's error as a ``UserCodeException`` whose cause reaches the
    driver as the remote traceback's text only: its last ``mmfuse.errors.<Kind>: <message>``
    line is the error."""
    import re

    from mmfuse import errors

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    found: MmfuseError | None = None
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MmfuseError) and type(e).__module__.startswith("mmfuse"):
            return type(e)(str(e))
        for kind, message in re.findall(r"^mmfuse\.errors\.(\w+): (.+)$", str(e), flags=re.MULTILINE):
            cls = getattr(errors, kind, None)
            if isinstance(cls, type) and issubclass(cls, MmfuseError):
                found = cls(message)
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return found


class _Predictor:
    """The actor of ``map_batches``: the run loaded once, then one DataFrame of rows at a time."""

    def __init__(self, *, bundle: Any, id_column: str | None, explain: bool, strict: bool, base_dir: str,
                 where: str, threads: int) -> None:
        import ray
        import torch

        from mmfuse.runs.predictor import load_run

        files = ray.get(bundle) if isinstance(bundle, ray.ObjectRef) else bundle
        torch.set_num_threads(threads)  # the preprocessing's torch ops too
        self._folder = tempfile.TemporaryDirectory(prefix="mmfuse-run-")
        for name, content in files.items():
            (Path(self._folder.name) / name).write_bytes(content)
        self.run = load_run(self._folder.name, threads=threads)
        self.id_column, self.explain, self.strict = id_column, explain, strict
        self.base_dir, self.where = base_dir, where

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        run = self.run
        rows = frame.pop(ROW_COLUMN).to_numpy()
        contiguous = len(rows) > 0 and bool((rows == np.arange(rows[0], rows[0] + len(rows))).all())
        # row numbers in messages: input rows (input_row) when the batch is one run of them
        where = self.where if contiguous else f"{self.where} (a batch of {len(frame)} rows; rows counted in it)"
        t = run.transform(frame, base_dir=self.base_dir, strict=self.strict, where=where,
                          first_row=int(rows[0]) if contiguous else 0)
        pred = run.prediction_frame(t)
        if self.explain:
            pred = pd.concat([pred, run.explanation_frame(t).drop(columns=["value"])], axis=1)
        if self.id_column is not None:
            pred.insert(0, self.id_column, frame[self.id_column].to_numpy())
        pred.insert(0, ROW_COLUMN, rows)
        return pred
