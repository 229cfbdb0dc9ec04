"""Multimodal datasets behind one interface (see :mod:`mmfuse.data._base`)."""

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

__all__ = [
    "DataError",
    "DatasetSplits",
    "ModalitySpec",
    "MultimodalDataset",
    "data_root",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
