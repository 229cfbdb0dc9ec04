"""Multimodal datasets behind one interface (see :mod:`mmfuse.data._base`).

Registered loaders: ``synthetic`` (interaction suite, generated), ``avdigits``
(MNIST image + FSDD audio), ``mfeat`` (six feature views of handwritten digits),
``reviews`` (clothing review text + tabular). :func:`from_table` takes the user's own
table (a DataFrame or a CSV/TSV/Parquet/JSON Lines file, see :mod:`mmfuse.data.table`); :class:`ParquetStream` streams a Parquet folder larger than
memory in bounded memory. :func:`download` and :func:`verify`
fetch and check the real datasets' files; :mod:`mmfuse.data.transforms` holds modality
dropout and test-time corruptions.
"""

from mmfuse.data import avdigits, mfeat, reviews, synthetic  # noqa: F401  (register the loaders)
from mmfuse.data._base import (
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    data_root,
    list_datasets,
    load_dataset,
    register_dataset,
)
from mmfuse.data._files import cache_dir, download, verify
from mmfuse.data.stream import ParquetStream, StreamStats, fit_stream_stats
from mmfuse.data.table import (
    TableReport,
    TableSource,
    describe_table,
    from_table,
    load_table,
)
from mmfuse.data.transforms import Compose, GaussianNoise, MissingModality, ModalityDropout

__all__ = [
    "Compose",
    "ParquetStream",
    "StreamStats",
    "fit_stream_stats",
    "TableReport",
    "TableSource",
    "describe_table",
    "from_table",
    "load_table",
    "DataError",
    "DatasetSplits",
    "GaussianNoise",
    "MissingModality",
    "ModalityDropout",
    "ModalitySpec",
    "MultimodalDataset",
    "cache_dir",
    "data_root",
    "download",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "verify",
]
