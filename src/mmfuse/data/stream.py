"""A Parquet folder larger than memory, read in record batches with bounded memory.

Shape legend: ``b`` batch rows, ``d`` features of a modality, ``k`` target columns.

:class:`ParquetStream` is a ``torch.utils.data.IterableDataset`` over a Parquet file
or folder (read with ``pyarrow.dataset``) that yields the collated batch dicts the
training loop takes (:func:`mmfuse.training.metrics.take`'s form)::

    {"inputs": {modality: (b, d) float32}, "masks": {modality: (b,) bool}, "label": (b,) int64 | (b, k) float32}

Use it with ``DataLoader(stream, batch_size=None)`` (batches are already collated).

Memory: the table is read one row group at a time (``fragment.split_by_row_group``),
each cut into record batches of ``batch_size`` rows; only the batch being built and
pyarrow's read buffer of one row group are held, whatever the folder's size. A
batch never spans two row groups, so the last batch of a row group may be smaller.

Sharding: the row groups of all files, in sorted file order, are dealt round-robin to
``world_size x num_workers`` shards; DDP rank ``r`` (from ``torch.distributed`` when it
is initialised, else the ``rank``/``world_size`` arguments) and DataLoader worker ``w``
read shard ``r * num_workers + w`` only, so each row is read once per epoch across all
processes. With ``shuffle=True`` the row groups of a shard are read in a seeded order
that changes with :meth:`set_epoch`. Every shard yields the same number of batches (that
of the largest shard, from the row groups' row counts): a shard with fewer repeats its
first batches, as ``DistributedSampler`` repeats samples, so DDP ranks take the same
number of steps and never wait on each other forever (3 row groups on 2 ranks would
otherwise leave one rank a step short).

Columns: every modality is made of numeric columns (a ``vector``) or of one
fixed-length list column (an embedding, ``vector`` ``(d,)``). Numeric columns follow
the one rule of tables (:mod:`mmfuse.data.table.kinds.tabular`), through the same
fitted object, :attr:`ParquetStream.preprocessor`: a NaN takes the column's median,
values are standardised with the mean and std of the median-filled column, and a column
that had a NaN gets a 0/1 missing indicator; a modality is missing in a row when all
its values are NaN. Statistics come from one streaming pass (:func:`fit_stream_stats`;
the median is that of a uniform sample of at most ``median_sample`` values per column,
exact below it) or are given. Use :func:`mmfuse.data.from_table` for text, images,
audio and categorical columns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mmfuse.data._base import TASKS, DataError, ModalitySpec, MultimodalDataset, classification_task

__all__ = ["ParquetStream", "StreamStats", "fit_stream_stats"]


def _dataset(path: str | os.PathLike[str]):
    import pyarrow.dataset as ds

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    try:
        return ds.dataset(str(p), format="parquet")
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read as Parquet: {type(e).__name__}: {e}") from e


def _class_name(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _row_groups_of(data) -> list[tuple[str, int]]:
    """Every (file, row group index) of a dataset, files in sorted order."""
    out = []
    for frag in sorted(data.get_fragments(), key=lambda f: f.path):
        out += [(frag.path, i) for i in range(frag.metadata.num_row_groups)]
    return out


def _row_group_sizes(data) -> dict[tuple[str, int], int]:
    """Rows of every (file, row group), from the files' metadata."""
    out = {}
    for frag in data.get_fragments():
        meta = frag.metadata
        for i in range(meta.num_row_groups):
            out[(frag.path, i)] = meta.row_group(i).num_rows
    return out


def _read(row_groups: Sequence[tuple[str, int]], columns: Sequence[str], batch_size: int):
    """Record batches of ``columns``, one row group at a time (a dataset scanner reads ahead far more)."""
    import pyarrow.parquet as pq

    for file, group in row_groups:
        try:
            pf = pq.ParquetFile(file)
        except FileNotFoundError as e:
            raise DataError(f"{file}: the file disappeared while it was being read (it was listed when the "
                            "stream was made)") from e
        except (OSError, ValueError) as e:
            raise DataError(f"{file}: not a readable Parquet file: {type(e).__name__}: {e}") from e
        with pf:
            have = set(pf.schema_arrow.names)
            lacking = [c for c in columns if c not in have]
            if lacking:
                raise DataError(f"{file}: columns {lacking} are not in this file (every file of the folder must "
                                "have every column the stream reads)")
            yield from pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=list(columns),
                                       use_threads=False)


@dataclass(frozen=True)
class StreamStats:
    """Per numeric column: the mean and std of the median-filled values, the median and the
    number of missing values; list lengths; the target's classes.

    ``classes`` is the sorted target values (classification) or empty (regression,
    multilabel); ``rows`` the rows seen. ``median``/``missing`` absent (statistics made
    by hand): the mean fills, and no column gets an indicator.
    """

    mean: Mapping[str, float]
    std: Mapping[str, float]
    lengths: Mapping[str, int] = field(default_factory=dict)
    classes: tuple[float, ...] = ()
    rows: int = 0
    median: Mapping[str, float] = field(default_factory=dict)
    missing: Mapping[str, int] = field(default_factory=dict)


def _column_array(batch, name: str, where: str) -> np.ndarray:
    import pyarrow as pa

    col = batch.column(name)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        raise DataError(f"{where}: column {name!r} is a list, expected numbers")
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise DataError(f"{where}: column {name!r} is {col.type}, expected numbers (use from_table for text "
                        "and categorical columns)")
    x = col.to_numpy(zero_copy_only=False).astype(np.float64)
    if np.isinf(x).any():
        raise DataError(f"{where}: column {name!r}: {int(np.isinf(x).sum())} values are inf (expected finite "
                        "numbers, or null for a missing value)")
    return x


def _list_array(batch, name: str, length: int | None, where: str) -> np.ndarray:
    import pyarrow as pa

    col = batch.column(name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise DataError(f"{where}: column {name!r} is {col.type}, expected a list of numbers")
    rows = col.to_pylist()
    d = length if length is not None else next((len(v) for v in rows if v is not None), 0)
    out = np.full((len(rows), d), np.nan, dtype=np.float64)
    for r, v in enumerate(rows):
        if v is None:
            continue
        if len(v) != d:
            raise DataError(f"{where}: column {name!r}: a list of length {len(v)}, expected {d}")
        out[r] = np.asarray(v, dtype=np.float64)
    return out


def fit_stream_stats(
    path: str | os.PathLike[str],
    columns: Sequence[str],
    *,
    target: str | None = None,
    max_classes: int = 50,
    batch_size: int = 16384,
    median_sample: int = 1 << 13,
    seed: int = 0,
) -> StreamStats:
    """One bounded-memory pass over ``path``: per numeric column the median (of a seeded uniform
    sample of at most ``median_sample`` values: exact below it), the missing count and the mean
    and std after filling NaN with the median; list lengths; the target's classes.

    The target's classes are collected while there are at most ``max_classes`` of
    them and every value is an integer; otherwise ``classes`` is empty (regression).
    """
    import pyarrow as pa

    data = _dataset(path)
    where = str(path)
    columns = list(dict.fromkeys(columns))
    names = set(data.schema.names)
    for c in [*columns, *([target] if target else [])]:
        if c not in names:
            raise DataError(f"{where}: column {c!r} does not exist; the columns are {data.schema.names}")
    lists = {c for c in columns if pa.types.is_list(data.schema.field(c).type)
             or pa.types.is_large_list(data.schema.field(c).type)
             or pa.types.is_fixed_size_list(data.schema.field(c).type)}
    n = {c: 0 for c in columns if c not in lists}
    s1 = dict.fromkeys(n, 0.0)
    s2 = dict.fromkeys(n, 0.0)
    lengths: dict[str, int] = {}
    classes: set[float] | None = set()
    rows = 0
    rng = np.random.default_rng(seed)
    sample = {c: np.empty(0) for c in n}  # a uniform reservoir of each column's values (Algorithm R, batched)
    for batch in _read(_row_groups_of(data), [*columns, *([target] if target else [])], batch_size):
        rows += batch.num_rows
        for c in columns:
            if c in lists:
                if c not in lengths:
                    first = next((v for v in batch.column(c).to_pylist() if v is not None), None)
                    if first is not None:
                        lengths[c] = len(first)
                continue
            x = _column_array(batch, c, where)
            ok = ~np.isnan(x)
            seen = n[c]
            n[c] += int(ok.sum())
            s1[c] += float(x[ok].sum())
            s2[c] += float((x[ok] ** 2).sum())
            sample[c] = _reservoir(sample[c], x[ok], seen, median_sample, rng)
        if target and classes is not None:
            y = _column_array(batch, target, where)
            y = y[~np.isnan(y)]
            if y.size and not np.all(np.mod(y, 1.0) == 0.0):
                classes = None
            else:
                classes |= set(np.unique(y).tolist())
                if len(classes) > max_classes:
                    classes = None
    mean, std, median, missing = {}, {}, {}, {}
    for c in n:
        if n[c] == 0:
            raise DataError(f"{where}: column {c!r}: every value is missing")
        med = float(np.median(sample[c]))
        gaps = rows - n[c]
        m = (s1[c] + gaps * med) / rows  # of the median-filled column, as tables standardise
        var = max((s2[c] + gaps * med * med) / rows - m * m, 0.0)
        mean[c], std[c] = m, (var**0.5 if var > 1e-16 else 1.0)
        median[c], missing[c] = med, gaps
    return StreamStats(mean, std, lengths, tuple(sorted(classes)) if classes else (), rows, median, missing)


def _reservoir(kept: np.ndarray, new: np.ndarray, seen: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of at most ``size`` of the ``seen`` values behind ``kept`` and ``new``."""
    room = max(size - kept.shape[0], 0)
    kept = np.concatenate([kept, new[:room]])
    rest = new[room:]
    if rest.size:
        # value number i (0-based, over everything seen) replaces a random slot with probability size / (i + 1)
        idx = np.arange(seen + room, seen + room + rest.size)
        slots = (rng.random(rest.size) * (idx + 1)).astype(np.int64)
        take = slots < size
        kept[slots[take]] = rest[take]  # later values win a slot in order, as one-by-one replacement does
    return kept


class ParquetStream(IterableDataset):
    """Collated batches of a Parquet file or folder, in bounded memory (see the module docstring).

    Args:
        path: a Parquet file or a folder of them.
        target: the target column (numbers).
        modalities: modality name -> its columns (numeric columns, or one list column).
        task: ``binary``, ``multiclass`` or ``regression`` (default: classification when
            the stats found at most ``max_classes`` integer values, else regression).
        batch_size: rows per batch (at most; see the module docstring).
        stats: statistics from :func:`fit_stream_stats` (fitted on ``path`` when None:
            fit them on the training files only when the folder holds several splits).
        standardise: standardise numeric columns with ``stats``.
        shuffle: read each shard's row groups in a seeded order per epoch.
        seed: seed of that order.
        rank, world_size: this process's share when ``torch.distributed`` is not initialised.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        target: str,
        modalities: Mapping[str, Sequence[str]],
        task: str | None = None,
        batch_size: int = 1024,
        stats: StreamStats | None = None,
        standardise: bool = True,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_classes: int = 50,
    ) -> None:
        super().__init__()
        import pyarrow as pa

        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"ParquetStream: batch_size must be an int >= 1, got {batch_size!r}")
        if not (0 <= rank < world_size):
            raise DataError(f"ParquetStream: expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if not modalities:
            raise DataError("ParquetStream: expected at least one modality")
        self.path = str(path)
        data = _dataset(path)
        columns = [c for cols in modalities.values() for c in cols]
        self.stats = stats or fit_stream_stats(path, columns, target=target, max_classes=max_classes)
        inferred = classification_task(len(self.stats.classes)) if len(self.stats.classes) >= 2 else "regression"
        task = task or inferred
        if task not in TASKS or task == "multilabel":
            raise DataError(f"ParquetStream: task must be binary, multiclass or regression, got {task!r}")
        if task != "regression" and len(self.stats.classes) < 2:
            raise DataError(f"{path}: target {target!r}: task {task} needs at least two integer classes, "
                            f"got {list(self.stats.classes)}")
        self.task = task
        self.target = target
        self.num_classes = 1 if task == "regression" else len(self.stats.classes)
        self.class_values = np.array(self.stats.classes, dtype=np.float64)
        self.modalities = tuple(sorted(modalities))
        self._groups: dict[str, tuple[str, ...]] = {m: tuple(modalities[m]) for m in self.modalities}
        self._lists: dict[str, str] = {}
        for m, cols in self._groups.items():
            kinds = [pa.types.is_list(data.schema.field(c).type) or pa.types.is_large_list(data.schema.field(c).type)
                     or pa.types.is_fixed_size_list(data.schema.field(c).type) for c in cols]
            if any(kinds):
                if len(cols) != 1:
                    raise DataError(f"{path}: modality {m!r}: a list column must be alone in its modality, got {list(cols)}")
                self._lists[m] = cols[0]
                if self.stats.lengths.get(cols[0]) is None:
                    raise DataError(f"{path}: column {cols[0]!r}: no row has a list")
            else:
                for c in cols:
                    if c not in self.stats.mean:
                        raise DataError(f"{path}: column {c!r}: the statistics have no entry for it")
        self.standardise = standardise
        self.preprocessor = self._preprocessor(target)
        self.specs: dict[str, ModalitySpec] = self.preprocessor.specs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._rank, self._world = rank, world_size
        self._row_groups = _row_groups_of(data)
        self._group_rows = _row_group_sizes(data)

    def _preprocessor(self, target: str) -> Any:
        """The stream's fitted preprocessing: the same object (and numeric rule) as a table's."""
        from mmfuse.data.table import Schema, TablePreprocessor, TableSource, Target
        from mmfuse.data.table.kinds.embedding import EmbeddingBlock
        from mmfuse.data.table.kinds.tabular import TabularBlock

        st = self.stats
        kinds = {c: ("embedding" if m in self._lists else "numeric") for m, cols in self._groups.items() for c in cols}
        blocks = {}
        for m, cols in self._groups.items():
            if m in self._lists:
                block = EmbeddingBlock(m, cols, kinds, None)
                block.load_state({"layout": "vector", "length": None, "dim": st.lengths[cols[0]]}, {})
            else:
                block = TabularBlock(m, cols, kinds, None)
                block.load_state({
                    "medians": [st.median.get(c, st.mean[c]) for c in cols],
                    "means": [st.mean[c] if self.standardise else 0.0 for c in cols],
                    "stds": [st.std[c] if self.standardise else 1.0 for c in cols],
                    "indicators": [c for c in cols if st.missing.get(c, 0) > 0],
                    "categories": {}}, {})
            blocks[m] = block
        names = ([_class_name(v) for v in st.classes] if self.task != "regression" else [target])
        options = TableSource(path=self.path, target=target, modalities=self._groups, task=self.task,
                              kinds=kinds)
        for b in blocks.values():
            b.options = options
        schema = Schema((*kinds, target), kinds, self._groups, {m: b.name for m, b in blocks.items()},
                        {target: "target"}, (), tuple(kinds))
        return TablePreprocessor(options, schema, Target((target,), self.task, names, numeric=True), blocks)

    def to_dataset(self, name: str | None = None) -> MultimodalDataset:
        """All of this stream's rows as an in-memory :class:`MultimodalDataset` (for the
        small validation and test splits beside a streamed training split)."""
        batches = list(self.iter_shard(0, 1))
        if not batches:
            raise DataError(f"{self.path}: no rows to read")
        return MultimodalDataset(
            name or Path(self.path).name,
            {m: torch.cat([b["inputs"][m] for b in batches]) for m in self.modalities},
            torch.cat([b["label"] for b in batches]),
            specs=self.specs, num_classes=self.num_classes,
            masks={m: torch.cat([b["masks"][m] for b in batches]) for m in self.modalities},
            task=self.task,
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch, which seeds the shuffled order of row groups."""
        self.epoch = int(epoch)

    def _share(self) -> tuple[int, int]:
        rank, world = self._rank, self._world
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def row_groups(self, shard: int, num_shards: int) -> list[tuple[str, int]]:
        """The (file, row group) pairs of shard ``shard`` of ``num_shards``, in reading order."""
        mine = self._row_groups[shard::num_shards]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(mine))
            mine = [mine[i] for i in order]
        return mine

    def iter_shard(self, shard: int, num_shards: int) -> Iterator[dict[str, Any]]:
        """The batches of one shard (what :meth:`__iter__` reads for this rank and worker)."""
        columns = list(dict.fromkeys([*(c for cols in self._groups.values() for c in cols), self.target]))
        if num_shards == 1:
            for batch in _read(self.row_groups(shard, num_shards), columns, self.batch_size):
                yield self._convert(batch, self.path)
            return
        want = max(self._batch_count(s, num_shards) for s in range(num_shards))
        seen: list[dict[str, Any]] = []
        for batch in _read(self.row_groups(shard, num_shards), columns, self.batch_size):
            if len(seen) == want:
                return  # a row group split into more batches than its row count says: keep in step
            seen.append(self._convert(batch, self.path))
            yield seen[-1]
        for k in range(want - len(seen)):  # pad with this shard's first batches (none: the first shard's)
            if seen:
                yield seen[k % len(seen)]
            else:
                first = next(_read(self.row_groups(0, num_shards), columns, self.batch_size), None)
                if first is None:
                    return
                seen.append(self._convert(first, self.path))
                yield seen[0]

    def _batch_count(self, shard: int, num_shards: int) -> int:
        """Batches shard ``shard`` yields before padding: ``ceil(rows / batch_size)`` per row group."""
        return sum(-(-self._group_rows[g] // self.batch_size) for g in self._row_groups[shard::num_shards])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards = self._share()
        return self.iter_shard(shard, num_shards)

    def _convert(self, batch, where: str) -> dict[str, Any]:
        from mmfuse.data.table.kinds import Raw, ReadContext

        inputs, masks = {}, {}
        ctx = ReadContext(where, Path.cwd(), np.arange(batch.num_rows))
        for m, cols in self._groups.items():
            # the raw values the table's blocks read from a frame, straight from Arrow
            if m in self._lists:
                x = _list_array(batch, cols[0], self.specs[m].shape[0], where).astype(np.float32)
                ok = ~np.isnan(x).any(axis=1)
                raw = Raw(ok, {"arrays": [a if k else None for a, k in zip(x, ok, strict=True)], "from_file": False})
            else:
                x = np.stack([_column_array(batch, c, where) for c in cols], axis=1)
                raw = Raw((~np.isnan(x)).any(axis=1), {"num": x, "cats": np.empty((len(x), 0), dtype=object)})
            enc = self.preprocessor.blocks[m].apply(raw, ctx)
            inputs[m], masks[m] = enc.x, enc.mask
        y = _column_array(batch, self.target, where)
        if np.isnan(y).any():
            raise DataError(f"{where}: target {self.target!r}: missing values (drop those rows before streaming)")
        if self.task == "regression":
            label = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
        else:
            idx = np.searchsorted(self.class_values, y)
            idx = np.clip(idx, 0, len(self.class_values) - 1)
            if not np.array_equal(self.class_values[idx], y):
                bad = y[self.class_values[idx] != y][0]
                raise DataError(f"{where}: target {self.target!r}: value {bad:g} is not one of the classes "
                                f"{self.class_values.tolist()} of the statistics")
            label = torch.from_numpy(idx.astype(np.int64))
        return {"inputs": inputs, "masks": masks, "label": label}
