"""Cross-modal attention fusions: additive (``cross_attention``) and multi-head
(``multihead_cross_attention``).

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``h``
heads, ``t_q`` query tokens, ``t_k`` key tokens (the context modalities' tokens
concatenated in modality order; a vector input is one token), ``d_i`` features of
modality ``i``, ``d`` the common attention width (``dim``), ``d_a`` the hidden width
of the additive score MLP, ``d_out`` output features. Masks are bool and True means
keep (take part in attention), as in
:func:`torch.nn.functional.scaled_dot_product_attention`; the only place where the
opposite convention appears is a parity test against ``nn.MultiheadAttention``.

Every modality is first projected to the common width ``d`` by its own linear map, so
that tokens of different modalities can be compared and summed.

Additive cross-modal attention (the guide's section 4.1)::

    e_ij  = v^T tanh(W [h_i^(1), h_j^(2)] + c)          (b, t_q, t_k)
    a_ij  = softmax_j(e_ij)                              (masked keys: 0)
    h_i^(1) <- h_i^(1) + sum_j a_ij h_j^(2)              (b, t_q, d)

The score MLP ``Linear(2d -> d_a) -> tanh -> Linear(d_a -> 1)`` is never run on the
concatenated pairs: its first layer is split, ``W [h_i, h_j] = W_a h_i + W_b h_j``,
so the pair cost is one broadcast add of ``(b, t_q, 1, d_a)`` and ``(b, 1, t_k, d_a)``
instead of a ``(b, t_q, t_k, 2d)`` tensor and a matmul on it.

Multi-head cross-modal attention (section 4.2)::

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
    head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d / h)) V W_i^V

with queries from one modality and keys/values from the others, run by the fused
kernel :func:`~torch.nn.functional.scaled_dot_product_attention` unless the weights
are asked for.

Zero attention slot (``add_zero_attn``, on by default in both): one extra key and
value, both the zero vector, take part in every softmax (as ``add_zero_attn`` of
``nn.MultiheadAttention``). A query can then put weight on "nothing", and the score
parameters stay trained when the context is a single token (vector inputs): without
the slot a softmax over one key is always 1 and they would get no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    masked_mean,
    masked_softmax,
    register_fusion,
)

__all__ = [
    "DEFAULT_ADDITIVE_HIDDEN",
    "AdditiveScore",
    "CrossAttentionFusion",
    "MultiheadCrossAttention",
    "MultiheadCrossAttentionFusion",
]


#: default cap on the hidden width ``d_a`` of the additive score MLP
DEFAULT_ADDITIVE_HIDDEN = 64


# --------------------------------------------------------------------- helpers
def _check_positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FusionError(f"{owner}: {name}: expected a positive int, got {value!r}")
    return value


def _check_module_names(owner: str, modalities: tuple[str, ...]) -> None:
    for mod in modalities:
        if "." in mod:
            raise FusionError(f"{owner}: modality {mod!r}: expected a name without '.', got {mod!r}")


def _resolve_query(owner: str, query: str | None, modalities: tuple[str, ...]) -> str:
    if query is None:
        return modalities[0]
    if query not in modalities:
        raise FusionError(f"{owner}: query: expected one of {list(modalities)}, got {query!r}")
    return query


def _concat_tokens(tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor], names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """Concatenate several modalities' ``(b, t_i, d)`` tokens and ``(b, t_i)`` masks along tokens."""
    if len(names) == 1:
        return tokens[names[0]], masks[names[0]]
    return torch.cat([tokens[n] for n in names], dim=1), torch.cat([masks[n] for n in names], dim=1)


def _unpooled_output(out: nn.Linear, enriched: Tensor, q_mask: Tensor, q_present: Tensor, fallback: Tensor) -> Tensor:
    """``(b, t_q, d_out)`` for ``pool=False``: valid query tokens carry ``out(enriched)``,
    padded ones zeros, and every token of a sample whose query is missing carries
    ``out(fallback)``."""
    tokens = torch.where(q_mask.unsqueeze(-1), out(enriched), enriched.new_zeros(()))
    return torch.where(q_present[:, None, None], tokens, out(fallback).unsqueeze(1))


# ------------------------------------------------------------ additive attention
class AdditiveScore(nn.Module):
    """Additive attention scores ``e_ij = v^T tanh(W_a q_i + W_b k_j + c)``.

    This is the guide's ``MLP([q_i, k_j])`` = ``Linear(2d -> d_a) -> tanh ->
    Linear(d_a -> 1)`` with the first layer split into its query half ``W_a`` (which
    carries the bias ``c``) and key half ``W_b``: the concatenated layer is
    ``W = [W_a, W_b]``. The last layer has no bias: the softmax over keys ignores a
    constant shift, so that bias would never get a gradient.

    Args:
        dim: feature width ``d`` of queries and keys.
        hidden_dim: hidden width ``d_a``.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, hidden_dim)
        self.key = nn.Linear(dim, hidden_dim, bias=False)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """``(b, t_q, d), (b, t_k, d) -> (b, t_q, t_k)`` scores."""
        hidden = torch.tanh(self.query(query).unsqueeze(2) + self.key(keys).unsqueeze(1))
        return self.score(hidden).squeeze(-1)

    def zero_key_score(self, query: Tensor) -> Tensor:
        """``(b, t_q, d) -> (b, t_q, 1)``: the score of the zero key, ``v^T tanh(W_a q_i + c)``."""
        return self.score(torch.tanh(self.query(query)))


def additive_attend(
    scorer: AdditiveScore, query: Tensor, keys: Tensor, key_mask: Tensor, *, add_zero_attn: bool
) -> tuple[Tensor, Tensor]:
    """One additive cross-attention step.

    Args:
        scorer: the score MLP.
        query: ``(b, t_q, d)`` tokens to enrich.
        keys: ``(b, t_k, d)`` context tokens (keys and values).
        key_mask: ``(b, t_k)`` bool, True = the key takes part.
        add_zero_attn: let a zero key/value take part in the softmax.

    Returns:
        ``(b, t_q, d)`` enriched tokens ``q_i + sum_j a_ij k_j`` and the ``(b, t_q, t_k)``
        weights ``a`` (masked keys 0; a row with no valid key is all 0, so its
        token is left unchanged).
    """
    scores = scorer(query, keys)
    mask = key_mask.unsqueeze(1)
    if add_zero_attn:
        scores = torch.cat([scores, scorer.zero_key_score(query)], dim=-1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1, 1)], dim=-1)
        # the zero key has a zero value: it takes weight but adds nothing
        weights = masked_softmax(scores, mask, dim=-1)[..., :-1]
    else:
        weights = masked_softmax(scores, mask, dim=-1)
    return query + weights @ keys, weights


_ADDITIVE_MODES = ("query", "bidirectional", "all")


@register_fusion("cross_attention")
class CrossAttentionFusion(Fusion):
    """Additive cross-modal attention (guide section 4.1), see the module docstring.

    Every modality is projected to ``d`` by its own linear map. Then, by ``mode``:

    - ``"query"`` (default): the ``query`` modality's tokens attend to the
      concatenated tokens of all the other modalities (the context) and are
      enriched; the output is ``W_out`` of their mask-aware mean. For a sample whose
      query modality is missing the output falls back to ``W_out`` of the mean of
      the context tokens; for a sample whose context is all missing the attention
      adds nothing and the query carries the output alone.
    - ``"bidirectional"``: as ``"query"``, and the context tokens also attend to the
      query's tokens (with their own score MLP); the two enriched sides are pooled
      and averaged over the sides present in the sample, then ``W_out``.
    - ``"all"``: every modality attends to the concatenation of all the others'
      tokens (one score MLP per query modality); each enriched sequence is pooled
      with its mask, the pooled vectors are averaged over the present modalities,
      then ``W_out``.

    Args:
        input_dims: modality -> ``d_i`` (at least two).
        output_dim: ``d_out``.
        dim: common width ``d`` (default ``d_out``).
        hidden_dim: hidden width ``d_a`` of the score MLP (default
            ``min(d, 64)``: the MLP outputs one scalar per pair, and its
            ``(b, t_q, t_k, d_a)`` hidden tensor dominates time and memory).
        query: the query modality of ``"query"``/``"bidirectional"`` (default: the
            first of ``fusion.modalities``, i.e. the first name in sorted order).
        mode: ``"query"``, ``"bidirectional"`` or ``"all"`` (see above).
        add_zero_attn: add a zero key/value to every softmax (see the module
            docstring); ``False`` gives the guide's equations exactly.
        pool: with ``False`` (only for ``mode="query"``) return the enriched query
            tokens ``(b, t_q, d_out)`` instead of their mean: padded query tokens
            are zero, and a sample whose query is missing carries the context
            fallback at every token.

    Intermediates: ``attention["<query>-><context>"]`` ``(b, 1, t_q, t_k)`` for every
    direction (context names joined by ``+``, keys in modality order).
    """

    min_modalities = 2

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: int | None = None,
        hidden_dim: int | None = None,
        query: str | None = None,
        mode: Literal["query", "bidirectional", "all"] = "query",
        add_zero_attn: bool = True,
        pool: bool = True,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        owner = "cross_attention"
        _check_module_names(owner, self.modalities)
        if mode not in _ADDITIVE_MODES:
            raise FusionError(f"{owner}: mode: expected one of {list(_ADDITIVE_MODES)}, got {mode!r}")
        if mode == "all" and query is not None:
            raise FusionError(f"{owner}: query: expected None with mode='all' (every modality queries), got {query!r}")
        if not pool and mode != "query":
            raise FusionError(f"{owner}: pool=False: expected mode='query' (one query sequence), got mode={mode!r}")
        self.dim = _check_positive_int(owner, "dim", self.output_dim if dim is None else dim)
        if hidden_dim is None:
            hidden_dim = min(self.dim, DEFAULT_ADDITIVE_HIDDEN)
        self.hidden_dim = _check_positive_int(owner, "hidden_dim", hidden_dim)
        self.mode = mode
        self.add_zero_attn = bool(add_zero_attn)
        self.pool = bool(pool)
        self.query = _resolve_query(owner, query, self.modalities) if mode != "all" else None
        self.proj = nn.ModuleDict({m: nn.Linear(self.input_dims[m], self.dim) for m in self.modalities})
        if mode == "all":
            roles = list(self.modalities)
        else:
            assert self.query is not None
            roles = [self.query] + (["context"] if mode == "bidirectional" else [])
        self.scorers = nn.ModuleDict({r: AdditiveScore(self.dim, self.hidden_dim) for r in roles})
        self.out = nn.Linear(self.dim, self.output_dim)

    def _project(self, batch: FusionBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        tokens, masks = {}, {}
        for mod in self.modalities:
            x, mask = batch.as_sequence(mod)
            tokens[mod] = self.proj[mod](x)
            masks[mod] = mask
        return tokens, masks

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)`` (``(b, t_q, d_out)`` with ``pool=False``); intermediates:
        ``attention`` per direction, ``present``."""
        tokens, masks = self._project(batch)
        attention: dict[str, Tensor] = {}
        if self.mode == "all":
            sides = []
            for mod in self.modalities:
                others = tuple(m for m in self.modalities if m != mod)
                keys, key_mask = _concat_tokens(tokens, masks, others)
                enriched, weights = additive_attend(
                    self.scorers[mod], tokens[mod], keys, key_mask, add_zero_attn=self.add_zero_attn
                )
                sides.append(masked_mean(enriched, masks[mod], dim=1))
                attention[f"{mod}->{'+'.join(others)}"] = weights.unsqueeze(1)
            fused = self.out(masked_mean(torch.stack(sides, dim=1), batch.present, dim=1))
            return fused, FusionIntermediates(attention=attention if need_intermediates else None)

        assert self.query is not None
        query = self.query
        context = tuple(m for m in self.modalities if m != query)
        ctx_name = "+".join(context)
        keys, key_mask = _concat_tokens(tokens, masks, context)
        q, q_mask = tokens[query], masks[query]
        q_present = batch.presence(query)
        enriched, weights = additive_attend(
            self.scorers[query], q, keys, key_mask, add_zero_attn=self.add_zero_attn
        )
        attention[f"{query}->{ctx_name}"] = weights.unsqueeze(1)
        info = FusionIntermediates()
        if self.mode == "bidirectional":
            ctx_enriched, ctx_weights = additive_attend(
                self.scorers["context"], keys, q, q_mask, add_zero_attn=self.add_zero_attn
            )
            attention[f"{ctx_name}->{query}"] = ctx_weights.unsqueeze(1)
            sides = torch.stack(
                [masked_mean(enriched, q_mask, dim=1), masked_mean(ctx_enriched, key_mask, dim=1)], dim=1
            )
            side_present = torch.stack([q_present, key_mask.any(dim=1)], dim=1)
            fused = self.out(masked_mean(sides, side_present, dim=1))
        else:
            fallback = masked_mean(keys, key_mask, dim=1)
            if self.pool:
                pooled = torch.where(q_present[:, None], masked_mean(enriched, q_mask, dim=1), fallback)
                fused = self.out(pooled)
            else:
                fused = _unpooled_output(self.out, enriched, q_mask, q_present, fallback)
        if need_intermediates:
            info.attention = attention
        return fused, info

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, hidden_dim={self.hidden_dim}, mode={self.mode!r}, "
            f"query={self.query!r}, add_zero_attn={self.add_zero_attn}, pool={self.pool}"
        )


# ---------------------------------------------------------- multi-head attention
class MultiheadCrossAttention(nn.Module):
    """Multi-head attention of query tokens over context tokens with a key mask.

    ``out = Concat_h(softmax(q_h k_h^T / sqrt(d / h)) v_h) W^O + b^O`` with
    ``q = query W^Q``, ``k = context W^K``, ``v = context W^V`` (every projection
    with a bias), the same parameters and math as ``nn.MultiheadAttention``
    (``in_proj_weight = [W^Q; W^K; W^V]``). The fused kernel
    :func:`~torch.nn.functional.scaled_dot_product_attention` (boolean mask, True =
    takes part) runs unless the weights are asked for; then they are computed
    explicitly. A row with no valid key outputs zeros (no output bias either) and
    all-zero weights, never NaN.

    Args:
        dim: feature width ``d``.
        num_heads: heads ``h``; must divide ``d``.
        dropout: dropout on the attention weights (training only).
        add_zero_attn: a zero key and value take part in every softmax.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, add_zero_attn: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise FusionError(f"num_heads: expected a divisor of dim {dim}, got {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = float(dropout)
        self.add_zero_attn = bool(add_zero_attn)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        """``(b, t, d) -> (b, h, t, d / h)``."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, query: Tensor, context: Tensor, key_mask: Tensor, *, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend.

        Args:
            query: ``(b, t_q, d)``.
            context: ``(b, t_k, d)`` keys and values.
            key_mask: ``(b, t_k)`` bool, True = the key takes part.
            need_weights: also return the ``(b, h, t_q, t_k)`` weights (masked keys
                0; the zero slot's weight is not included).

        Returns:
            ``(b, t_q, d)`` and the weights or ``None``.
        """
        b, t_q, _ = query.shape
        t_k = context.shape[1]
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(context))
        v = self._heads(self.v_proj(context))
        has_key = key_mask.any(dim=1)  # (b,)
        mask = key_mask
        if self.add_zero_attn:
            zeros = k.new_zeros(b, self.num_heads, 1, self.head_dim)
            k = torch.cat([k, zeros], dim=2)
            v = torch.cat([v, zeros], dim=2)
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        p = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if need_weights:
            scores = torch.einsum("bhqc,bhkc->bhqk", q, k) / math.sqrt(self.head_dim)
            full = masked_softmax(scores, mask[:, None, None, :], dim=-1)
            attn = torch.einsum("bhqk,bhkc->bhqc", F.dropout(full, p=p, training=self.training), v)
            weights = full[..., :t_k]
        else:
            # a row with every key masked is NaN in the kernel: let it see every key
            # (finite values), its output is zeroed below
            safe = mask | ~has_key.unsqueeze(1)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :], dropout_p=p)
        out = self.out_proj(attn.transpose(1, 2).reshape(b, t_q, self.dim))
        return torch.where(has_key[:, None, None], out, out.new_zeros(())), weights


_MULTIHEAD_MODES = ("query", "all")


@register_fusion("multihead_cross_attention")
class MultiheadCrossAttentionFusion(Fusion):
    """Multi-head cross-modal attention (guide section 4.2), see the module docstring.

    Every modality is projected to ``d`` by its own linear map. Then, for each query
    modality (``mode="query"``: the ``query`` modality; ``mode="all"``: every modality
    in turn, each with its own attention block), its tokens ``x`` attend to the
    concatenated tokens ``c`` of the other modalities::

        a = MultiHead(x, c, c)                 (b, t_q, d)
        y = LN(x + a)                          (residual=True, norm=True, default)

    ``y = x + a`` with ``norm=False``, ``y = LN(a)`` / ``y = a`` with
    ``residual=False``; ``residual=False, norm=False`` leaves exactly
    ``nn.MultiheadAttention``. ``y`` is pooled by the mask-aware mean over the
    valid query tokens (``mode="all"``: then averaged over the present modalities)
    and mapped by ``W_out`` to ``d_out``.

    Missing data: masked and missing context tokens take no part in attention. A
    sample whose context is all missing gets ``a = 0`` (the query carries it); a
    sample whose query modality is missing (``mode="query"``) falls back to the
    mean of the context tokens, then ``W_out``.

    Args:
        input_dims: modality -> ``d_i`` (at least two).
        output_dim: ``d_out``.
        dim: attention width ``d``, a multiple of ``num_heads`` (default: ``d_out``
            rounded up to a multiple of ``num_heads``).
        num_heads: heads ``h``.
        query: the query modality of ``mode="query"`` (default: the first of
            ``fusion.modalities``).
        mode: ``"query"`` or ``"all"``.
        dropout: dropout on the attention weights (training only).
        residual: add the query tokens to the attention output.
        norm: LayerNorm after the (residual) sum.
        add_zero_attn: add a zero key/value to every softmax (see the module
            docstring); equals ``nn.MultiheadAttention(add_zero_attn=True)``.
        pool: with ``False`` (only for ``mode="query"``) return ``(b, t_q, d_out)``:
            ``W_out y`` at valid query tokens, zeros at padded ones, and the context
            fallback at every token of a sample whose query is missing.

    Intermediates: ``attention["<query>-><context>"]`` ``(b, h, t_q, t_k)``, computed
    explicitly (same math, no fused kernel) only when asked for.
    """

    min_modalities = 2

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: int | None = None,
        num_heads: int = 4,
        query: str | None = None,
        mode: Literal["query", "all"] = "query",
        dropout: float = 0.0,
        residual: bool = True,
        norm: bool = True,
        add_zero_attn: bool = True,
        pool: bool = True,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        owner = "multihead_cross_attention"
        _check_module_names(owner, self.modalities)
        num_heads = _check_positive_int(owner, "num_heads", num_heads)
        if dim is None:
            dim = num_heads * math.ceil(self.output_dim / num_heads)
        dim = _check_positive_int(owner, "dim", dim)
        if dim % num_heads != 0:
            raise FusionError(f"{owner}: dim: expected a multiple of num_heads={num_heads}, got {dim}")
        if mode not in _MULTIHEAD_MODES:
            raise FusionError(f"{owner}: mode: expected one of {list(_MULTIHEAD_MODES)}, got {mode!r}")
        if mode == "all" and query is not None:
            raise FusionError(f"{owner}: query: expected None with mode='all' (every modality queries), got {query!r}")
        if not pool and mode != "query":
            raise FusionError(f"{owner}: pool=False: expected mode='query' (one query sequence), got mode={mode!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise FusionError(f"{owner}: dropout: expected a float in [0, 1), got {dropout!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.mode = mode
        self.residual = bool(residual)
        self.pool = bool(pool)
        self.query = _resolve_query(owner, query, self.modalities) if mode == "query" else None
        roles = list(self.modalities) if mode == "all" else [self.query]
        self.proj = nn.ModuleDict({m: nn.Linear(self.input_dims[m], dim) for m in self.modalities})
        self.attn = nn.ModuleDict(
            {r: MultiheadCrossAttention(dim, num_heads, dropout=dropout, add_zero_attn=add_zero_attn) for r in roles}
        )
        self.norms = nn.ModuleDict({r: nn.LayerNorm(dim) for r in roles}) if norm else None
        self.out = nn.Linear(dim, self.output_dim)

    def _block(self, role: str, x: Tensor, context: Tensor, key_mask: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(b, t_q, d)`` block output ``y`` for one query modality, and its weights."""
        a, weights = self.attn[role](x, context, key_mask, need_weights=need_weights)
        y = x + a if self.residual else a
        if self.norms is not None:
            y = self.norms[role](y)
        return y, weights

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)`` (``(b, t_q, d_out)`` with ``pool=False``); intermediates:
        ``attention`` per query modality (only when asked), ``present``."""
        tokens: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        for mod in self.modalities:
            x, mask = batch.as_sequence(mod)
            tokens[mod] = self.proj[mod](x)
            masks[mod] = mask
        attention: dict[str, Tensor] = {}
        queries = self.modalities if self.mode == "all" else (self.query,)
        pooled: list[Tensor] = []
        y = context = key_mask = None
        for mod in queries:
            assert mod is not None
            others = tuple(m for m in self.modalities if m != mod)
            context, key_mask = _concat_tokens(tokens, masks, others)
            y, weights = self._block(mod, tokens[mod], context, key_mask, need_intermediates)
            if weights is not None:
                attention[f"{mod}->{'+'.join(others)}"] = weights
            pooled.append(masked_mean(y, masks[mod], dim=1))
        info = FusionIntermediates(attention=attention if need_intermediates else None)
        if self.mode == "all":
            return self.out(masked_mean(torch.stack(pooled, dim=1), batch.present, dim=1)), info
        assert self.query is not None and y is not None and context is not None and key_mask is not None
        fallback = masked_mean(context, key_mask, dim=1)
        q_present = batch.presence(self.query)
        if not self.pool:
            return _unpooled_output(self.out, y, masks[self.query], q_present, fallback), info
        return self.out(torch.where(q_present[:, None], pooled[0], fallback)), info

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, "
            f"query={self.query!r}, residual={self.residual}, norm={self.norms is not None}, pool={self.pool}"
        )
