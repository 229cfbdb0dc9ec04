"""The encoder contract: raw modality input and its mask in, features and mask out.

Shape legend (used in every docstring of ``mmfuse.encoders``):

- ``b``   batch
- ``t``   tokens (text, sequences) or frames (audio)
- ``c``, ``h``, ``w``  image channels, height, width
- ``f``   frequency bins of a spectrogram
- ``d``   input features, ``d_out`` encoder output features

Masks are bool and ``True`` means *keep*, as everywhere in mmfuse. An encoder takes
the dataset's mask of its modality, ``(b,)`` presence or ``(b, t)`` valid tokens, and
returns the mask that goes with its output: ``(b,)`` for a pooled ``(b, d_out)``
output, ``(b, t)`` for a ``(b, t, d_out)`` token output. A token mask is always
combined with presence, so a missing sample has no valid token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import FusionError

__all__ = ["Encoder", "EncoderError", "KindBuilder", "encoder_for_kind", "encoder_kinds", "presence_of",
           "register_encoder_kind", "token_mask", "zero_missing", "zero_missing_tokens"]


class EncoderError(FusionError):
    """Bad input to an encoder: names the encoder, the expected and the actual value.

    A :class:`~mmfuse.fusions.FusionError`, so one ``except FusionError`` catches every
    bad input to a model, whether its encoder or its fusion found it.
    """


class Encoder(nn.Module):
    """Base class of the built-in encoders.

    Subclasses set ``out_dim`` and ``outputs_tokens`` and implement :meth:`forward`.

    Attributes:
        out_dim: ``d_out``, the last dimension of the output.
        outputs_tokens: True when the output is ``(b, t, d_out)`` with a ``(b, t)``
            mask, False when it is ``(b, d_out)`` with a ``(b,)`` mask.
    """

    out_dim: int
    outputs_tokens: bool = False

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode one batch: ``x`` and its mask in, ``(features, mask)`` out."""
        raise NotImplementedError

    def _check_shape(self, x: Tensor, shape: tuple[int, ...]) -> None:
        if tuple(x.shape[1:]) != tuple(shape):
            raise EncoderError(
                f"{type(self).__name__}: expected input shape (b, {', '.join(map(str, shape))}), "
                f"got {tuple(x.shape)}"
            )


def presence_of(mask: Tensor | None, x: Tensor) -> Tensor:
    """``(b,)`` bool presence from a ``(b,)`` or ``(b, t)`` mask (``None``: all present)."""
    if mask is None:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if mask.dtype != torch.bool:
        raise EncoderError(f"mask: expected dtype torch.bool, got {mask.dtype}")
    if mask.dim() == 1:
        return mask
    return mask.any(dim=1)


def zero_missing(x: Tensor, present: Tensor) -> Tensor:
    """Replace the rows of missing samples by zeros, so garbage (even NaN) cannot leak."""
    keep = present.reshape(present.shape[0], *([1] * (x.dim() - 1)))
    return torch.where(keep, x, x.new_zeros(()))


def token_mask(mask: Tensor | None, x: Tensor) -> Tensor:
    """``(b, t)`` valid-token mask for ``x`` ``(b, t, ...)`` from a ``(b,)`` or ``(b, t)`` mask."""
    b, t = x.shape[0], x.shape[1]
    if mask is None:
        return torch.ones((b, t), dtype=torch.bool, device=x.device)
    if mask.dtype != torch.bool:
        raise EncoderError(f"mask: expected dtype torch.bool, got {mask.dtype}")
    if tuple(mask.shape) == (b,):
        return mask.unsqueeze(1).expand(b, t)
    if tuple(mask.shape) == (b, t):
        return mask
    raise EncoderError(f"mask: expected shape ({b},) or ({b}, {t}), got {tuple(mask.shape)}")


def zero_missing_tokens(x: Tensor, tokens: Tensor) -> Tensor:
    """Zero the masked-out tokens of ``x`` ``(b, t, ...)`` given a ``(b, t)`` mask."""
    keep = tokens.reshape(*tokens.shape, *([1] * (x.dim() - 2)))
    return torch.where(keep, x, x.new_zeros(()))


# ------------------------------------------------------------- the kinds' registry
#: ``(shape, meta, out_dim, options) -> Encoder``: the built-in encoder of one modality kind
KindBuilder = Callable[[tuple[int, ...], dict[str, Any], int, dict[str, Any]], "Encoder"]
_KINDS: dict[str, tuple[int, str, KindBuilder]] = {}


def register_encoder_kind(kind: str, *, shape: str) -> Callable[[KindBuilder], KindBuilder]:
    """Decorator: ``builder`` makes the built-in encoder of modality kind ``kind``, whose
    per-sample shape is ``shape`` (e.g. ``"(t, d)"``: its rank is checked before the builder
    runs). Adding a kind is one module with one registration, as for fusions and column kinds."""
    rank = len([p for p in shape.strip("()").split(",") if p.strip()])

    def decorator(builder: KindBuilder) -> KindBuilder:
        _KINDS[kind] = (rank, shape, builder)
        return builder

    return decorator


def encoder_kinds() -> list[str]:
    """The modality kinds that have a built-in encoder, in registration order."""
    return list(_KINDS)


def encoder_for_kind(kind: str, shape: tuple[int, ...], meta: dict[str, Any], out_dim: int,
                     options: dict[str, Any]) -> Encoder:
    """The registered builder of ``kind`` applied, the shape's rank checked first.

    Raises:
        EncoderError: an unknown kind (the message lists the kinds), a shape of another rank,
            or an option the encoder does not take.
    """
    if kind not in _KINDS:
        raise EncoderError(f"unknown modality kind {kind!r}: expected one of {', '.join(_KINDS)}")
    rank, form, builder = _KINDS[kind]
    if len(shape) != rank:
        raise EncoderError(f"{kind} modality: expected a per-sample shape {form}, got {shape}")
    try:
        return builder(shape, meta, out_dim, options)
    except TypeError as err:  # an option the class does not take
        raise EncoderError(f"{kind} encoder: {err}") from err
