"""The dataset interface shared by every multimodal dataset, and the dataset registry.

Shape legend: ``n`` samples, ``t`` tokens or frames, ``d`` features, ``h``/``w`` image
height/width. Masks are bool, True means keep (present modality, valid token).

A dataset item is a dict ``{"inputs": {modality: tensor}, "masks": {modality: bool tensor},
"label": int64 scalar}``; torch's default collate turns a list of items into a batch
of the same form with a leading ``b`` axis, which is what
:class:`mmfuse.models.MultimodalModel` takes. Every modality always has a mask:
``()`` per item (present or missing) or ``(t,)`` (valid tokens).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmfuse.errors import DataError

__all__ = [
    "DataError",
    "DatasetSplits",
    "ModalitySpec",
    "MultimodalDataset",
    "TASKS",
    "Task",
    "data_root",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

ModalityKind = Literal["vector", "sequence", "image", "audio", "text", "tabular"]
#: what the target is: one class of 2 (``binary``) or of k (``multiclass``), a 0/1 vector
#: of k labels (``multilabel``), or real values (``regression``)
Task = Literal["binary", "multiclass", "multilabel", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")


def classification_task(num_classes: int) -> Task:
    """The task of a single-label target with ``num_classes`` classes: ``binary`` for 2, else
    ``multiclass`` (the one rule wherever a task is inferred from a class count)."""
    return "binary" if int(num_classes) == 2 else "multiclass"




@dataclass(frozen=True)
class ModalitySpec:
    """What one modality of a dataset looks like, enough to pick and size an encoder.

    Attributes:
        kind: ``vector`` ``(d,)``; ``sequence`` ``(t, d)`` float tokens; ``image``
            ``(c, h, w)``; ``audio`` ``(f, t)`` spectrogram (frequency bins x frames);
            ``text`` ``(t,)`` int64 token ids; ``tabular`` ``(k,)`` float (numeric
            columns first, then categorical codes stored as floats, see ``meta``).
        shape: per-sample shape of the stored tensor.
        meta: kind-specific facts: ``text``: ``vocab_size``, ``pad_id``;
            ``tabular``: ``num_numeric``, ``cardinalities`` (list, one per categorical
            column, codes in ``[0, card)``), ``columns``.
    """

    kind: ModalityKind
    shape: tuple[int, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


class MultimodalDataset(Dataset):
    """Named modalities, masks and labels held as tensors.

    Args:
        name: dataset name (e.g. ``"mfeat"``), for reports.
        inputs: modality -> ``(n, ...)`` tensor.
        labels: the targets: ``(n,)`` int64 class indices (``binary``, ``multiclass``),
            ``(n, k)`` float 0/1 (``multilabel``), ``(n,)`` or ``(n, k)`` float
            (``regression``; a 1-d target is stored as ``(n, 1)``).
        specs: modality -> :class:`ModalitySpec`.
        num_classes: number of model outputs: classes (``binary``: 2, ``multiclass``:
            k), labels (``multilabel``: k) or target columns (``regression``).
        masks: modality -> ``(n,)`` or ``(n, t)`` bool; modalities not given are
            present everywhere.
        class_names: optional names of the classes (or labels, or target columns).
        task: see :data:`Task`; default ``binary`` for 2 classes, else ``multiclass``.
    """

    def __init__(
        self,
        name: str,
        inputs: Mapping[str, Tensor],
        labels: Tensor,
        *,
        specs: Mapping[str, ModalitySpec],
        num_classes: int,
        masks: Mapping[str, Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        task: Task | None = None,
    ) -> None:
        n = labels.shape[0]
        task = task or classification_task(num_classes)
        if task not in TASKS:
            raise DataError(f"{name}: task: expected one of {list(TASKS)}, got {task!r}")
        if task in ("binary", "multiclass"):
            if labels.dim() != 1 or labels.dtype.is_floating_point:
                raise DataError(f"{name}: {task} labels must be (n,) integer class indices, got "
                                f"{labels.dtype} {tuple(labels.shape)}")
            labels = labels.long()
        else:
            if task == "regression" and labels.dim() == 1:
                labels = labels.unsqueeze(1)
            if labels.dim() != 2 or labels.shape[1] != int(num_classes):
                raise DataError(f"{name}: {task} targets must be (n, {int(num_classes)}), got {tuple(labels.shape)}")
            labels = labels.float()
        if set(inputs) != set(specs):
            raise DataError(f"{name}: inputs {sorted(inputs)} and specs {sorted(specs)} name different modalities")
        for mod, x in inputs.items():
            if x.shape[0] != n:
                raise DataError(f"{name}: modality {mod!r} has {x.shape[0]} samples, labels have {n}")
        masks = dict(masks or {})
        for mod in inputs:
            if mod not in masks:
                masks[mod] = torch.ones(n, dtype=torch.bool)
            elif masks[mod].dtype != torch.bool or masks[mod].shape[0] != n:
                raise DataError(f"{name}: mask of {mod!r} must be bool with {n} rows")
        self.name = name
        self.modalities: tuple[str, ...] = tuple(sorted(inputs))
        self.inputs = {m: inputs[m] for m in self.modalities}
        self.masks = {m: masks[m] for m in self.modalities}
        self.labels = labels
        self.task: Task = task
        self.specs = {m: specs[m] for m in self.modalities}
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "inputs": {m: x[i] for m, x in self.inputs.items()},
            "masks": {m: k[i] for m, k in self.masks.items()},
            "label": self.labels[i],
        }

    def subset(self, indices: Tensor | Sequence[int]) -> MultimodalDataset:
        """A new dataset holding the rows ``indices`` (tensors are indexed, not copied lazily)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return MultimodalDataset(
            self.name,
            {m: x[idx] for m, x in self.inputs.items()},
            self.labels[idx],
            specs=self.specs,
            num_classes=self.num_classes,
            masks={m: k[idx] for m, k in self.masks.items()},
            class_names=self.class_names,
            task=self.task,
        )

    def class_counts(self) -> Tensor:
        if self.task == "multilabel":
            return self.labels.sum(dim=0).long()
        if self.task == "regression":
            raise DataError(f"{self.name}: a regression target has no class counts")
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}:{s.kind}{tuple(s.shape)}" for m, s in self.specs.items())
        return f"MultimodalDataset({self.name!r}, n={len(self)}, classes={self.num_classes}, {mods})"


@dataclass
class DatasetSplits:
    """Fixed train / validation / test splits of one dataset."""

    name: str
    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return self.train.specs

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.train.modalities

    @property
    def task(self) -> Task:
        return self.train.task


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where dataset files live: ``root``, else ``$MMFUSE_DATA``, else a per-user cache.

    The cache is ``$XDG_CACHE_HOME/mmfuse/data`` (``~/.cache/mmfuse/data``).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MMFUSE_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mmfuse" / "data"


_DATASETS: dict[str, Callable[..., DatasetSplits]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DatasetSplits]], Callable[..., DatasetSplits]]:
    """Decorator: register a loader ``fn(*, root=None, seed=0, **options) -> DatasetSplits``."""

    def decorator(fn: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
        _DATASETS[name] = fn
        return fn

    return decorator


def _register_builtin() -> None:
    import importlib

    from mmfuse.data import BUILTIN_LOADERS

    for module in BUILTIN_LOADERS:
        importlib.import_module(module)


def list_datasets() -> list[str]:
    _register_builtin()
    return sorted(_DATASETS)


def dataset_loader(name: str) -> Callable[..., DatasetSplits]:
    """The loader registered as ``name`` (to read its options' signature, say).

    Raises:
        DataError: no dataset of that name (the message lists them).
    """
    names = list_datasets()
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}: expected one of {names}")
    return _DATASETS[name]


def load_dataset(name: str, /, *, root: str | os.PathLike[str] | None = None, seed: int = 0, **options: Any) -> DatasetSplits:
    """Load the registered dataset ``name`` as fixed, seeded splits."""
    return dataset_loader(name)(root=root, seed=seed, **options)
