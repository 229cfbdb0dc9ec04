"""Evaluation of a trained model on a dataset split, optionally corrupted.

Shape legend: ``b`` batch, ``n`` samples of the split, ``k`` classes. Masks are
bool, True means keep.

Metrics come from ``torchmetrics``: accuracy, macro-F1 over the classes, and AUROC
of the positive class for binary tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmfuse.data._base import MultimodalDataset

__all__ = ["BatchView", "classification_metrics", "evaluate", "iter_batches", "main_metric", "to_device"]

Batch = dict[str, Any]


class BatchView(Dataset):
    """A :class:`MultimodalDataset` that a DataLoader reads a whole batch at a time.

    ``__getitems__`` indexes every tensor once per batch instead of building one
    dict per sample and stacking them, which is most of a small model's epoch time.
    Use with ``collate_fn=first`` (the batch is already collated).
    """

    def __init__(self, dataset: MultimodalDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Batch:
        return self.dataset[i]

    def __getitems__(self, indices: list[int]) -> Batch:
        return take(self.dataset, torch.as_tensor(indices, dtype=torch.long))


def take(dataset: MultimodalDataset, idx: Tensor | slice) -> Batch:
    """The collated batch of rows ``idx``: ``{"inputs", "masks", "label"}``."""
    return {
        "inputs": {m: x[idx] for m, x in dataset.inputs.items()},
        "masks": {m: k[idx] for m, k in dataset.masks.items()},
        "label": dataset.labels[idx],
    }


def collate_batch(batch: Batch) -> Batch:
    """``collate_fn`` for :class:`BatchView`: the batch is already collated."""
    return batch


def iter_batches(dataset: MultimodalDataset, batch_size: int) -> Iterator[Batch]:
    """Collated batches of ``dataset`` in order."""
    for start in range(0, len(dataset), batch_size):
        yield take(dataset, slice(start, start + batch_size))


def to_device(batch: Mapping[str, Any], device: torch.device) -> Batch:
    """The batch with every tensor (also inside ``inputs``/``masks``) on ``device``."""
    out: Batch = {}
    for key, val in batch.items():
        if isinstance(val, Tensor):
            out[key] = val.to(device, non_blocking=True)
        elif isinstance(val, Mapping):
            out[key] = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in val.items()}
        else:
            out[key] = val
    return out


def classification_metrics(logits: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "n"}`` (+ ``"auroc"`` when ``num_classes == 2``) of ``(n, k)``
    logits or log-probabilities against ``(n,)`` labels."""
    from torchmetrics.functional.classification import (
        binary_auroc,
        multiclass_accuracy,
        multiclass_f1_score,
    )

    logits = logits.float()
    preds = logits.argmax(dim=-1)
    out = {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "macro_f1": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
    }
    if num_classes == 2:
        if torch.unique(target).numel() < 2:
            out["auroc"] = float("nan")  # undefined with a single class present
        else:
            probs = torch.softmax(logits, dim=-1)[:, 1]
            out["auroc"] = float(binary_auroc(probs, target))
    out["n"] = int(target.shape[0])
    return out


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: MultimodalDataset,
    *,
    corruption: Callable[[Batch], Batch] | None = None,
    batch_size: int = 512,
) -> Tensor:
    """``(n, k)`` outputs of ``model`` (in eval mode) on ``dataset``, in order, on the CPU."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        outs = []
        for batch in iter_batches(dataset, batch_size):
            if corruption is not None:
                batch = corruption(batch)
            batch = to_device(batch, device)
            outs.append(model(batch["inputs"], batch["masks"]).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs)


def main_metric(task: str) -> tuple[str, bool]:
    """The main metric of ``task`` (a key of :func:`evaluate`'s result) and whether higher is better."""
    if task in ("binary", "multiclass"):
        return "accuracy", True
    raise ValueError(f"main_metric: no metric for task {task!r} yet")


def evaluate(
    model: nn.Module,
    dataset: MultimodalDataset,
    *,
    corruption: Callable[[Batch], Batch] | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Accuracy, macro-F1 (and AUROC for binary tasks) of ``model`` on ``dataset``.

    Args:
        model: any model called as ``model(inputs, masks)`` returning ``(b, k)``.
        dataset: the split to score.
        corruption: a callable ``batch -> batch`` applied to every batch before the
            model (e.g. :class:`mmfuse.data.transforms.MissingModality`).
        batch_size: evaluation batch size (does not change the result).

    Returns:
        ``{"accuracy", "macro_f1", "auroc" (binary only), "n"}``.
    """
    if len(dataset) == 0:
        raise ValueError(f"evaluate: dataset {getattr(dataset, 'name', '')!r} is empty")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size: expected a positive int, got {batch_size!r}")
    logits = predict_logits(model, dataset, corruption=corruption, batch_size=batch_size)
    return classification_metrics(logits, dataset.labels, dataset.num_classes)
