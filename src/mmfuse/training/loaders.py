"""The DataLoaders of a fit: in-memory splits in chunks of minibatches, streamed splits.

Shape legend: none.

A single-process fit hands Lightning one chunk of up to :data:`CHUNK_STEPS`
minibatches per step (:meth:`mmfuse.training.module.FusionModule.training_step`
steps through them), so the training loader's batch is ``batch_size *``
:func:`chunk_steps`. A streamed training split (an ``IterableDataset`` of collated
batches) is read as it comes and told each epoch (:class:`StreamEpochs`). Loader
workers run one torch thread each (:func:`mmfuse.training.threads.one_thread_worker`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from mmfuse.training.metrics import BatchView, collate_batch
from mmfuse.training.threads import one_thread_worker

__all__ = ["CHUNK_BYTES", "CHUNK_STEPS", "StreamEpochs", "chunk_steps", "split_loader", "stream_loader"]


#: minibatches per Lightning training step in a single-process fit (see
#: FusionModule.training_step): at most this many, and at most CHUNK_BYTES of inputs
CHUNK_STEPS = 64
CHUNK_BYTES = 64 * 2**20


def chunk_steps(dataset: Any, batch_size: int) -> int:
    """Minibatches per chunk: :data:`CHUNK_STEPS`, fewer where a chunk's rows would
    hold more than :data:`CHUNK_BYTES` (large images or sequences), at least 1."""
    row = sum(x[0].numel() * x.element_size() for x in dataset.inputs.values()) if len(dataset) else 0
    return int(max(1, min(CHUNK_STEPS, CHUNK_BYTES // max(1, row * batch_size))))


def split_loader(dataset: Any, batch_size: int, *, shuffle: bool, num_workers: int) -> DataLoader:
    """Collated batches of an in-memory split."""
    return DataLoader(
        BatchView(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=one_thread_worker if num_workers > 0 else None,
    )


def stream_loader(stream: Any, *, num_workers: int) -> DataLoader:
    """A streamed split's batches as they come (collated by the stream, a bounded
    number in memory at a time)."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers,
                      worker_init_fn=one_thread_worker if num_workers > 0 else None)


class StreamEpochs(L.Callback):
    """Tells a streamed training split the epoch, which seeds its shuffled order."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(self.stream, "set_epoch"):
            self.stream.set_epoch(trainer.current_epoch)
