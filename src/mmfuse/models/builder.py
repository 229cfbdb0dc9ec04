"""Build models for a dataset from names, and rebuild them from their JSON config.

Shape legend: ``b`` batch, ``d`` encoder and fused features (``hidden_dim``), ``k``
classes. Masks are bool, True means keep.

``model.config`` is a JSON-serialisable dict; :func:`build_model_from_config` turns
it back into the same architecture (weights come from a checkpoint, see
:func:`mmfuse.training.load_checkpoint`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mmfuse.data._base import DatasetSplits, ModalitySpec, MultimodalDataset
from mmfuse.encoders import build_encoder
from mmfuse.errors import FusionError, check_fraction
from mmfuse.fusions._base import create_fusion
from mmfuse.layers import Mlp
from mmfuse.models.multimodal import MultimodalModel, UnimodalModel

__all__ = ["build_model", "build_model_from_config", "build_unimodal_model"]

CONFIG_VERSION = 1


def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    return {"kind": spec.kind, "shape": list(spec.shape), "meta": copy.deepcopy(dict(spec.meta))}


def _spec_from_json(raw: Mapping[str, Any]) -> ModalitySpec:
    return ModalitySpec(kind=raw["kind"], shape=tuple(raw["shape"]), meta=dict(raw.get("meta", {})))


def _head(in_dim: int, num_classes: int, hidden_dim: int, dropout: float) -> Mlp:
    return Mlp(in_dim, num_classes, hidden_dims=(hidden_dim,), norm_layer=nn.LayerNorm, dropout=dropout)


def _specs_and_classes(source: Any, num_classes: int | None) -> tuple[Mapping[str, ModalitySpec], int]:
    """``(specs, num_classes)`` from a specs mapping, or from a dataset or its splits
    (anything with ``.specs`` and ``.num_classes``, whose class count is the default)."""
    if not isinstance(source, Mapping) and hasattr(source, "specs") and hasattr(source, "num_classes"):
        return source.specs, source.num_classes if num_classes is None else num_classes
    if num_classes is None:
        raise FusionError("num_classes: expected an int >= 2 (needed when specs is a mapping), got None")
    return source, num_classes


def _check_common(specs: Mapping[str, ModalitySpec], num_classes: int, hidden_dim: int, dropout: float) -> None:
    if not isinstance(specs, Mapping) or not specs:
        raise FusionError(f"specs: expected a non-empty mapping of modality -> ModalitySpec, got {specs!r}")
    for name, spec in specs.items():
        if not isinstance(spec, ModalitySpec):
            raise FusionError(f"specs: modality {name!r}: expected a ModalitySpec, got {type(spec).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise FusionError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1:
        raise FusionError(f"hidden_dim: expected a positive int, got {hidden_dim!r}")
    check_fraction("dropout", dropout, error=FusionError)


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
) -> MultimodalModel:
    """Encoders for ``specs`` + the fusion named ``fusion`` + an MLP head.

    Every encoder outputs ``hidden_dim`` features and the fusion outputs
    ``hidden_dim`` too, except a decision-level fusion (``outputs_logits``), which
    outputs ``num_classes`` log-probabilities and gets no head.

    Args:
        specs: modality -> :class:`~mmfuse.data.ModalitySpec` (e.g. ``splits.specs``),
            or the dataset itself (:class:`~mmfuse.data.DatasetSplits` or
            :class:`~mmfuse.data.MultimodalDataset`): ``build_model(splits, fusion="gated")``.
        num_classes: ``k`` (default: the dataset's, when a dataset is given).
        fusion: a name from :func:`mmfuse.list_fusions`.
        hidden_dim: ``d``.
        fusion_options: keyword options of the fusion (JSON values, if the model is
            to be saved).
        modalities: use only these modalities of ``specs`` (default all).
        encoder_options: modality -> keyword options of its encoder (e.g.
            ``{"text": {"num_layers": 1}}``).
        dropout: dropout of the head's hidden layer.
    """
    specs, num_classes = _specs_and_classes(specs, num_classes)
    _check_common(specs, num_classes, hidden_dim, dropout)
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
    fuse = create_fusion(fusion, input_dims=input_dims, output_dim=hidden_dim, **fopts)
    if fuse.outputs_logits:
        fuse = create_fusion(fusion, input_dims=input_dims, output_dim=num_classes, **fopts)
        head: nn.Module | None = None
    else:
        head = _head(fuse.output_dim, num_classes, hidden_dim, dropout)
    config = {
        "type": "multimodal",
        "version": CONFIG_VERSION,
        "specs": {m: _spec_json(specs[m]) for m in names},
        "num_classes": num_classes,
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
    """
    specs, num_classes = _specs_and_classes(specs, num_classes)
    if modality is None:
        raise FusionError(f"modality: expected one of {sorted(specs)}, got None")
    _check_common(specs, num_classes, hidden_dim, dropout)
    if modality not in specs:
        raise FusionError(f"modality: expected one of {sorted(specs)}, got {modality!r}")
    enc_opts = dict(encoder_options or {})
    encoder = build_encoder(specs[modality], hidden_dim, **enc_opts)
    head = _head(hidden_dim, num_classes, hidden_dim, dropout)
    config = {
        "type": "unimodal",
        "version": CONFIG_VERSION,
        "specs": {modality: _spec_json(specs[modality])},
        "num_classes": num_classes,
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
    if config.get("version") != CONFIG_VERSION:
        raise FusionError(f"config: expected version {CONFIG_VERSION}, got {config.get('version')!r}")
    specs = {m: _spec_from_json(s) for m, s in config["specs"].items()}
    if config["type"] == "unimodal":
        return build_unimodal_model(
            specs,
            int(config["num_classes"]),
            config["modality"],
            hidden_dim=int(config["hidden_dim"]),
            encoder_options=config.get("encoder_options") or {},
            dropout=float(config.get("dropout", 0.1)),
        )
    return build_model(
        specs,
        int(config["num_classes"]),
        config["fusion"],
        hidden_dim=int(config["hidden_dim"]),
        fusion_options=config.get("fusion_options") or {},
        encoder_options=config.get("encoder_options") or {},
        dropout=float(config.get("dropout", 0.1)),
    )
