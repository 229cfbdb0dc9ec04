"""Feature-wise linear modulation (FiLM, Perez et al., 2018) between modalities.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``d_i``
input features of modality ``i``, ``k`` common width (``dim``), ``d_out`` output.

FiLM works on one vector per modality: a sequence is first reduced to the mask-aware
mean of its valid tokens (:meth:`FusionBatch.pooled`; FiLM is affine per feature, so
modulating every token and then pooling gives the same vector). Every modality is
projected to a common width ``k`` (``h_i = Linear(d_i -> k)``), a conditioner
representation ``c`` yields ``gamma(c) = W_g c + b_g`` and ``beta(c) = W_b c + b_b``
(both ``(b, k)``; ``b_g`` starts at 1 so a fresh module is close to no modulation),
and the modulated modality becomes ``gamma * h_t + beta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

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
from mmfuse.layers import ModalityDict

__all__ = ["FiLMFusion"]


def _film_layer(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.ones_(layer.bias)
    return layer


@register_fusion("film")
class FiLMFusion(Fusion):
    """Feature-wise linear modulation of one modality by the others.

    Modes:

    - ``"chain"``: an ordered chain ``c_1, c_2, ..., c_M``: ``s_1 = h_{c_1}``,
      ``s_j = gamma_j(s_{j-1}) * h_{c_j} + beta_j(s_{j-1})``; the output is
      ``Linear(s_M)``. The chain starts at ``conditioner`` (default: the first
      modality, other than ``target``, in sorted order), ends at ``target`` (default:
      the last modality in sorted order, other than ``conditioner``), and visits the
      others in sorted order in between. With two modalities this is the plain
      "conditioner modulates target".
    - ``"all_to_one"``: every other modality ``c`` modulates the target through its
      own FiLM layer; the modulations are combined as ``prod_c gamma_c`` and
      ``sum_c beta_c``: ``s = (prod_c gamma_c(h_c)) * h_t + sum_c beta_c(h_c)``
      (for a single conditioner it is the plain FiLM). ``conditioner`` must be
      ``None`` here.

    Missing modalities, per sample: a missing conditioner applies no modulation
    (``gamma = 1``, ``beta = 0``); a missing modulated modality is replaced by its
    conditioner's representation (chain: the running ``s_{j-1}`` passes through;
    all-to-one: the mean of the present conditioners' ``h_c``). A chain whose
    first links are missing starts at the first present modality.

    Intermediates: ``extras["gamma"]`` and ``extras["beta"]``, dicts keyed
    ``"conditioner->modulated"`` (chain: the link ``c_{j-1}->c_j``, whose conditioner
    is the running representation ending at ``c_{j-1}``), each ``(b, k)``, as applied
    (1 and 0 where the modulation was skipped).

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        dim: common width ``k``.
        target: the modulated modality (``None``: see modes).
        conditioner: chain head (``"chain"`` only).
        mode: ``"chain"`` or ``"all_to_one"``.
        dropout: dropout on the final representation before the output map.
    """

    min_modalities = 2

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt = 64,
        target: str | None = None,
        conditioner: str | None = None,
        mode: Literal["chain", "all_to_one"] = "chain",
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        for opt, value in (("target", target), ("conditioner", conditioner)):
            if value is not None and value not in self.modalities:
                raise FusionError(f"{self.name}: {opt}: expected one of {list(self.modalities)}, got {value!r}")
        if target is not None and target == conditioner:
            raise FusionError(f"{self.name}: conditioner: expected a modality other than target {target!r}, got {conditioner!r}")
        if mode == "all_to_one" and conditioner is not None:
            raise FusionError(
                f"{self.name}: conditioner: expected None in mode 'all_to_one' (every other modality conditions), got {conditioner!r}"
            )

        if target is None:
            target = [m for m in self.modalities if m != conditioner][-1]
        rest = [m for m in self.modalities if m not in (target, conditioner)]
        self.mode = mode
        self.dim = dim
        self.target = target
        if mode == "chain":
            self.order: tuple[str, ...] = tuple(([conditioner] if conditioner else []) + rest + [target])
            self.conditioners: tuple[str, ...] = ()
            links = [f"{a}->{b}" for a, b in zip(self.order[:-1], self.order[1:], strict=True)]
        else:
            self.order = ()
            self.conditioners = tuple(m for m in self.modalities if m != target)
            links = [f"{c}->{target}" for c in self.conditioners]
        self.links: tuple[str, ...] = tuple(links)

        self.proj = ModalityDict({m: nn.Linear(d, dim) for m, d in self.input_dims.items()})
        # ModuleList in link order: link names may hold characters ModuleDict refuses
        self.gamma = nn.ModuleList([_film_layer(dim) for _ in links])
        self.beta = nn.ModuleList([nn.Linear(dim, dim) for _ in links])
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, output_dim)

    cost_text = CostText(
        options=("dim", "mode"),
        symbols="k = dim; m - 1 FiLM links",
        params_big_o="O(m d k + m k^2 + k o)",
        flops_big_o="O(m d k + m k^2 + k o)",
        params_exact="m (d+1) k + 2 (m-1)(k+1) k + (k+1) o",
        flops_exact="2 (m d k + 2 (m-1) k^2 + k o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        k, links = cls.default("dim"), m - 1
        params = m * linear_params(d, k) + links * 2 * linear_params(k, k) + linear_params(k, output_dim)
        return Cost(params, 2 * (m * d * k + links * 2 * k * k + k * output_dim))

    def _modulation(self, j: int, cond: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """gamma, beta of link ``j`` from ``cond (b, k)``; 1 and 0 where ``active`` is False."""
        keep = active.unsqueeze(-1)
        gamma = torch.where(keep, self.gamma[j](cond), cond.new_ones(()))
        beta = torch.where(keep, self.beta[j](cond), cond.new_zeros(()))
        return gamma, beta

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; gamma/beta of every link in the intermediates."""
        h = {m: self.proj[m](batch.pooled(m)) for m in self.modalities}
        gammas: dict[str, Tensor] = {}
        betas: dict[str, Tensor] = {}
        if self.mode == "chain":
            first = self.order[0]
            state = h[first]
            valid = batch.presence(first)
            for j, mod in enumerate(self.order[1:]):
                here = batch.presence(mod)
                gamma, beta = self._modulation(j, state, valid & here)
                modulated = gamma * h[mod] + beta
                # missing link: keep the conditioner; no conditioner yet: start here
                state = torch.where(here.unsqueeze(-1), modulated, state)
                valid = valid | here
                gammas[self.links[j]], betas[self.links[j]] = gamma, beta
        else:
            target_here = batch.presence(self.target)
            gamma_all = h[self.target].new_ones(h[self.target].shape)
            beta_all = torch.zeros_like(gamma_all)
            cond_sum = torch.zeros_like(gamma_all)
            cond_count = gamma_all.new_zeros(gamma_all.shape[0], 1)
            for j, c in enumerate(self.conditioners):
                here = batch.presence(c)
                gamma, beta = self._modulation(j, h[c], here)
                gamma_all = gamma_all * gamma
                beta_all = beta_all + beta
                w = here.to(h[c].dtype).unsqueeze(-1)
                cond_sum = cond_sum + w * h[c]
                cond_count = cond_count + w
                gammas[self.links[j]], betas[self.links[j]] = gamma, beta
            modulated = gamma_all * h[self.target] + beta_all
            state = torch.where(target_here.unsqueeze(-1), modulated, cond_sum / cond_count.clamp_min(1.0))
        fused = self.out(self.drop(state))
        info = FusionIntermediates()
        if need_intermediates:
            info.extras["gamma"] = gammas
            info.extras["beta"] = betas
        return fused, info

    def extra_repr(self) -> str:
        how = " -> ".join(self.order) if self.mode == "chain" else f"{list(self.conditioners)} -> {self.target}"
        return f"{super().extra_repr()}, dim={self.dim}, mode={self.mode}, {how}"
