"""Masked multi-head attention and a pre-norm transformer block, shared by the
``multihead_cross_attention``, ``bottleneck`` and ``cross_modal_transformer``
strategies, and the per-modality token projection they all start with.

Shape legend: ``b`` batch, ``h`` heads, ``t_q`` query tokens, ``t_k`` key tokens,
``d`` features (``d_h = d / h`` per head), ``d_i`` input features of modality ``i``.

Key masks are bool ``(b, t_k)`` and True means the key takes part, as in
:func:`torch.nn.functional.scaled_dot_product_attention`; ``None`` means every key
takes part (the fast path: no mask is built or applied). A query row whose keys are
all masked (a missing modality) gets a zero attention output and all-zero weights,
never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.fusions._base import FusionBatch, FusionError, masked_softmax
from mmfuse.layers import Mlp

__all__ = ["MaskedAttention", "TransformerBlock", "project_tokens"]


def project_tokens(proj: nn.ModuleDict, batch: FusionBatch) -> tuple[list[Tensor], list[Tensor]]:
    """Each modality's ``(b, t_i, d_i)`` tokens (a vector is one token) through its
    own ``proj[modality]``, and their ``(b, t_i)`` keep-masks, in ``batch.modalities``
    order."""
    tokens: list[Tensor] = []
    masks: list[Tensor] = []
    for mod in batch.modalities:
        x, mask = batch.as_sequence(mod)
        tokens.append(proj[mod](x))
        masks.append(mask)
    return tokens, masks


class MaskedAttention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens with a key mask.

    ``out = Concat_h(softmax(q_h k_h^T / sqrt(d_h)) v_h) W^O + b^O`` with
    ``q = query W^Q``, ``k = context W^K``, ``v = context W^V`` (every projection
    with a bias): the same parameters and math as ``nn.MultiheadAttention``
    (``in_proj_weight = [W^Q; W^K; W^V]``). The fused kernel
    :func:`~torch.nn.functional.scaled_dot_product_attention` (boolean mask, True =
    takes part) runs unless the weights are asked for; then they are computed
    explicitly. A row with no valid key outputs zeros (no output bias either) and
    all-zero weights, never NaN.

    Zero attention slot (``add_zero_attn``): one extra key and value, both the zero
    vector, take part in every softmax, as ``add_zero_attn`` of
    ``nn.MultiheadAttention``: with ``s_0 = q_h 0^T / sqrt(d_h) = 0``::

        a_hij = exp(s_hij) / (1 + sum_j' exp(s_hij'))    (keys)
        n_hi  = 1 / (1 + sum_j' exp(s_hij'))              (the slot; its value is 0)

    so ``sum_j a_hij + n_hi = 1`` for every query. ``forward(..., return_null=True)``
    also returns ``n`` ``(b, h, t_q)`` (0 without the slot; 1 for a row with no
    valid key, whose key weights are all 0).

    Args:
        dim: feature width ``d`` of queries, keys and output.
        num_heads: heads ``h``; must divide ``dim``.
        dropout: dropout on the attention weights (training only).
        kv_dim: feature width of ``context`` (default ``dim``).
        add_zero_attn: a zero key and value take part in every softmax.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        kv_dim: int | None = None,
        add_zero_attn: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise FusionError(f"num_heads: expected a divisor of dim {dim}, got {num_heads}")
        kv_dim = dim if kv_dim is None else kv_dim
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = float(dropout)
        self.add_zero_attn = bool(add_zero_attn)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        """``(b, t, d) -> (b, h, t, d_h)``."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        key_mask: Tensor | None,
        *,
        need_weights: bool = False,
        return_null: bool = False,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor | None]:
        """Attend.

        Args:
            query: ``(b, t_q, d)``.
            context: ``(b, t_k, d_kv)`` keys and values.
            key_mask: ``(b, t_k)`` bool, True = the key takes part; ``None``: every
                key takes part (no mask is built, and the kernel runs unmasked).
            need_weights: also return the ``(b, h, t_q, t_k)`` weights (masked keys
                0; the zero slot's weight is returned apart, see ``return_null``).
            return_null: also return the zero slot's ``(b, h, t_q)`` weight (only
                computed with ``need_weights``; ``None`` otherwise).

        Returns:
            ``(b, t_q, d)`` and the weights or ``None`` (and the slot's weight or
            ``None`` with ``return_null``).
        """
        b, t_q, _ = query.shape
        t_k = context.shape[1]
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(context))
        v = self._heads(self.v_proj(context))
        if self.add_zero_attn:
            zeros = k.new_zeros(b, self.num_heads, 1, self.head_dim)
            k = torch.cat([k, zeros], dim=2)
            v = torch.cat([v, zeros], dim=2)
        p = self.dropout if self.training else 0.0
        if key_mask is None and not need_weights:  # every key takes part: the unmasked kernel
            attn = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            out = self.out_proj(attn.transpose(1, 2).reshape(b, t_q, self.dim))
            return (out, None, None) if return_null else (out, None)
        if key_mask is None:
            key_mask = query.new_ones(b, t_k, dtype=torch.bool)
        has_key = key_mask.any(dim=1)  # (b,)
        mask = key_mask
        if self.add_zero_attn:
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        weights: Tensor | None = None
        null: Tensor | None = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            full = masked_softmax(scores, mask[:, None, None, :], dim=-1)
            attn = F.dropout(full, p=p, training=self.training) @ v
            weights = full[..., :t_k]
            if self.add_zero_attn:
                null = full[..., t_k]
            else:
                # no slot: weight 0, except a row with no valid key (all weights 0)
                null = (~has_key).to(full.dtype)[:, None, None].expand(b, self.num_heads, t_q)
        else:
            # a row with every key masked would be NaN in the kernel: let it see all
            # keys (finite values), then zero its output below
            safe = mask | ~has_key.unsqueeze(1)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :], dropout_p=p)
        out = self.out_proj(attn.transpose(1, 2).reshape(b, t_q, self.dim))
        out = torch.where(has_key[:, None, None], out, out.new_zeros(()))
        if return_null:
            return out, weights, null
        return out, weights


class TransformerBlock(nn.Module):
    """Pre-norm transformer block, self- or cross-attention.

    Self-attention (``context is None``)::

        x = x + Attn(LN_1(x), LN_1(x), mask_x)
        x = x + MLP(LN_2(x))

    Cross-attention (``cross=True``; queries from ``x``, keys/values from
    ``context``, which is normalised by its own ``LN_kv``)::

        x = x + Attn(LN_1(x), LN_kv(context), mask_context)
        x = x + MLP(LN_2(x))

    Args:
        dim: feature width ``d``.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        dropout: dropout on attention weights and in the MLP.
        cross: build the context norm for cross-attention.
        act_layer: MLP activation.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cross: bool = False,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.cross = cross
        self.norm1 = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MaskedAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim, hidden_dims=(max(1, int(dim * mlp_ratio)),), act_layer=act_layer, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor,
        context: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """One block.

        Args:
            x: ``(b, t_q, d)`` tokens to update.
            key_mask: ``(b, t_k)`` bool keep-mask of the keys: of ``x`` itself for
                self-attention, of ``context`` for cross-attention.
            context: ``(b, t_k, d)`` keys/values for a cross-attention block.
            need_weights: also return the ``(b, h, t_q, t_k)`` attention weights.

        Returns:
            ``(b, t_q, d)`` updated tokens and the weights or ``None``.
        """
        q = self.norm1(x)
        if self.cross:
            if context is None or self.norm_kv is None:
                raise ValueError("a cross-attention block needs a context")
            kv = self.norm_kv(context)
        else:
            kv = q
        a, weights = self.attn(q, kv, key_mask, need_weights=need_weights)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, weights

