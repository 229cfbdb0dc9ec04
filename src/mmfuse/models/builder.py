"""Build models for a dataset from names, and rebuild them from their JSON config.

Shape legend: ``b`` batch, ``d`` encoder and fused features (``hidden_dim``), ``k``
outputs (``num_classes``: classes, labels or target columns). Masks are bool, True
means keep.

Heads by task (see :data:`mmfuse.data.TASKS`): ``binary``/``multiclass`` and
``multilabel`` get an MLP with ``k`` logits. ``regression`` gets a
:class:`RegressionHead`: the same MLP, whose outputs are de-standardised with the
training split's target mean and standard deviation (buffers saved with the
weights), so the network itself works on unit-scale targets while the model predicts
in the target's own units.

``model.config`` is a JSON-serialisable dict; :func:`build_model_from_config` turns
it back into the same architecture (weights come from a checkpoint, see
:func:`mmfuse.training.load_checkpoint`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.data._base import (
    TASKS,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    classification_task,
)
from mmfuse.encoders import build_encoder
from mmfuse.errors import FusionError, check_fraction
from mmfuse.fusions._base import create_fusion
from mmfuse.layers import Mlp
from mmfuse.models.multimodal import MultimodalModel, UnimodalModel
from mmfuse.records import check_format, format_tag

__all__ = ["RegressionHead", "build_model", "build_model_from_config", "build_unimodal_model"]

CONFIG_VERSION = 1
#: ``model.config``'s record format (:mod:`mmfuse.records`; before: ``"version": 1``)
CONFIG_FORMAT = format_tag("model_config", CONFIG_VERSION)


def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    return {"kind": spec.kind, "shape": list(spec.shape), "meta": copy.deepcopy(dict(spec.meta))}


def _spec_from_json(name: str, raw: Any) -> ModalitySpec:
    """A spec from its JSON, checked: a kind, a shape of positive ints, a meta mapping."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
        raise FusionError(f"config: specs: modality {name!r}: expected {{'kind': str, 'shape': [...]}}, got {raw!r}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise FusionError(f"config: specs: modality {name!r}: shape: expected a list of positive ints, got {shape!r}")
    meta = raw.get("meta", {})
    if not isinstance(meta, Mapping):
        raise FusionError(f"config: specs: modality {name!r}: meta: expected a mapping, got {meta!r}")
    return ModalitySpec(kind=raw["kind"], shape=tuple(shape), meta=dict(meta))


class RegressionHead(Mlp):
    """An :class:`~mmfuse.layers.Mlp` whose ``(..., k)`` output is de-standardised:
    ``mlp(x) * target_std + target_mean``.

    ``target_mean`` and ``target_std`` are ``(k,)`` buffers (saved in checkpoints), by
    default the training split's statistics (a column of constant target gets std 1).
    The MLP starts near zero output, i.e. near the mean target, and its weights see
    unit-scale errors whatever the target's units.
    """

    def __init__(self, *args: Any, target_mean: Tensor | None = None, target_std: Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        k = self.out_dim
        self.register_buffer("target_mean", torch.zeros(k) if target_mean is None else target_mean.float().reshape(k))
        self.register_buffer("target_std", torch.ones(k) if target_std is None else target_std.float().reshape(k))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., k)`` in the target's units."""
        return super().forward(x) * self.target_std + self.target_mean


def target_stats(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` per column of ``(n, k)`` regression targets (std 1 where a column
    is constant or ``n < 2``)."""
    y = labels.detach().double().reshape(labels.shape[0], -1)
    mean = y.mean(0) if y.shape[0] else torch.zeros(y.shape[1], dtype=torch.float64)
    std = y.std(0, unbiased=False) if y.shape[0] > 1 else torch.ones(y.shape[1], dtype=torch.float64)
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    return mean.float(), std.float()


def _head(in_dim: int, num_classes: int, hidden_dim: int, dropout: float, task: str,
          stats: tuple[Tensor, Tensor] | None) -> Mlp:
    opts: dict[str, Any] = {"hidden_dims": (hidden_dim,), "norm_layer": nn.LayerNorm, "dropout": dropout}
    if task == "regression":
        mean, std = stats if stats is not None else (None, None)
        return RegressionHead(in_dim, num_classes, target_mean=mean, target_std=std, **opts)
    return Mlp(in_dim, num_classes, **opts)


def _source(
    source: Any, num_classes: int | None, task: str | None
) -> tuple[Mapping[str, ModalitySpec], int, str, tuple[Tensor, Tensor] | None]:
    """``(specs, num_classes, task, target stats)`` from a specs mapping, or from a
    dataset or its splits (anything with ``.specs`` and ``.num_classes``, whose class
    count, task and, for regression, training-target statistics are the defaults)."""
    if not isinstance(source, Mapping) and hasattr(source, "specs") and hasattr(source, "num_classes"):
        k = source.num_classes if num_classes is None else num_classes
        data_task = getattr(source, "task", None)
        task = task or data_task or classification_task(k)
        train = getattr(source, "train", source)
        stats = None
        if task == "regression" and data_task == "regression" and isinstance(getattr(train, "labels", None), Tensor):
            stats = target_stats(train.labels)
            if stats[0].numel() != k:
                stats = None
        return source.specs, k, task, stats
    if num_classes is None:
        raise FusionError("num_classes: expected a positive int (needed when specs is a mapping), got None")
    default = classification_task(num_classes) if isinstance(num_classes, int) else "multiclass"
    return source, num_classes, task or default, None


def _check_common(specs: Mapping[str, ModalitySpec], num_classes: int, hidden_dim: int, dropout: float,
                  task: str) -> None:
    if not isinstance(specs, Mapping) or not specs:
        raise FusionError(f"specs: expected a non-empty mapping of modality -> ModalitySpec, got {specs!r}")
    for name, spec in specs.items():
        if not isinstance(spec, ModalitySpec):
            raise FusionError(f"specs: modality {name!r}: expected a ModalitySpec, got {type(spec).__name__}")
    if task not in TASKS:
        raise FusionError(f"task: expected one of {list(TASKS)}, got {task!r}")
    low = 2 if task in ("binary", "multiclass") else 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < low:
        raise FusionError(f"num_classes: expected an int >= {low} for a {task} task, got {num_classes!r}")
    if task == "binary" and num_classes != 2:
        raise FusionError(f"num_classes: expected 2 for a binary task, got {num_classes!r}")
    if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1:
        raise FusionError(f"hidden_dim: expected a positive int, got {hidden_dim!r}")
    check_fraction("dropout", dropout, error=FusionError)


def _outputs_logits(fusion: str, input_dims: Mapping[str, int], hidden_dim: int, options: Mapping[str, Any]) -> bool:
    """Whether ``fusion`` with ``options`` outputs class logits (``outputs_logits``: a decision-level
    fusion, which then needs ``num_classes`` outputs and no head). A strategy says so once built, so
    it is asked of a copy built on the meta device: no memory, no weights drawn from the random
    generator (the real model's initial weights do not depend on this question), and a bad option
    raises here as it would below."""
    with torch.device("meta"):
        return bool(create_fusion(fusion, input_dims=input_dims, output_dim=hidden_dim, **options).outputs_logits)


def build_model(
    specs: Mapping[str, ModalitySpec] | DatasetSplits | MultimodalDataset,
    num_classes: int | None = None,
    fusion: str = "gated",
    *,
    hidden_dim: int = 64,
    fusion_options: Mapping[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    encoder_options: Mapping[str, Mapping[str, Any]] | None = None,
    dropout: float = 0.1,
    task: str | None = None,
) -> MultimodalModel:
    """Encoders for ``specs`` + the fusion named ``fusion`` + an MLP head.

    Every encoder outputs ``hidden_dim`` features and the fusion outputs
    ``hidden_dim`` too, except a decision-level fusion (``outputs_logits``), which
    outputs ``num_classes`` log-probabilities and gets no head (classification tasks
    only: class log-probabilities mean nothing for ``multilabel`` or ``regression``).

    Args:
        specs: modality -> :class:`~mmfuse.data.ModalitySpec` (e.g. ``splits.specs``),
            or the dataset itself (:class:`~mmfuse.data.DatasetSplits` or
            :class:`~mmfuse.data.MultimodalDataset`): ``build_model(splits, fusion="gated")``.
        num_classes: ``k`` model outputs (default: the dataset's, when a dataset is given).
        fusion: a name from :func:`mmfuse.list_fusions`.
        hidden_dim: ``d``.
        fusion_options: keyword options of the fusion (JSON values, if the model is
            to be saved).
        modalities: use only these modalities of ``specs`` (default all).
        encoder_options: modality -> keyword options of its encoder (e.g.
            ``{"text": {"num_layers": 1}}``).
        dropout: dropout of the head's hidden layer.
        task: one of :data:`mmfuse.data.TASKS` (default: the dataset's; for a specs
            mapping ``binary`` when ``num_classes == 2`` else ``multiclass``). A
            ``regression`` model built from a dataset de-standardises its outputs with
            the training targets' statistics (:class:`RegressionHead`); built from a
            mapping it starts at mean 0, std 1.

    Raises:
        FusionError: a bad option, or a decision-level fusion for a ``multilabel`` or
            ``regression`` task.
    """
    specs, num_classes, task, stats = _source(specs, num_classes, task)
    _check_common(specs, num_classes, hidden_dim, dropout, task)
    names = sorted(specs) if modalities is None else sorted(modalities)
    unknown = [m for m in names if m not in specs]
    if unknown or not names:
        raise FusionError(f"modalities: expected a non-empty subset of {sorted(specs)}, got {list(modalities or [])}")
    enc_opts = {m: dict(o) for m, o in (encoder_options or {}).items()}
    bad = sorted(set(enc_opts) - set(names))
    if bad:
        raise FusionError(f"encoder_options: unknown modality {bad[0]!r}: expected one of {names}")
    fopts = dict(fusion_options or {})
    encoders = {m: build_encoder(specs[m], hidden_dim, **enc_opts.get(m, {})) for m in names}
    input_dims = {m: hidden_dim for m in names}
    logits = _outputs_logits(fusion, input_dims, hidden_dim, fopts)
    if logits and task not in ("binary", "multiclass"):
        raise FusionError(
            f"fusion {fusion!r} with {fopts}: a decision-level fusion combines class "
            f"log-probabilities, expected a binary or multiclass task, got {task!r} "
            f"(use a feature-level fusion, e.g. late with level='feature')"
        )
    # built once: a decision-level fusion outputs the classes' logits itself, the others feed a head
    fuse = create_fusion(fusion, input_dims=input_dims, output_dim=num_classes if logits else hidden_dim, **fopts)
    head: nn.Module | None = None
    if not logits:
        head = _head(fuse.output_dim, num_classes, hidden_dim, dropout, task, stats)
    config = {
        "format": CONFIG_FORMAT,
        "type": "multimodal",
        "specs": {m: _spec_json(specs[m]) for m in names},
        "num_classes": num_classes,
        "task": task,
        "fusion": fusion,
        "hidden_dim": hidden_dim,
        "fusion_options": fopts,
        "encoder_options": enc_opts,
        "dropout": dropout,
    }
    return MultimodalModel(encoders, fuse, head, config=config)


def build_unimodal_model(
    specs: Mapping[str, ModalitySpec] | DatasetSplits | MultimodalDataset,
    num_classes: int | None = None,
    modality: str | None = None,
    *,
    hidden_dim: int = 64,
    encoder_options: Mapping[str, Any] | None = None,
    dropout: float = 0.1,
    task: str | None = None,
) -> UnimodalModel:
    """The single-modality baseline: the encoder :func:`build_model` would use for
    ``modality`` and the same MLP head.

    Args:
        specs: modality -> :class:`~mmfuse.data.ModalitySpec`, or the dataset itself.
        num_classes: ``k`` (default: the dataset's, when a dataset is given).
        modality: the modality to read (required).
        hidden_dim: ``d``.
        encoder_options: keyword options of the encoder.
        dropout: dropout of the head's hidden layer.
        task: as in :func:`build_model`.
    """
    specs, num_classes, task, stats = _source(specs, num_classes, task)
    if modality is None:
        raise FusionError(f"modality: expected one of {sorted(specs)}, got None")
    _check_common(specs, num_classes, hidden_dim, dropout, task)
    if modality not in specs:
        raise FusionError(f"modality: expected one of {sorted(specs)}, got {modality!r}")
    enc_opts = dict(encoder_options or {})
    encoder = build_encoder(specs[modality], hidden_dim, **enc_opts)
    head = _head(hidden_dim, num_classes, hidden_dim, dropout, task, stats)
    config = {
        "format": CONFIG_FORMAT,
        "type": "unimodal",
        "specs": {modality: _spec_json(specs[modality])},
        "num_classes": num_classes,
        "task": task,
        "modality": modality,
        "hidden_dim": hidden_dim,
        "encoder_options": enc_opts,
        "dropout": dropout,
    }
    return UnimodalModel(modality, encoder, head, config=config)


def build_model_from_config(config: Mapping[str, Any]) -> MultimodalModel | UnimodalModel:
    """Rebuild the architecture described by ``model.config`` (weights freshly initialised)."""
    if not isinstance(config, Mapping) or config.get("type") not in ("multimodal", "unimodal"):
        raise FusionError(f"config: expected a model config with type 'multimodal' or 'unimodal', got {config!r}")
    # "version": 1 is how checkpoints written before the "format" key say it
    check_format(config, "model_config", CONFIG_VERSION, legacy="version", where="model config", error=FusionError)
    required = ("specs", "num_classes", "hidden_dim", "modality" if config["type"] == "unimodal" else "fusion")
    missing = [key for key in required if key not in config]
    if missing:
        raise FusionError(f"config: expected the keys {list(required)}, missing {missing}")
    raw_specs = config["specs"]
    if not isinstance(raw_specs, Mapping) or not raw_specs:
        raise FusionError(f"config: specs: expected a non-empty mapping of modality -> spec, got {raw_specs!r}")
    specs = {m: _spec_from_json(m, s) for m, s in raw_specs.items()}
    if config["type"] == "unimodal":
        return build_unimodal_model(
            specs,
            int(config["num_classes"]),
            config["modality"],
            hidden_dim=int(config["hidden_dim"]),
            encoder_options=config.get("encoder_options") or {},
            dropout=float(config.get("dropout", 0.1)),
            task=config.get("task"),  # configs written before tasks existed: by class count
        )
    return build_model(
        specs,
        int(config["num_classes"]),
        config["fusion"],
        hidden_dim=int(config["hidden_dim"]),
        fusion_options=config.get("fusion_options") or {},
        encoder_options=config.get("encoder_options") or {},
        dropout=float(config.get("dropout", 0.1)),
        task=config.get("task"),
    )
