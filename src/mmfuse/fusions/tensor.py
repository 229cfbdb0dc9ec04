"""Multiplicative fusion: the full tensor product and its low-rank factorisation.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``d_i``
input features of modality ``i``, ``k_i`` width of modality ``i`` inside the product
(``dim`` when projected, ``d_i`` raw), ``r`` rank, ``d_out`` output features.

Both strategies work on one vector per modality: a sequence is first reduced to the
mask-aware mean of its valid tokens (:meth:`FusionBatch.pooled`). Each modality's
vector gets a constant 1 appended, ``z_i = [h_i; 1]`` (``k_i + 1`` entries), so the
product holds every unimodal, bimodal, ... term. A missing modality is dropped the
way the method itself allows: its factor becomes ``[0; 1]``, so only its "1" entry
takes part and the output is that of the product over the present modalities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, linear_params
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import ModalityDict, ModalityParameterDict, escape_key
from mmfuse.space import Categorical, Distribution, Float, Int

__all__ = ["LowRankFusion", "TensorFusion"]


class _ProjectedFactors(Fusion):
    """Shared front end: per-modality projection and the ``[h_i; 1]`` factors."""

    def __init__(self, *, input_dims: Mapping[str, int], output_dim: int, dim: PositiveInt | None) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        self.dim = dim
        # raw inputs when dim is None: no parameters before the product
        self.proj = ModalityDict(
            {} if dim is None else {mod: nn.Linear(d, dim) for mod, d in self.input_dims.items()}
        )
        self._proj_keys = tuple(escape_key(mod) for mod in self.modalities)  # module keys, modality order
        self.factor_dims: dict[str, int] = {
            mod: (d if dim is None else dim) + 1 for mod, d in self.input_dims.items()
        }

    def factor_vectors(self, batch: FusionBatch) -> list[Tensor]:
        """``[z_i]`` in modality order, each ``(b, k_i + 1)``; ``[0; 1]`` for a missing one."""
        out = []
        proj = self.proj._modules if self.dim is not None else None
        for mod, key, h in zip(self.modalities, self._proj_keys, batch.pooled_all(), strict=True):
            if proj is not None:
                h = proj[key](h)
            if not batch.all_present:
                h = h * batch.presence(mod).to(h.dtype).unsqueeze(-1)
            out.append(torch.cat([h, h.new_ones(h.shape[0], 1)], dim=-1))
        return out


@register_fusion("tensor")
class TensorFusion(_ProjectedFactors):
    """Tensor Fusion Network (Zadeh et al., 2017).

    ``z = vec(z_1 (x) z_2 (x) ... (x) z_M)`` with ``z_i = [h_i; 1]``, then
    ``out = W z + b``. ``h_i`` is ``Linear(d_i -> dim)`` of the (pooled) input, or the
    raw input when ``dim=None``. The product has ``prod_i (k_i + 1)`` entries: it
    grows exponentially with the number of modalities, and so do the parameters of
    the output map (``d_out * prod_i (k_i + 1)``); ``max_size`` refuses a product
    that would be too large.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        dim: per-modality width ``k`` inside the product; ``None`` uses the raw inputs.
        max_size: largest product size ``prod_i (k_i + 1)`` accepted.
        dropout: dropout on the product vector before the output map.
    """

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dim": Categorical((4, 8, 16)),
        "dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt | None = 16,
        max_size: PositiveInt = 2**20,
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim, dim=dim)
        size = math.prod(self.factor_dims.values())
        if size > max_size:
            formula = " * ".join(f"({k - 1} + 1)" for k in self.factor_dims.values())
            raise FusionError(
                f"{self.name}: product size prod_i (k_i + 1) = {formula} = {size} exceeds "
                f"max_size={max_size}; use a smaller dim, raise max_size, or use 'low_rank'"
            )
        self.product_size = size
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(size, output_dim)

    cost_text = CostText(
        options=("dim", "max_size"),
        symbols="k = dim (so m <= 4 at k = 16 within max_size)",
        params_big_o="O(m d k + (k+1)^m o)  (exponential in m)",
        flops_big_o="O(m d k + (k+1)^m o)  (exponential in m)",
        params_exact="m (d+1) k + ((k+1)^m + 1) o",
        flops_exact="2 (m d k + (k+1)^m o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        k = cls.default("dim") or d
        size = (k + 1) ** m
        if size > cls.default("max_size"):
            raise FusionError(f"{cls.name}: product size (k+1)^m = {size} exceeds max_size={cls.default('max_size')}")
        proj = m * linear_params(d, k) if cls.default("dim") else 0
        return Cost(proj + linear_params(size, output_dim), 2 * (proj and m * d * k) + 2 * size * output_dim)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; ``extras["product"]``: the ``(b, prod_i (k_i + 1))`` product vector."""
        zs = self.factor_vectors(batch)
        z = zs[0]
        for zi in zs[1:]:
            z = torch.einsum("bi,bj->bij", z, zi).reshape(z.shape[0], -1)
        fused = self.out(self.drop(z))
        info = FusionIntermediates()
        if need_intermediates:
            info.extras["product"] = z
        return fused, info

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}, product_size={self.product_size}"


@register_fusion("low_rank")
class LowRankFusion(_ProjectedFactors):
    """Low-rank Multimodal Fusion (Liu et al., 2018).

    The output map of :class:`TensorFusion` restricted to rank ``r``:
    ``W = sum_r W_1^(r) (x) ... (x) W_M^(r)``, computed without building the product:

        ``out = sum_r w_r prod_i (z_i W_i^(r)) + b``

    with ``z_i = [h_i; 1]`` and one factor ``W_i`` of shape ``(r, k_i + 1, d_out)``
    per modality (``self.factors[name]``). Cost is linear in the number of
    modalities. ``w_r`` are learned rank weights when ``rank_weights=True`` (as in
    the paper's release; they only rescale the factors), else 1.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        dim: per-modality width ``k`` before the product; ``None`` uses raw inputs.
        rank: ``r``.
        rank_weights: learn ``w_r``.
        dropout: dropout on each projected modality vector ``h_i``.
    """

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dim": Categorical((8, 16, 32)),
        "rank": Int(1, 16, log=True),
        "dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt | None = 16,
        rank: PositiveInt = 4,
        rank_weights: bool = False,
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim, dim=dim)
        self.rank = rank
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.factors = ModalityParameterDict()
        for mod, k in self.factor_dims.items():
            # std 1/sqrt(k_i + 1): each factor term z_i W_i^(r) is O(1), so their
            # product over modalities neither explodes nor vanishes with M
            self.factors[mod] = nn.Parameter(torch.randn(rank, k, output_dim) / math.sqrt(k))
        self.rank_weight = nn.Parameter(torch.full((rank,), 1.0 / rank)) if rank_weights else None
        self.bias = nn.Parameter(torch.zeros(output_dim))

    cost_text = CostText(
        options=("dim", "rank", "rank_weights"),
        symbols="k = dim, r = rank",
        params_big_o="O(m (d k + r k o))",
        flops_big_o="O(m (d k + r k o))",
        params_exact="m (d+1) k + m r (k+1) o + o",
        flops_exact="2 m (d k + r (k+1) o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        k, r, o = cls.default("dim") or d, cls.default("rank"), output_dim
        proj = m * linear_params(d, k) if cls.default("dim") else 0
        params = proj + m * r * (k + 1) * o + o + (r if cls.default("rank_weights") else 0)
        return Cost(params, 2 * ((m * d * k if proj else 0) + m * r * (k + 1) * o))

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; ``extras["rank_terms"]``: the ``(b, r, d_out)`` terms before the sum."""
        zs = self.factor_vectors(batch)
        terms = []
        for mod, z in zip(self.modalities, zs, strict=True):
            if self.drop is not None:
                z = torch.cat([self.drop(z[:, :-1]), z[:, -1:]], dim=-1)
            terms.append(torch.matmul(z, self.factors[mod]))  # (r, b, d_out), broadcast over r
        prod = terms[0]
        for term in terms[1:]:
            prod = prod * term
        if self.rank_weight is None:
            fused = prod.sum(dim=0) + self.bias
        else:
            fused = torch.einsum("rbo,r->bo", prod, self.rank_weight) + self.bias
        info = FusionIntermediates()
        if need_intermediates:
            info.extras["rank_terms"] = prod.transpose(0, 1)
        return fused, info

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}, rank={self.rank}"
