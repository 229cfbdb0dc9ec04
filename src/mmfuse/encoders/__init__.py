"""Per-modality encoders, small enough for a CPU, and :func:`build_encoder` to pick one
from a dataset's :class:`~mmfuse.data.ModalitySpec`.

Shape legend: see :mod:`mmfuse.encoders._base` (``b`` batch, ``t`` tokens/frames,
``d_out`` output features). Every encoder maps ``(x, mask)`` to ``(features, mask)``;
masks are bool, True means keep.

No encoder uses BatchNorm: every output depends on its own sample only (batch
independence is part of the fusion contract), so normalisation is LayerNorm or
GroupNorm throughout.

Pretrained encoders (:mod:`mmfuse.encoders.pretrained`) are chosen by name,
``hf:<model or local folder>`` or ``timm:<model>``: frozen ones run once over a
dataset with :func:`encode_dataset` (cached on disk, :mod:`mmfuse.encoders.cache`);
fine-tuned ones sit in the model (``build_encoder(spec, d, pretrained="hf:...")``).
"""

from __future__ import annotations

from typing import Any

from mmfuse.data._base import ModalitySpec
from mmfuse.encoders._base import (
    Encoder,
    EncoderError,
    encoder_for_kind,
    encoder_kinds,
    register_encoder_kind,
)
from mmfuse.encoders.audio import AudioEncoder
from mmfuse.encoders.cache import (
    CacheStats,
    clear_cache,
    default_cache_dir,
    encode_dataset,
    prepare_encoders,
)
from mmfuse.encoders.image import ImageEncoder
from mmfuse.encoders.pretrained import (
    EncoderSpec,
    PretrainedBackbone,
    PretrainedEncoder,
    load_backbone,
    parse_encoder,
)
from mmfuse.encoders.tabular import TabularEncoder
from mmfuse.encoders.text import TextEncoder
from mmfuse.encoders.vector import SequenceEncoder, VectorEncoder

__all__ = [
    "AudioEncoder",
    "CacheStats",
    "Encoder",
    "EncoderError",
    "EncoderSpec",
    "ImageEncoder",
    "PretrainedBackbone",
    "PretrainedEncoder",
    "SequenceEncoder",
    "TabularEncoder",
    "TextEncoder",
    "VectorEncoder",
    "build_encoder",
    "clear_cache",
    "default_cache_dir",
    "encode_dataset",
    "encoder_kinds",
    "load_backbone",
    "parse_encoder",
    "prepare_encoders",
    "register_encoder_kind",
]


def build_encoder(spec: ModalitySpec, out_dim: int, **options: Any) -> Encoder:
    """The built-in encoder for a modality of kind ``spec.kind``, sized from ``spec``.

    Args:
        spec: the modality's shape and kind-specific ``meta``.
        out_dim: ``d_out`` of the encoder.
        **options: keyword options of the chosen encoder class (e.g. ``pool=True``
            for a sequence, ``num_layers=1`` for text). ``pretrained="hf:..."`` (or
            ``"timm:..."``, with options such as ``",finetune_last=1"``) gives a
            :class:`PretrainedEncoder` instead; a text modality then needs ``vocab``
            (id -> word) in the options or in ``spec.meta``.

    The kinds are a registry (:func:`register_encoder_kind`, :func:`encoder_kinds`): each
    encoder module registers the builder of its kind.

    Raises:
        EncoderError: unknown kind, a shape or ``meta`` that does not fit the kind,
            or an option the encoder does not take.
    """
    kind, shape, meta = spec.kind, tuple(spec.shape), dict(spec.meta)
    pretrained = options.pop("pretrained", None)
    if pretrained is not None and parse_encoder(pretrained).source != "builtin":
        vocab = options.pop("vocab", None) or meta.get("vocab")
        if options:
            raise EncoderError(f"{kind} encoder {pretrained!r}: unknown options {sorted(options)}")
        return PretrainedEncoder(pretrained, kind, out_dim, vocab=vocab, pad_id=int(meta.get("pad_id", 0)),
                                 unk_id=meta.get("unk_id", 1))

    return encoder_for_kind(kind, shape, meta, out_dim, options)
