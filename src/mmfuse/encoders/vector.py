"""Encoders for float vectors ``(b, d)`` and float token sequences ``(b, t, d)``.

Shape legend: ``b`` batch, ``t`` tokens, ``d`` input features, ``d_out`` output
features. Masks are bool, True means keep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from mmfuse.encoders._base import (
    Encoder,
    EncoderError,
    presence_of,
    register_encoder_kind,
    token_mask,
    zero_missing,
    zero_missing_tokens,
)
from mmfuse.functional import masked_mean
from mmfuse.layers import Mlp

__all__ = ["SequenceEncoder", "VectorEncoder"]


class VectorEncoder(Encoder):
    """An MLP with LayerNorm on a feature vector: ``(b, d) -> (b, d_out)``.

    Args:
        in_dim: ``d``.
        out_dim: ``d_out``.
        hidden_dims: hidden widths (default one hidden layer of ``out_dim``).
        act_layer: activation class.
        norm_layer: per-sample normalisation after each hidden linear.
        dropout: dropout after each hidden activation.
    """

    outputs_tokens = False

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = nn.LayerNorm,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        hidden = (self.out_dim,) if hidden_dims is None else tuple(hidden_dims)
        self.mlp = Mlp(self.in_dim, self.out_dim, hidden_dims=hidden, act_layer=act_layer,
                       norm_layer=norm_layer, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, d)`` and ``(b,)`` presence -> ``(b, d_out)`` and ``(b,)``."""
        if x.dim() != 2:
            raise EncoderError(f"VectorEncoder: expected input shape (b, {self.in_dim}), got {tuple(x.shape)}")
        self._check_shape(x, (self.in_dim,))
        if mask is not None and mask.dim() != 1:
            raise EncoderError(f"VectorEncoder: expected a (b,) presence mask, got shape {tuple(mask.shape)}")
        present = presence_of(mask, x)
        return self.mlp(zero_missing(x, present)), present


class SequenceEncoder(Encoder):
    """The same MLP applied to every token: ``(b, t, d) -> (b, t, d_out)``.

    With ``pool=True`` the valid tokens are averaged (masked mean) into ``(b, d_out)``.

    Args:
        in_dim: ``d``.
        out_dim: ``d_out``.
        hidden_dims: hidden widths (default one hidden layer of ``out_dim``).
        pool: return the masked mean over tokens instead of the tokens.
        act_layer: activation class.
        norm_layer: per-token normalisation after each hidden linear.
        dropout: dropout after each hidden activation.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        pool: bool = False,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = nn.LayerNorm,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.pool = bool(pool)
        self.outputs_tokens = not self.pool
        hidden = (self.out_dim,) if hidden_dims is None else tuple(hidden_dims)
        self.mlp = Mlp(self.in_dim, self.out_dim, hidden_dims=hidden, act_layer=act_layer,
                       norm_layer=norm_layer, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, t, d)`` and ``(b,)`` or ``(b, t)`` mask -> ``(b, t, d_out)`` and ``(b, t)``
        (``pool=True``: ``(b, d_out)`` and ``(b,)``)."""
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise EncoderError(f"SequenceEncoder: expected input shape (b, t, {self.in_dim}), got {tuple(x.shape)}")
        tokens = token_mask(mask, x)
        h = self.mlp(zero_missing_tokens(x, tokens))
        if self.pool:
            return masked_mean(h, tokens, dim=1), tokens.any(dim=1)
        return h, tokens


@register_encoder_kind("vector", shape="(d,)")
def _vector(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    return VectorEncoder(shape[0], out_dim, **options)


@register_encoder_kind("sequence", shape="(t, d)")
def _sequence(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    return SequenceEncoder(shape[1], out_dim, **options)
