"""A text encoder that needs no download: token embeddings, an optional small
transformer, and masked mean pooling.

Shape legend: ``b`` batch, ``t`` tokens, ``e`` embedding width, ``d_out`` output
features. Masks are bool, True means keep. Token ids equal to ``pad_id`` are never
valid tokens, whatever the incoming mask says.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.encoders._base import Encoder, EncoderError, register_encoder_kind, token_mask
from mmfuse.functional import masked_mean
from mmfuse.layers import Mlp

__all__ = ["TextEncoder"]


class TextEncoder(Encoder):
    """Token ids ``(b, t)`` -> ``(b, d_out)`` (``pool=True``) or ``(b, t, d_out)``.

    Pooled output: ``Mlp(sum_j m_j E[x_j] / sum_j m_j)`` over the valid tokens ``m``
    (after the transformer layers when ``num_layers > 0``). Token output: a linear
    map of every token, with the ``(b, t)`` valid-token mask passed on.

    Args:
        vocab_size: number of token ids; ids must lie in ``[0, vocab_size)``.
        out_dim: ``d_out``.
        pad_id: the padding id.
        embed_dim: ``e`` (default ``out_dim``).
        num_layers: transformer encoder layers over the embeddings (0: bag of words).
        num_heads: attention heads of those layers (must divide ``e``).
        max_len: longest sequence, for the learned positions (needed when
            ``num_layers > 0``).
        pool: return the masked mean (True) or the tokens (False).
        dropout: dropout in the transformer and MLP.
    """

    def __init__(
        self,
        vocab_size: int,
        out_dim: int,
        *,
        pad_id: int = 0,
        embed_dim: int | None = None,
        num_layers: int = 0,
        num_heads: int = 4,
        max_len: int | None = None,
        pool: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= pad_id < vocab_size:
            raise EncoderError(f"TextEncoder: pad_id: expected an id in [0, {vocab_size}), got {pad_id!r}")
        e = int(embed_dim or out_dim)
        self.vocab_size = int(vocab_size)
        self.pad_id = int(pad_id)
        self.out_dim = int(out_dim)
        self.pool = bool(pool)
        self.outputs_tokens = not self.pool
        self.embed = nn.Embedding(self.vocab_size, e, padding_idx=self.pad_id)
        self.layers: nn.TransformerEncoder | None = None
        self.pos: nn.Parameter | None = None
        if num_layers > 0:
            if max_len is None:
                raise EncoderError("TextEncoder: max_len: expected an int when num_layers > 0, got None")
            if e % num_heads:
                raise EncoderError(f"TextEncoder: num_heads {num_heads} must divide embed_dim {e}")
            self.pos = nn.Parameter(torch.zeros(int(max_len), e))
            nn.init.normal_(self.pos, std=0.02)
            layer = nn.TransformerEncoderLayer(
                e, num_heads, dim_feedforward=2 * e, dropout=dropout, batch_first=True, norm_first=True
            )
            self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        if self.pool:
            self.proj: nn.Module = Mlp(e, self.out_dim, hidden_dims=(self.out_dim,), norm_layer=nn.LayerNorm,
                                       dropout=dropout)
        else:
            self.proj = nn.Linear(e, self.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, t)`` int ids and ``(b,)`` or ``(b, t)`` mask -> ``(b, d_out)`` and ``(b,)``
        (``pool=False``: ``(b, t, d_out)`` and ``(b, t)``)."""
        if x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise EncoderError(f"TextEncoder: expected int token ids of shape (b, t), got {x.dtype} {tuple(x.shape)}")
        tokens = token_mask(mask, x) & (x != self.pad_id)
        ids = torch.where(tokens, x, torch.full_like(x, self.pad_id))
        if not torch.compiler.is_compiling() and ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.vocab_size:
                raise EncoderError(
                    f"TextEncoder: expected token ids in [0, {self.vocab_size}), got range [{lo}, {hi}]"
                )
        h = self.embed(ids)
        if self.layers is not None:
            assert self.pos is not None
            if x.shape[1] > self.pos.shape[0]:
                raise EncoderError(f"TextEncoder: expected at most {self.pos.shape[0]} tokens, got {x.shape[1]}")
            h = h + self.pos[: x.shape[1]]
            # a row with no valid token would make attention all -inf (NaN); let it
            # attend to its first position; the row is masked out afterwards anyway
            attend = tokens.clone()
            attend[:, 0] |= ~tokens.any(dim=1)
            h = self.layers(h, src_key_padding_mask=~attend)
        if self.pool:
            return self.proj(masked_mean(h, tokens, dim=1)), tokens.any(dim=1)
        return self.proj(h), tokens


@register_encoder_kind("text", shape="(t,)")
def _text(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    if "vocab_size" not in meta:
        raise EncoderError("text modality: expected meta['vocab_size'], got none")
    options = {"max_len": shape[0], **options}
    return TextEncoder(int(meta["vocab_size"]), out_dim, pad_id=int(meta.get("pad_id", 0)), **options)
