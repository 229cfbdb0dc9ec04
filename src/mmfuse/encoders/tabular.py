"""A tabular encoder: numeric columns plus embedded categorical columns, then an MLP.

Shape legend: ``b`` batch, ``k`` columns (``n`` numeric first, then one code per
categorical column, stored as floats), ``d_out`` output features. Masks are bool,
True means keep (``(b,)`` presence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.encoders._base import (
    Encoder,
    EncoderError,
    presence_of,
    register_encoder_kind,
    zero_missing,
)
from mmfuse.layers import Mlp

__all__ = ["TabularEncoder"]


class TabularEncoder(Encoder):
    """``(b, k) -> (b, d_out)``: ``Mlp(concat(x_num, E_1[c_1], ..., E_q[c_q]))``.

    Numeric columns are taken as they are (the datasets normalise them); categorical
    codes must be integers in ``[0, cardinality)``.

    Args:
        num_numeric: ``n``.
        cardinalities: number of categories of each categorical column.
        out_dim: ``d_out``.
        embed_dims: embedding width of each categorical column (default
            ``min(16, (card + 1) // 2)``, at least 2).
        hidden_dims: hidden widths of the MLP (default one hidden layer of ``out_dim``).
        act_layer: activation class.
        dropout: dropout of the MLP.
    """

    outputs_tokens = False

    def __init__(
        self,
        num_numeric: int,
        cardinalities: Sequence[int],
        out_dim: int,
        *,
        embed_dims: Sequence[int] | None = None,
        hidden_dims: Sequence[int] | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if num_numeric < 0 or any(c < 1 for c in cards) or num_numeric + len(cards) == 0:
            raise EncoderError(
                f"TabularEncoder: expected num_numeric >= 0 and cardinalities >= 1 with at least one "
                f"column, got num_numeric={num_numeric!r}, cardinalities={cards}"
            )
        dims = [max(2, min(16, (c + 1) // 2)) for c in cards] if embed_dims is None else list(embed_dims)
        if len(dims) != len(cards):
            raise EncoderError(f"TabularEncoder: expected {len(cards)} embed_dims, got {len(dims)}")
        self.num_numeric = int(num_numeric)
        self.cardinalities = cards
        self.out_dim = int(out_dim)
        self.embeds = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(cards, dims, strict=True))
        self.register_buffer("_cards", torch.tensor(cards, dtype=torch.long), persistent=False)
        hidden = (self.out_dim,) if hidden_dims is None else tuple(hidden_dims)
        self.mlp = Mlp(self.num_numeric + sum(dims), self.out_dim, hidden_dims=hidden, act_layer=act_layer,
                       norm_layer=nn.LayerNorm, dropout=dropout)

    @property
    def num_columns(self) -> int:
        return self.num_numeric + len(self.cardinalities)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, k)`` and ``(b,)`` presence -> ``(b, d_out)`` and ``(b,)``."""
        if x.dim() != 2 or x.shape[1] != self.num_columns:
            raise EncoderError(f"TabularEncoder: expected input shape (b, {self.num_columns}), got {tuple(x.shape)}")
        if mask is not None and mask.dim() != 1:
            raise EncoderError(f"TabularEncoder: expected a (b,) presence mask, got shape {tuple(mask.shape)}")
        present = presence_of(mask, x)
        x = zero_missing(x, present)
        numeric = x[:, : self.num_numeric].float()
        codes = x[:, self.num_numeric :].round().long()
        if not torch.compiler.is_compiling() and codes.numel():
            bad = (codes < 0) | (codes >= self._cards)
            if bool(bad.any()):
                row, col = (int(v) for v in bad.nonzero()[0])
                raise EncoderError(
                    f"TabularEncoder: categorical column {col}: expected a code in "
                    f"[0, {self.cardinalities[col]}), got {float(x[row, self.num_numeric + col])} (row {row})"
                )
        parts = [numeric] + [emb(codes[:, j]) for j, emb in enumerate(self.embeds)]
        return self.mlp(torch.cat(parts, dim=-1)), present


@register_encoder_kind("tabular", shape="(k,)")
def _tabular(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    cards = list(meta.get("cardinalities", []))
    num_numeric = int(meta.get("num_numeric", shape[0] - len(cards)))
    if num_numeric + len(cards) != shape[0]:
        raise EncoderError(
            f"tabular modality: meta says {num_numeric} numeric + {len(cards)} categorical "
            f"columns, but the shape is {shape}"
        )
    return TabularEncoder(num_numeric, cards, out_dim, **options)
