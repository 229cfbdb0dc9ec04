"""Assemblies: per-modality encoders + a fusion + a classification head, and the
single-encoder baseline.

Shape legend: ``b`` batch, ``t`` tokens, ``d`` encoder features, ``d_f`` fused
features, ``k`` classes. Masks are bool, True means keep: ``(b,)`` presence or
``(b, t)`` valid tokens, as the datasets give them.

A missing modality flows through as a False ``(b,)`` mask: its encoder still runs
(on zeros: encoders zero the rows of missing samples first, so garbage or NaN
cannot leak into gradients) and the fusion ignores its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.encoders import Encoder
from mmfuse.functional import masked_mean
from mmfuse.fusions._base import Fusion, FusionError, FusionIntermediates
from mmfuse.layers import ModalityDict

__all__ = ["MultimodalModel", "UnimodalModel"]


class _Temperature:
    """The ``temperature`` buffer of a model: a scalar ``T`` (1 until calibrated, see
    :mod:`mmfuse.training.calibration`) that the output is divided by, saved with the
    weights; a checkpoint written before it existed loads with ``T = 1``."""

    def _init_temperature(self) -> None:
        self.register_buffer("temperature", torch.ones(()))  # type: ignore[attr-defined]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        state_dict.setdefault(prefix + "temperature", torch.ones_like(self.temperature))  # type: ignore[attr-defined]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


def _encode(
    encoder: nn.Module, name: str, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor | None]:
    """Run one modality's encoder; returns its features and the mask that goes with them."""
    if name not in inputs:
        raise FusionError(
            f"modality {name!r}: expected a tensor, got nothing (pass it with a False (b,) mask "
            f"to mark it missing)"
        )
    x, mask = inputs[name], masks.get(name)
    if isinstance(encoder, Encoder):
        return encoder(x, mask)
    # a plain nn.Module: features only; carry the dataset mask over where it still fits
    feats = encoder(x)
    if mask is None or mask.dim() == 1:
        return feats, mask
    if feats.dim() == 3 and feats.shape[1] == mask.shape[1]:
        return feats, mask
    return feats, mask.any(dim=1)


class MultimodalModel(_Temperature, nn.Module):
    """Encoders per modality, any registered fusion, and a head.

    Args:
        encoders: modality -> encoder. A built-in :class:`~mmfuse.encoders.Encoder`
            takes ``(x, mask)`` and returns ``(features, mask)``; any other module
            maps ``x`` to ``(b, d)`` or ``(b, t, d)`` and the dataset mask is passed on.
            The names must be the fusion's modalities.
        fusion: a :class:`~mmfuse.fusions.Fusion` (e.g. from
            :func:`~mmfuse.create_fusion`).
        head: maps the fused ``(b, d_f)`` to ``(b, k)`` logits. ``None`` means identity,
            the only choice when ``fusion.outputs_logits`` (decision-level fusion
            already returns class log-probabilities).
        config: the JSON dict that rebuilds this model (set by
            :func:`~mmfuse.models.build_model`; ``None`` for hand-assembled models,
            which then cannot be saved as a checkpoint).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: Fusion,
        head: nn.Module | None = None,
        *,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(fusion, Fusion):
            raise FusionError(f"fusion: expected a mmfuse Fusion, got {type(fusion).__name__}")
        if set(encoders) != set(fusion.modalities):
            raise FusionError(
                f"encoders: expected one per fusion modality {list(fusion.modalities)}, got {sorted(encoders)}"
            )
        if fusion.outputs_logits and head is not None and not isinstance(head, nn.Identity):
            raise FusionError(
                f"head: fusion {fusion.name or type(fusion).__name__!r} already outputs class "
                f"log-probabilities, expected no head, got {type(head).__name__}"
            )
        self.modalities: tuple[str, ...] = fusion.modalities
        # any string is a modality name: keys escaped inside, public names kept
        self.encoders = ModalityDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion
        self.head = head if head is not None else nn.Identity()
        self.config = config
        self._init_temperature()

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, FusionIntermediates]:
        """Classify one batch.

        Args:
            inputs: modality -> raw input batch (as the dataset collates it).
            masks: modality -> ``(b,)`` or ``(b, t)`` bool; absent: all present.
            return_intermediates: also return the fusion's
                :class:`~mmfuse.fusions.FusionIntermediates`.

        Returns:
            ``(b, k)`` logits (log-probabilities for decision-level fusion), divided by
            the ``temperature`` buffer (1 unless calibrated), and the intermediates
            when asked.
        """
        feats, out_masks = self.encode(inputs, masks)
        return self.classify(feats, out_masks, return_intermediates=return_intermediates)

    def encode(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Every modality's encoder output: ``(features, masks)``, modality -> ``(b, d)``
        or ``(b, t, d)``, and the ``(b,)`` or ``(b, t)`` mask that goes with it (absent
        where the encoder gives none). ``forward`` is ``classify(*encode(...))``."""
        if not isinstance(inputs, Mapping):
            raise FusionError(f"inputs: expected a mapping of modality -> tensor, got {type(inputs).__name__}")
        masks = {} if masks is None else masks
        feats: dict[str, Tensor] = {}
        out_masks: dict[str, Tensor] = {}
        for name, encoder in self.encoders.items():
            feat, mask = _encode(encoder, name, inputs, masks)
            feats[name] = feat
            if mask is not None:
                out_masks[name] = mask
        return feats, out_masks

    def classify(
        self,
        feats: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, FusionIntermediates]:
        """The fusion and the head on encoder outputs from :meth:`encode`: ``(b, k)``."""
        out_masks = {} if masks is None else masks
        if return_intermediates:
            fused, info = self.fusion(feats, out_masks, return_intermediates=True)
        else:
            fused, info = self.fusion(feats, out_masks), None
        if fused.dim() != 2:
            raise FusionError(
                f"fusion output: expected (b, d) for the head, got {tuple(fused.shape)} "
                f"(build the fusion with pooling on)"
            )
        logits = self.head(fused) / self.temperature
        return (logits, info) if return_intermediates else logits


class UnimodalModel(_Temperature, nn.Module):
    """One modality's encoder and a head: the baseline a fusion has to beat.

    Other modalities in ``inputs`` are ignored. A token output is reduced to a vector
    by the masked mean over its valid tokens.

    Args:
        modality: the modality it reads.
        encoder: that modality's encoder.
        head: maps ``(b, d)`` to ``(b, k)`` logits.
        config: the JSON dict that rebuilds this model (see :class:`MultimodalModel`).
    """

    def __init__(
        self, modality: str, encoder: nn.Module, head: nn.Module, *, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.modality = modality
        self.modalities: tuple[str, ...] = (modality,)
        self.encoder = encoder
        self.head = head
        self.config = config
        self._init_temperature()

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, None]:
        """``(b, k)`` logits from one modality (and ``None`` intermediates when asked)."""
        if not isinstance(inputs, Mapping):
            raise FusionError(f"inputs: expected a mapping of modality -> tensor, got {type(inputs).__name__}")
        feat, mask = _encode(self.encoder, self.modality, inputs, {} if masks is None else masks)
        if feat.dim() == 3:
            feat = masked_mean(feat, mask if mask is not None and mask.dim() == 2 else None, dim=1)
        logits = self.head(feat) / self.temperature
        return (logits, None) if return_intermediates else logits
