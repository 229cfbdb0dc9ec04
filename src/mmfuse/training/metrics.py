"""Evaluation of a trained model on a dataset split, optionally corrupted.

Shape legend: ``b`` batch, ``n`` samples of the split, ``k`` classes. Masks are
bool, True means keep.

Metrics depend on the dataset's task (:func:`task_metrics`): accuracy, macro-F1 and
AUROC for ``binary``/``multiclass``; micro/macro-F1 and mean average precision for
``multilabel``; RMSE, MAE and R^2 in the target's own units for ``regression``.
:func:`main_metric` names each task's headline metric and its direction. They are
computed here in a few lines of torch, each with its formula in the docstring, so
that the tests can check them against the same formulas written out by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmfuse.data._base import TASKS, MultimodalDataset
from mmfuse.errors import MmfuseError

__all__ = [
    "HIGHER_IS_BETTER",
    "BatchView",
    "average_precision",
    "binary_auroc",
    "choose_metric",
    "evaluate",
    "iter_batches",
    "main_metric",
    "majority_rate",
    "metric_names",
    "predict_logits",
    "task_metrics",
    "to_device",
]

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


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def _f1_per_column(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(tp, fp, fn, f1)`` per column of ``(n, k)`` 0/1 predictions and targets."""
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(0).double()
    fp = (pred & ~target).sum(0).double()
    fn = (~pred & target).sum(0).double()
    return tp, fp, fn, _safe_div(2 * tp, 2 * tp + fp + fn)


def _macro(f1: Tensor, tp: Tensor, fp: Tensor, fn: Tensor) -> float:
    """Mean F1 over the columns that occur (in the targets or the predictions): a
    class absent from both has no F1 and is left out."""
    seen = (tp + fp + fn) > 0
    return float(f1[seen].mean()) if bool(seen.any()) else float("nan")


def binary_auroc(scores: Tensor, target: Tensor) -> float:
    """Area under the ROC curve of ``(n,)`` scores for ``(n,)`` 0/1 targets:
    P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U
    over average ranks). NaN when only one class is present."""
    target = target.bool()
    n_pos = int(target.sum())
    n_neg = int(target.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores.double())
    return float((ranks[target].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``(n,)`` values, tied values sharing their mean rank."""
    order = torch.argsort(x, stable=True)
    xs = x[order]
    new = torch.ones_like(xs, dtype=torch.bool)
    new[1:] = xs[1:] != xs[:-1]
    group = torch.cumsum(new.long(), 0) - 1  # tie-group index of each sorted value
    pos = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    count = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, torch.ones_like(pos))
    total = torch.zeros_like(count).index_add_(0, group, pos)
    ranks = torch.empty_like(pos)
    ranks[order] = (total / count)[group]
    return ranks


def average_precision(scores: Tensor, target: Tensor) -> float:
    """Average precision of ``(n,)`` scores for ``(n,)`` 0/1 targets:
    ``sum_j (R_j - R_{j-1}) P_j`` over the distinct score thresholds, highest first
    (precision ``P_j`` and recall ``R_j`` of predicting positive at score >= threshold
    ``j``). NaN without positives."""
    target = target.bool()
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, t = scores.double()[order], target[order].double()
    tp = torch.cumsum(t, 0)
    predicted = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    last = torch.ones_like(s, dtype=torch.bool)  # the last position of each tie group
    last[:-1] = s[1:] != s[:-1]
    tp, predicted = tp[last], predicted[last]
    precision = tp / predicted
    recall = tp / n_pos
    gained = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((gained * precision).sum())


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def task_metrics(outputs: Tensor, target: Tensor, task: str) -> dict[str, float]:
    """The metrics of ``task`` for ``(n, k)`` model outputs against the dataset's targets.

    Args:
        outputs: ``(n, k)`` logits (or log-probabilities) for ``binary`` and
            ``multiclass``; ``(n, k)`` logits of each label for ``multilabel``;
            ``(n, k)`` predictions in the target's units for ``regression``.
        target: ``(n,)`` class indices, or ``(n, k)`` 0/1 labels or real targets.
        task: one of :data:`mmfuse.data.TASKS`.

    Returns:
        ``binary``/``multiclass``: ``accuracy``, ``macro_f1`` (mean F1 over the classes
        that occur in the targets or predictions) and ``auroc`` (of the positive class
        for ``binary``; for ``multiclass`` the mean one-vs-rest AUROC over the classes
        present with both outcomes). ``multilabel`` (a label is predicted when its logit
        is > 0, i.e. probability > 0.5): ``micro_f1`` (F1 of all label decisions
        pooled), ``macro_f1`` and ``map`` (mean over labels with a positive of their
        :func:`average_precision`). ``regression``: ``rmse`` and ``mae`` over every
        target value, ``r2`` = mean over target columns of ``1 - SS_res / SS_tot``.
        Always ``n``, the number of samples. A metric that is undefined on the data
        (one class only) is NaN.
    """
    outputs = outputs.detach().float().cpu()
    target = target.detach().cpu()
    n = int(target.shape[0])
    if outputs.dim() != 2 or outputs.shape[0] != n:
        raise MmfuseError(f"outputs: expected ({n}, k), got {tuple(outputs.shape)}")
    out: dict[str, float] = {}
    if task in ("binary", "multiclass"):
        k = outputs.shape[1]
        pred = outputs.argmax(dim=-1)
        target = target.long()
        onehot_t = torch.nn.functional.one_hot(target, k)
        onehot_p = torch.nn.functional.one_hot(pred, k)
        tp, fp, fn, f1 = _f1_per_column(onehot_p, onehot_t)
        out["accuracy"] = float((pred == target).double().mean())
        out["macro_f1"] = _macro(f1, tp, fp, fn)
        if k == 2:
            out["auroc"] = binary_auroc(outputs[:, 1] - outputs[:, 0], target)  # monotone in P(class 1)
        else:
            probs = torch.softmax(outputs.double(), dim=-1)
            out["auroc"] = _nanmean([binary_auroc(probs[:, c], target == c) for c in range(k)])
    elif task == "multilabel":
        pred = outputs > 0
        tp, fp, fn, f1 = _f1_per_column(pred, target > 0.5)
        tps, fps, fns = tp.sum(), fp.sum(), fn.sum()
        out["micro_f1"] = float(_safe_div(2 * tps, 2 * tps + fps + fns))
        out["macro_f1"] = _macro(f1, tp, fp, fn)
        out["map"] = _nanmean([average_precision(outputs[:, j], target[:, j] > 0.5) for j in range(outputs.shape[1])])
    elif task == "regression":
        target = target.double().reshape(n, -1)
        err = outputs.double() - target
        out["rmse"] = float(err.pow(2).mean().sqrt())
        out["mae"] = float(err.abs().mean())
        ss_res = err.pow(2).sum(0)
        ss_tot = (target - target.mean(0)).pow(2).sum(0)
        r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.full_like(ss_res, float("nan")))
        out["r2"] = _nanmean(r2.tolist())
    else:
        raise MmfuseError(f"task: expected one of {list(TASKS)}, got {task!r}")
    out["n"] = n
    return out


#: each task's headline metric and whether higher is better
MAIN_METRICS: dict[str, tuple[str, bool]] = {
    "binary": ("accuracy", True),
    "multiclass": ("accuracy", True),
    "multilabel": ("map", True),
    "regression": ("rmse", False),
}
#: every metric :func:`task_metrics` reports, and whether higher is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True, "macro_f1": True, "auroc": True, "micro_f1": True, "map": True,
    "rmse": False, "mae": False, "r2": True,
}


def main_metric(task: str) -> tuple[str, bool]:
    """``(name, higher_is_better)`` of ``task``'s headline metric: ``accuracy`` for
    ``binary``/``multiclass``, ``map`` for ``multilabel``, ``rmse`` (lower is better)
    for ``regression``."""
    if task not in MAIN_METRICS:
        raise MmfuseError(f"task: expected one of {list(TASKS)}, got {task!r}")
    return MAIN_METRICS[task]


def metric_names(task: str) -> tuple[str, ...]:
    """The metric keys :func:`evaluate` returns for ``task`` (``n`` aside)."""
    main_metric(task)  # checks the name
    return _METRIC_NAMES[task]


_METRIC_NAMES = {
    "binary": ("accuracy", "macro_f1", "auroc"),
    "multiclass": ("accuracy", "macro_f1", "auroc"),
    "multilabel": ("micro_f1", "macro_f1", "map"),
    "regression": ("rmse", "mae", "r2"),
}

#: above this share of the training rows in one class, ``auto`` ranks by macro-F1 (see :func:`choose_metric`)
IMBALANCED_MAJORITY = 0.70


def majority_rate(labels: Tensor) -> float:
    """The share of the most frequent class among ``(n,)`` class indices (the accuracy of
    always predicting that class); NaN when ``labels`` is empty."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.numel() == 0:
        return float("nan")
    return float(torch.bincount(labels).max()) / labels.numel()


def choose_metric(requested: str | None, task: str, train_labels: Tensor | None = None) -> tuple[str, bool]:
    """``(name, higher_is_better)`` of the metric that ranks models on a ``task``.

    ``requested`` is a name of :func:`metric_names` (a :class:`~mmfuse.errors.ConfigError`
    listing them otherwise), or ``"auto"``/``None``: :func:`main_metric`, except for a
    ``binary`` or ``multiclass`` task whose majority class holds more than
    :data:`IMBALANCED_MAJORITY` (70 %) of ``train_labels``, which is ranked by ``macro_f1``.
    Why macro-F1 there and not AUROC: on such a target a model that always predicts the
    majority class keeps the majority rate in accuracy (0.82 on an 82/18 target), while
    its macro-F1 is at most ``p / (1 + p)`` for ``k = 2`` (the majority class's F1
    ``2p / (1 + p)`` averaged with 0): macro-F1 scores the decisions the model makes (its
    argmax, what ``mmfuse predict`` outputs) and weighs every class equally. AUROC only
    scores how the outputs rank the samples: it is blind to a model whose decisions never
    pick the minority class, and beyond two classes it is a one-vs-rest average that needs
    every class's probability of every sample for its significance test.
    """
    from mmfuse.errors import ConfigError

    names = metric_names(task)
    if requested in (None, "auto"):
        name, higher = main_metric(task)
        if task in ("binary", "multiclass") and train_labels is not None:
            if majority_rate(train_labels) > IMBALANCED_MAJORITY:
                name, higher = "macro_f1", True
        return name, higher
    if requested not in names:
        raise ConfigError(f"metric: expected one of {[*names, 'auto']} for a {task} task, got {requested!r}")
    return requested, HIGHER_IS_BETTER[requested]


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


def evaluate(
    model: nn.Module,
    dataset: MultimodalDataset,
    *,
    corruption: Callable[[Batch], Batch] | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """The metrics of ``dataset.task`` (see :func:`task_metrics`) of ``model`` on ``dataset``.

    Args:
        model: any model called as ``model(inputs, masks)`` returning ``(b, k)``.
        dataset: the split to score.
        corruption: a callable ``batch -> batch`` applied to every batch before the
            model (e.g. :class:`mmfuse.data.transforms.MissingModality`).
        batch_size: evaluation batch size (does not change the result).

    Returns:
        e.g. ``{"accuracy", "macro_f1", "auroc", "n"}`` for a classification task,
        ``{"rmse", "mae", "r2", "n"}`` for regression.
    """
    if len(dataset) == 0:
        raise MmfuseError(f"evaluate: dataset {getattr(dataset, 'name', '')!r} is empty")
    if batch_size < 1:
        raise MmfuseError(f"evaluate: batch_size: expected a positive int, got {batch_size!r}")
    logits = predict_logits(model, dataset, corruption=corruption, batch_size=batch_size)
    return task_metrics(logits, dataset.labels, getattr(dataset, "task", "multiclass"))
