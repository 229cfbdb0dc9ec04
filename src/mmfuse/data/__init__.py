"""Multimodal datasets behind one interface (see :mod:`mmfuse.data._base`).

Registered loaders: ``synthetic`` (interaction suite, generated), ``avdigits``
(MNIST image + FSDD audio), ``mfeat`` (six feature views of handwritten digits),
``reviews`` (clothing review text + tabular). :func:`from_table` takes the user's own
table (a DataFrame or a CSV/TSV/Parquet/JSON Lines file, see :mod:`mmfuse.data.table`);
:class:`ParquetStream` streams a Parquet folder larger than memory in bounded memory.
:func:`download` and :func:`verify` fetch and check the real datasets' files;
:mod:`mmfuse.data.transforms` holds modality dropout and test-time corruptions.

Names load on first use (scipy, pandas and pyarrow are imported only by the loaders
that need them), so ``import mmfuse.data`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmfuse.data._base import (
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    data_root,
    dataset_loader,
    list_datasets,
    load_dataset,
    register_dataset,
)

_LAZY = {
    "cache_dir": "mmfuse.data._files",
    "download": "mmfuse.data._files",
    "verify": "mmfuse.data._files",
    "ParquetStream": "mmfuse.data.stream",
    "StreamStats": "mmfuse.data.stream",
    "fit_stream_stats": "mmfuse.data.stream",
    "TablePreprocessor": "mmfuse.data.table",
    "TableReport": "mmfuse.data.table",
    "TableSource": "mmfuse.data.table",
    "describe_table": "mmfuse.data.table",
    "from_table": "mmfuse.data.table",
    "load_table": "mmfuse.data.table",
    "table_options": "mmfuse.data.table",
    "Compose": "mmfuse.data.transforms",
    "GaussianNoise": "mmfuse.data.transforms",
    "MissingModality": "mmfuse.data.transforms",
    "ModalityDropout": "mmfuse.data.transforms",
}

#: the modules whose import registers the built-in loaders
BUILTIN_LOADERS = ("mmfuse.data.avdigits", "mmfuse.data.mfeat", "mmfuse.data.reviews", "mmfuse.data.synthetic",
                   "mmfuse.data.table")
#: the registered datasets that are a user's own data, not a built-in one (left out of ``all``)
USER_DATASETS = ("table",)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmfuse.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Compose",
    "DataError",
    "DatasetSplits",
    "GaussianNoise",
    "MissingModality",
    "ModalityDropout",
    "ModalitySpec",
    "MultimodalDataset",
    "ParquetStream",
    "StreamStats",
    "TablePreprocessor",
    "TableReport",
    "TableSource",
    "cache_dir",
    "data_root",
    "dataset_loader",
    "describe_table",
    "download",
    "fit_stream_stats",
    "from_table",
    "list_datasets",
    "load_dataset",
    "load_table",
    "register_dataset",
    "table_options",
    "verify",
]
