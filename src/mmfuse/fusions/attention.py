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

Additive cross-modal attention (the additive score of Bahdanau et al., 2015, "Neural Machine
Translation by Jointly Learning to Align and Translate", between modalities)::

    e_ij  = v^T tanh(W [h_i^(1), h_j^(2)] + c)          (b, t_q, t_k)
    a_ij  = softmax_j(e_ij)                              (masked keys: 0)
    h_i^(1) <- h_i^(1) + sum_j a_ij h_j^(2)              (b, t_q, d)

The score MLP ``Linear(2d -> d_a) -> tanh -> Linear(d_a -> 1)`` is never run on the
concatenated pairs: its first layer is split, ``W [h_i, h_j] = W_a h_i + W_b h_j``,
so the pair cost is one broadcast add of ``(b, t_q, 1, d_a)`` and ``(b, 1, t_k, d_a)``
instead of a ``(b, t_q, t_k, 2d)`` tensor and a matmul on it.

Multi-head cross-modal attention (Vaswani et al., 2017, "Attention Is All You Need", eq. of
MultiHead; queries from one modality, keys and values from the others)::

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
    head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d / h)) V W_i^V

with queries from one modality and keys/values from the others, run by the fused
kernel :func:`~torch.nn.functional.scaled_dot_product_attention` unless the weights
are asked for.

Zero attention slot (``add_zero_attn``, on by default in both): one extra key and
value, both the zero vector, take part in every softmax (as ``add_zero_attn`` of
``nn.MultiheadAttention``). A query can then put weight on "nothing", and the score
parameters stay trained when the context is a single token (vector inputs): without
the slot a softmax over one key is always 1 and they would get no gradient. With the
slot, for query token ``i``::

    a_ij = exp(e_ij) / (exp(e_i0) + sum_j' exp(e_ij'))     (e_i0: the zero key's score;
    n_i  = exp(e_i0) / (exp(e_i0) + sum_j' exp(e_ij'))      0 for the scaled dot product)

and ``sum_j a_ij + n_i = 1``. The intermediates return ``a`` under ``attention`` and
``n`` under ``extras["null_attention"]`` (same keys, ``(b, h, t_q)``).

Missing query (``mode="query"``): a sample whose query modality is missing gets a
stand-in query at every query position (all valid) and goes through the same
attention, (norm) and output map as any other sample, with its own context. The
stand-in differs between the two strategies because their outputs read the context
differently:

- additive (``cross_attention``): the mask-aware mean of the sample's projected
  context tokens. Here the output is ``W_out`` of ``h_i + sum_j a_ij h_j``: query and
  context tokens are summed in one space and read by one map, so a context token in
  the query's place is read the way the context itself is read (its evidence adds up).
- multi-head (``multihead_cross_attention``): it depends on what training saw
  (:mod:`mmfuse.fusions._fallback`). If training batches had rows with the query
  missing (modality dropout, missing data), the stand-in is the mask-aware mean of
  the sample's projected context tokens, a path the block and output map were fitted
  to. Otherwise it is the query modality's *average* token, ``q_fill = W_q mu_q + c_q``,
  with ``mu_q`` the running mean of the query modality's input tokens seen in training
  and ``W_q, c_q`` its projection. An untrained context-mean query would be read
  through the residual stream, whose weights were fitted to the query modality only
  (the context reaches the output through ``W^O W^V``): with or against the label by
  luck (below chance in a model trained on complete data: 0.16 on a 4-class
  synthetic task, 0.0 for the hand-set fit of ``tests/fusions/test_missing_fallback.py``).
  The average query removes the query's evidence and keeps the context's, on the
  path it was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmfuse.fusions._attention import MaskedAttention, project_tokens
from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    masked_mean,
    masked_softmax,
    register_fusion,
)
from mmfuse.fusions._checks import check_heads
from mmfuse.fusions._cost import Cost, CostText, linear_params
from mmfuse.fusions._fallback import RunningMeans
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import ModalityDict
from mmfuse.space import Categorical, Distribution, Float

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
def _check_mode(owner: str, mode: str, query: str | None, pool: bool) -> None:
    """``query`` only names a modality when one modality queries; ``pool=False`` only
    with ``mode="query"`` (one query sequence)."""
    if mode == "all" and query is not None:
        raise FusionError(f"{owner}: query: expected None with mode='all' (every modality queries), got {query!r}")
    if not pool and mode != "query":
        raise FusionError(f"{owner}: pool=False: expected mode='query' (one query sequence), got mode={mode!r}")


def _project(proj: nn.ModuleDict, batch: FusionBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Modality -> ``(b, t_i, d)`` projected tokens and modality -> ``(b, t_i)`` masks."""
    tokens, masks = project_tokens(proj, batch)
    return dict(zip(batch.modalities, tokens, strict=True)), dict(zip(batch.modalities, masks, strict=True))


def _resolve_query(owner: str, query: str | None, modalities: tuple[str, ...]) -> str:
    if query is None:
        return modalities[0]
    if query not in modalities:
        raise FusionError(f"{owner}: query: expected one of {list(modalities)}, got {query!r}")
    return query


def _project_all_valid(proj: nn.ModuleDict, batch: FusionBatch) -> dict[str, Tensor]:
    """Modality -> ``(b, t_i, d)`` projected tokens when no mask was given (every token valid)."""
    return {m: proj[m](x if x.dim() == 3 else x.unsqueeze(1)) for m, x in batch.inputs.items()}


def _concat_tokens(
    tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, names: tuple[str, ...]
) -> tuple[Tensor, Tensor | None]:
    """Concatenate several modalities' ``(b, t_i, d)`` tokens and ``(b, t_i)`` masks along
    tokens (``masks=None``: every token valid, no mask returned)."""
    if len(names) == 1:
        return tokens[names[0]], None if masks is None else masks[names[0]]
    cat = torch.cat([tokens[n] for n in names], dim=1)
    return cat, None if masks is None else torch.cat([masks[n] for n in names], dim=1)


def _query_or_context_mean(tokens: Tensor, mask: Tensor, present: Tensor, context: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The additive query's ``(b, t_q, d)`` tokens and ``(b, t_q)`` mask, where a sample
    whose query modality is missing gets the mask-aware mean of its ``(b, t_k, d)``
    context tokens at every query token, all valid (module docstring)."""
    fill = masked_mean(context, key_mask, dim=1).unsqueeze(1).expand_as(tokens)
    tokens = torch.where(present[:, None, None], tokens, fill)
    return tokens, mask | ~present[:, None]


def _fill_missing_query(
    running: RunningMeans, proj: nn.Module, batch: FusionBatch, query: str, tokens: Tensor, mask: Tensor | None,
    context: Tensor, key_mask: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Track the query modality's running input mean (training mode) and return the
    ``(b, t_q, d)`` projected query ``tokens`` and their ``(b, t_q)`` ``mask`` where a
    sample whose query is missing has its stand-in at every query token, all valid:
    the mean of its ``(b, t_k, d)`` ``context`` tokens if training saw the query
    missing, else the projected running mean ``proj(mu_q)`` (module docstring).
    Without masks (``batch.all_present``, ``mask`` ``None``) only the mean is tracked."""
    if batch.all_present or mask is None:
        running.update([batch.inputs[query]], None)
        return tokens, mask
    x, x_mask = batch.as_sequence(query)
    running.update([x], [x_mask])
    present = batch.presence(query)
    fill = running.choose(query, masked_mean(context, key_mask, dim=1).unsqueeze(1), proj(running.value(query)))
    return torch.where(present[:, None, None], tokens, fill), mask | ~present[:, None]


def _query_output(out: nn.Linear, enriched: Tensor, q_mask: Tensor | None, *, pool: bool) -> Tensor:
    """Output of ``mode="query"`` from the ``(b, t_q, d)`` enriched query tokens.

    ``pool=True``: ``(b, d_out)``, ``out`` of their mask-aware mean. ``pool=False``:
    ``(b, t_q, d_out)``, valid query tokens carry ``out(enriched)`` and padded ones
    zeros (a missing query has its stand-in at every token, all valid). ``q_mask=None``:
    every token valid.
    """
    if pool:
        return out(masked_mean(enriched, q_mask, dim=1))
    if q_mask is None:
        return out(enriched)
    return torch.where(q_mask.unsqueeze(-1), out(enriched), enriched.new_zeros(()))


# ------------------------------------------------------------ additive attention
class AdditiveScore(nn.Module):
    """Additive attention scores ``e_ij = v^T tanh(W_a q_i + W_b k_j + c)``.

    This is the score ``MLP([q_i, k_j])`` of the module's equation for ``e_ij``:
    ``Linear(2d -> d_a) -> tanh -> Linear(d_a -> 1)`` with the first layer split into its query half ``W_a`` (which
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
) -> tuple[Tensor, Tensor, Tensor]:
    """One additive cross-attention step.

    Args:
        scorer: the score MLP.
        query: ``(b, t_q, d)`` tokens to enrich.
        keys: ``(b, t_k, d)`` context tokens (keys and values).
        key_mask: ``(b, t_k)`` bool, True = the key takes part.
        add_zero_attn: let a zero key/value take part in the softmax.

    Returns:
        ``(b, t_q, d)`` enriched tokens ``q_i + sum_j a_ij k_j``, the ``(b, t_q, t_k)``
        weights ``a`` (masked keys 0; a row with no valid key is all 0, so its
        token is left unchanged) and the ``(b, t_q)`` weight of the zero slot, so
        that ``a.sum(-1) + null == 1`` (without the slot: 0, or 1 for a row with
        no valid key).
    """
    scores = scorer(query, keys)
    mask = key_mask.unsqueeze(1)
    if add_zero_attn:
        scores = torch.cat([scores, scorer.zero_key_score(query)], dim=-1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1, 1)], dim=-1)
        # the zero key has a zero value: it takes weight but adds nothing
        full = masked_softmax(scores, mask, dim=-1)
        weights, null = full[..., :-1], full[..., -1]
    else:
        weights = masked_softmax(scores, mask, dim=-1)
        no_key = ~key_mask.any(dim=1)
        null = no_key.to(weights.dtype)[:, None].expand(-1, query.shape[1])
    return query + weights @ keys, weights, null


@register_fusion("cross_attention")
class CrossAttentionFusion(Fusion):
    """Additive cross-modal attention (Bahdanau et al., 2015 scores), see the module docstring.

    Every modality is projected to ``d`` by its own linear map. Then, by ``mode``:

    - ``"query"`` (default): the ``query`` modality's tokens attend to the
      concatenated tokens of all the other modalities (the context) and are
      enriched; the output is ``W_out`` of their mask-aware mean. A sample whose
      query modality is missing uses its context's mean as the query (module
      docstring); for a sample whose context is all missing the attention adds
      nothing and the query carries the output alone.
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
            docstring); ``False`` gives the equations ``e_ij``, ``a_ij`` exactly.
        pool: with ``False`` (only for ``mode="query"``) return the enriched query
            tokens ``(b, t_q, d_out)`` instead of their mean: padded query tokens
            are zero, and a sample whose query is missing carries the
            output of the context-mean query at every token.

    Intermediates: ``attention["<query>-><context>"]`` ``(b, 1, t_q, t_k)`` for every
    direction (context names joined by ``+``, keys in modality order), and
    ``extras["null_attention"]`` with the same keys, ``(b, 1, t_q)``, the zero
    slot's weight (see the module docstring).
    """

    min_modalities = 2

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "mode": Categorical(("query", "bidirectional", "all")),
        "add_zero_attn": Categorical((True, False)),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt | None = None,
        hidden_dim: PositiveInt | None = None,
        query: str | None = None,
        mode: Literal["query", "bidirectional", "all"] = "query",
        add_zero_attn: bool = True,
        pool: bool = True,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        owner = "cross_attention"
        _check_mode(owner, mode, query, pool)
        self.dim = self.output_dim if dim is None else dim
        self.hidden_dim = min(self.dim, DEFAULT_ADDITIVE_HIDDEN) if hidden_dim is None else hidden_dim
        self.mode = mode
        self.add_zero_attn = bool(add_zero_attn)
        self.pool = bool(pool)
        self.query = _resolve_query(owner, query, self.modalities) if mode != "all" else None
        self.proj = ModalityDict({m: nn.Linear(self.input_dims[m], self.dim) for m in self.modalities})
        if mode == "all":
            roles = list(self.modalities)
        else:
            assert self.query is not None
            roles = [self.query] + (["context"] if mode == "bidirectional" else [])
        self.scorers = ModalityDict({r: AdditiveScore(self.dim, self.hidden_dim) for r in roles})
        self.out = nn.Linear(self.dim, self.output_dim)

    cost_text = CostText(
        options=("dim", "hidden_dim", "mode", "add_zero_attn"),
        symbols="k = dim (o when None), a = hidden_dim (min(k, 64) when None), T = (m-1) t context tokens",
        params_big_o="O(m d k + k a + k o)",
        flops_big_o="O(m t d k + m t k a + m t^2 a + m t^2 k)",
        params_exact="m (d+1) k + (2 k a + 2 a) + (k+1) o",
        flops_exact="2 (m t d k + 2 t k a + T k a + t T a + t a + t T k + k o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        o = output_dim
        k = cls.default("dim") or o
        a = cls.default("hidden_dim") or min(k, DEFAULT_ADDITIVE_HIDDEN)
        tk = (m - 1) * t  # context tokens
        zero = int(cls.default("add_zero_attn"))
        params = m * linear_params(d, k) + (linear_params(k, a) + k * a + a) + linear_params(k, o)
        flops = 2 * (
            m * t * d * k  # projections
            + (1 + zero) * t * k * a  # query half of the score MLP (again for the zero key)
            + tk * k * a  # key half
            + t * tk * a + zero * t * a  # score layer on every pair, and on the zero key
            + t * tk * k  # weights @ keys
            + k * o
        )
        return Cost(params, flops)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)`` (``(b, t_q, d_out)`` with ``pool=False``); intermediates:
        ``attention`` per direction, ``present``."""
        tokens, masks = _project(self.proj, batch)
        attention: dict[str, Tensor] = {}
        null: dict[str, Tensor] = {}
        if self.mode == "all":
            sides = []
            for mod in self.modalities:
                others = tuple(m for m in self.modalities if m != mod)
                keys, key_mask = _concat_tokens(tokens, masks, others)
                enriched, weights, slot = additive_attend(
                    self.scorers[mod], tokens[mod], keys, key_mask, add_zero_attn=self.add_zero_attn
                )
                sides.append(masked_mean(enriched, masks[mod], dim=1))
                attention[f"{mod}->{'+'.join(others)}"] = weights.unsqueeze(1)
                null[f"{mod}->{'+'.join(others)}"] = slot.unsqueeze(1)
            fused = self.out(masked_mean(torch.stack(sides, dim=1), batch.present, dim=1))
            return fused, self._info(attention, null, need_intermediates)

        assert self.query is not None
        query = self.query
        context = tuple(m for m in self.modalities if m != query)
        ctx_name = "+".join(context)
        keys, key_mask = _concat_tokens(tokens, masks, context)
        q_present = batch.presence(query)
        q, q_mask = _query_or_context_mean(tokens[query], masks[query], q_present, keys, key_mask)
        enriched, weights, slot = additive_attend(
            self.scorers[query], q, keys, key_mask, add_zero_attn=self.add_zero_attn
        )
        attention[f"{query}->{ctx_name}"] = weights.unsqueeze(1)
        null[f"{query}->{ctx_name}"] = slot.unsqueeze(1)
        if self.mode == "bidirectional":
            q, q_mask = tokens[query], masks[query]
            ctx_enriched, ctx_weights, ctx_slot = additive_attend(
                self.scorers["context"], keys, q, q_mask, add_zero_attn=self.add_zero_attn
            )
            attention[f"{ctx_name}->{query}"] = ctx_weights.unsqueeze(1)
            null[f"{ctx_name}->{query}"] = ctx_slot.unsqueeze(1)
            sides = torch.stack(
                [masked_mean(enriched, q_mask, dim=1), masked_mean(ctx_enriched, key_mask, dim=1)], dim=1
            )
            side_present = torch.stack([q_present, key_mask.any(dim=1)], dim=1)
            fused = self.out(masked_mean(sides, side_present, dim=1))
        else:
            fused = _query_output(self.out, enriched, q_mask, pool=self.pool)
        return fused, self._info(attention, null, need_intermediates)

    @staticmethod
    def _info(attention: dict[str, Tensor], null: dict[str, Tensor], need: bool) -> FusionIntermediates:
        if not need:
            return FusionIntermediates()
        return FusionIntermediates(attention=attention, extras={"null_attention": null})

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, hidden_dim={self.hidden_dim}, mode={self.mode!r}, "
            f"query={self.query!r}, add_zero_attn={self.add_zero_attn}, pool={self.pool}"
        )


# ---------------------------------------------------------- multi-head attention
#: the multi-head core of ``multihead_cross_attention``: the shared masked attention,
#: equal to ``nn.MultiheadAttention`` (``add_zero_attn`` included) on the same weights
MultiheadCrossAttention = MaskedAttention


@register_fusion("multihead_cross_attention")
class MultiheadCrossAttentionFusion(Fusion):
    """Multi-head cross-modal attention (Vaswani et al., 2017), see the module docstring.

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
    sample whose query modality is missing (``mode="query"``) uses its context's
    mean as the query if training saw the query missing, else the query modality's
    projected running input mean (module docstring), through the same block and ``W_out``.

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
            ``W_out y`` at valid query tokens, zeros at padded ones, and the output
            of the stand-in query at every token of a sample whose query is missing.

    Intermediates: ``attention["<query>-><context>"]`` ``(b, h, t_q, t_k)``, computed
    explicitly (same math, no fused kernel) only when asked for, and
    ``extras["null_attention"]`` with the same keys, ``(b, h, t_q)``, the zero slot's
    weight (each query's key weights plus it sum to 1).
    """

    min_modalities = 2

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "num_heads": Categorical((1, 2, 4, 8)),
        "mode": Categorical(("query", "all")),
        "dropout": Float(0.0, 0.3),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt | None = None,
        num_heads: PositiveInt = 4,
        query: str | None = None,
        mode: Literal["query", "all"] = "query",
        dropout: Rate = 0.0,
        residual: bool = True,
        norm: bool = True,
        add_zero_attn: bool = True,
        pool: bool = True,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        owner = "multihead_cross_attention"
        if dim is None:
            dim = num_heads * math.ceil(self.output_dim / num_heads)
        check_heads(owner, dim, num_heads)
        _check_mode(owner, mode, query, pool)
        self.dim = dim
        self.num_heads = num_heads
        self.mode = mode
        self.residual = bool(residual)
        self.pool = bool(pool)
        self.query = _resolve_query(owner, query, self.modalities) if mode == "query" else None
        roles = list(self.modalities) if mode == "all" else [self.query]
        self.proj = ModalityDict({m: nn.Linear(self.input_dims[m], dim) for m in self.modalities})
        self.attn = ModalityDict(
            {r: MaskedAttention(dim, num_heads, dropout=dropout, add_zero_attn=add_zero_attn) for r in roles}
        )
        self.norms = ModalityDict({r: nn.LayerNorm(dim) for r in roles}) if norm else None
        # the running input mean of the query modality: the stand-in for a missing query
        self.input_mean = RunningMeans({} if self.query is None else {self.query: self.input_dims[self.query]})
        self.out = nn.Linear(dim, self.output_dim)

    cost_text = CostText(
        options=("dim", "num_heads", "mode", "residual", "norm", "add_zero_attn"),
        symbols="k = dim (o rounded up to a multiple of num_heads when None), T = (m-1) t + 1 keys "
        "(context tokens and the zero slot)",
        params_big_o="O(m d k + k^2)",
        flops_big_o="O(m t d k + m t k^2 + m t^2 k)",
        params_exact="m (d+1) k + 4 (k+1) k + 2 k + (k+1) o",
        flops_exact="2 (m t d k + 2 t k^2 + 2 (m-1) t k^2 + 2 t T k + k o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        h, o = cls.default("num_heads"), output_dim
        k = cls.default("dim") or h * math.ceil(o / h)
        tk = (m - 1) * t + int(cls.default("add_zero_attn"))
        norm = 2 * k if cls.default("norm") else 0
        params = m * linear_params(d, k) + 4 * linear_params(k, k) + norm + linear_params(k, o)
        flops = 2 * (m * t * d * k + 2 * t * k * k + 2 * (m - 1) * t * k * k + 2 * t * tk * k + k * o)
        return Cost(params, flops)

    def _block(
        self, role: str, x: Tensor, context: Tensor, key_mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(b, t_q, d)`` block output ``y`` for one query modality, its weights and
        the zero slot's weights."""
        a, weights, null = self.attn[role](x, context, key_mask, need_weights=need_weights, return_null=True)
        y = x + a if self.residual else a
        if self.norms is not None:
            y = self.norms[role](y)
        return y, weights, null

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)`` (``(b, t_q, d_out)`` with ``pool=False``); intermediates:
        ``attention`` per query modality (only when asked), ``present``."""
        # no mask given: every token valid, so no mask is built, applied or pooled with
        masks: dict[str, Tensor] | None = None
        if batch.all_present:
            tokens = _project_all_valid(self.proj, batch)
        else:
            tokens, masks = _project(self.proj, batch)
        attention: dict[str, Tensor] = {}
        null: dict[str, Tensor] = {}
        queries = self.modalities if self.mode == "all" else (self.query,)
        pooled: list[Tensor] = []
        y = q_mask = None
        for mod in queries:
            assert mod is not None
            others = tuple(m for m in self.modalities if m != mod)
            context, key_mask = _concat_tokens(tokens, masks, others)
            x, q_mask = tokens[mod], None if masks is None else masks[mod]
            if self.mode == "query":
                x, q_mask = _fill_missing_query(
                    self.input_mean, self.proj[mod], batch, mod, x, q_mask, context, key_mask
                )
            y, weights, slot = self._block(mod, x, context, key_mask, need_intermediates)
            if weights is not None and slot is not None:
                attention[f"{mod}->{'+'.join(others)}"] = weights
                null[f"{mod}->{'+'.join(others)}"] = slot
            if self.mode == "all":  # (mode "query" pools, or not, in _query_output)
                pooled.append(masked_mean(y, q_mask, dim=1))
        info = FusionIntermediates()
        if need_intermediates:
            info = FusionIntermediates(attention=attention, extras={"null_attention": null})
        if self.mode == "all":
            present = None if masks is None else batch.present
            return self.out(masked_mean(torch.stack(pooled, dim=1), present, dim=1)), info
        assert y is not None
        return _query_output(self.out, y, q_mask, pool=self.pool), info

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, "
            f"query={self.query!r}, residual={self.residual}, norm={self.norms is not None}, pool={self.pool}"
        )
