"""Feature-wise linear modulation (FiLM, Perez et al., 2018) between modalities.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``d_i``
input features of modality ``i``, ``k`` common width (``dim``), ``d_out`` output.

FiLM works on one vector per modality: a sequence is first reduced to the mask-aware
mean of its valid tokens (:meth:`FusionBatch.pooled`; FiLM is affine per feature, so
modulating every token and then pooling gives the same vector). Every modality is
projected to a common width ``k`` (``h_i = Linear(d_i -> k)``), a conditioner
representation ``c`` yields ``gamma(c) = W_g c + b_g`` and ``beta(c) = W_b c + b_b``
(both ``(b, k)``), and the modulated modality becomes ``gamma * h_t + beta``. At
initialisation ``b_g = 1``, ``b_b = 0`` and the entries of ``W_g``, ``W_b`` are
``N(0, (0.1 / sqrt(k))^2)``: each entry of ``gamma - 1`` and of ``beta`` then has a
std of ``0.1 * rms(c)``, so a fresh module is within about 10% of no modulation for
a unit-scale conditioner, while the conditioner still gets a gradient from the first
step (exactly zero weights would cut it off).

Missing modalities: a missing modality's projection ``h_m`` is replaced, per
sample, by a stand-in, and every link is then applied as usual, so the output map
always sees a modulated representation of the kind it is trained on. The stand-in
depends on what training saw (:mod:`mmfuse.fusions._fallback`): if training batches
had rows with ``m`` missing (modality dropout, missing data), the mean of the present
modalities' projections, a stand-in the links after it were fitted to; otherwise the
projection of ``m``'s running input mean, ``h_m = W_m mu_m + c_m`` (``mu_m``: the mean
of its pooled inputs over the present samples seen in training, tracked like
``BatchNorm``'s running mean). An untrained stand-in made of other modalities'
projections is read through a FiLM layer fitted to ``m`` alone, by luck with or
against the label (0.0 for the hand-set fit of
``tests/fusions/test_missing_fallback.py``); the average conditioner keeps the other
modalities' evidence on the path it was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    masked_mean,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, linear_params
from mmfuse.fusions._fallback import RunningMeans
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import ModalityDict
from mmfuse.space import Categorical, Distribution, Float

__all__ = ["FiLMFusion"]


def _film_layer(dim: int, bias: float = 1.0) -> nn.Linear:
    """``gamma`` (``bias=1``) or ``beta`` (``bias=0``) layer with small weights, so that a
    fresh module is close to no modulation (module docstring)."""
    layer = nn.Linear(dim, dim)
    nn.init.normal_(layer.weight, std=0.1 / math.sqrt(dim))
    nn.init.constant_(layer.bias, bias)
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

    Missing modalities, per sample: a missing modality's ``h`` is the mean of the
    present ones' ``h`` if training saw it missing, else the projection of its running
    input mean (module docstring); every link is applied.

    Intermediates: ``extras["gamma"]`` and ``extras["beta"]``, dicts keyed
    ``"conditioner->modulated"`` (chain: the link ``c_{j-1}->c_j``, whose conditioner
    is the running representation ending at ``c_{j-1}``), each ``(b, k)``, as applied.

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

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dim": Categorical((32, 64, 128)),
        "mode": Categorical(("chain", "all_to_one")),
        "dropout": Float(0.0, 0.5),
    }

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
        # each modality's running input mean: the stand-in for it when it is missing
        self.input_mean = RunningMeans({m: self.input_dims[m] for m in self.modalities})
        # ModuleList in link order: link names may hold characters ModuleDict refuses
        self.gamma = nn.ModuleList([_film_layer(dim) for _ in links])
        self.beta = nn.ModuleList([_film_layer(dim, bias=0.0) for _ in links])
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(dim, output_dim)
        self._dropout = dropout > 0
        # chain mode: the first modality's index, then per link its key in gamma/beta
        # and the modulated modality's index (plain ints and strings, read per call)
        self._chain_plan: tuple[int, tuple[tuple[str, int], ...]] | None = None
        if mode == "chain":
            index = {m: i for i, m in enumerate(self.modalities)}
            self._chain_plan = (index[self.order[0]], tuple((str(j), index[m]) for j, m in enumerate(self.order[1:])))

    @property
    def _proj_modules(self) -> list[nn.Module]:
        """The projections in modality order (read from the ModuleDict by its stored keys)."""
        return list(self.proj._modules.values())  # type: ignore[arg-type]

    @property
    def _link_modules(self) -> zip:
        return zip(self.gamma._modules.values(), self.beta._modules.values(), self.links, strict=True)

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

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """``(b, d_out)``; gamma/beta of every link in the intermediates."""
        xs = batch.pooled_all()
        projs = self._proj_modules  # modality order
        if batch.all_present and not need_intermediates and self._chain_plan is not None:
            # the common training call, with as few Python steps as the equations need
            # (one path for every case, recording links as it goes, measured 1.08-1.10 of
            # the peer's time at b=64 against 1.04-1.05 with this one)
            self.input_mean.update(xs, None)
            hs = [proj(x) for proj, x in zip(projs, xs, strict=True)]
            start, plan = self._chain_plan
            gammas_, betas_ = self.gamma._modules, self.beta._modules
            state = hs[start]
            for link, j in plan:
                state = gammas_[link](state) * hs[j] + betas_[link](state)  # type: ignore[misc]
            return self.out(self.drop(state) if self._dropout else state), None
        if batch.all_present:
            self.input_mean.update(xs, None)
            h = {m: proj(x) for m, proj, x in zip(self.modalities, projs, xs, strict=True)}
        else:
            self.input_mean.update_rows(xs, batch.present)
            h = {m: proj(x) for m, proj, x in zip(self.modalities, projs, xs, strict=True)}
            # a missing modality: its stand-in (module docstring)
            present_mean = masked_mean(torch.stack([h[m] for m in self.modalities], dim=1), batch.present, dim=1)
            for m, proj in zip(self.modalities, projs, strict=True):
                fill = self.input_mean.choose(m, present_mean, proj(self.input_mean.value(m)))
                h[m] = torch.where(batch.presence(m).unsqueeze(-1), h[m], fill)
        gammas: dict[str, Tensor] = {}
        betas: dict[str, Tensor] = {}
        links = self._link_modules
        if self.mode == "chain":
            state = h[self.order[0]]
            for (gamma_layer, beta_layer, link), mod in zip(links, self.order[1:], strict=True):
                gamma, beta = gamma_layer(state), beta_layer(state)
                state = gamma * h[mod] + beta
                if need_intermediates:
                    gammas[link], betas[link] = gamma, beta
        else:
            gamma_all: Tensor | None = None
            beta_all: Tensor | None = None
            for (gamma_layer, beta_layer, link), c in zip(links, self.conditioners, strict=True):
                gamma, beta = gamma_layer(h[c]), beta_layer(h[c])
                gamma_all = gamma if gamma_all is None else gamma_all * gamma
                beta_all = beta if beta_all is None else beta_all + beta
                if need_intermediates:
                    gammas[link], betas[link] = gamma, beta
            assert gamma_all is not None and beta_all is not None  # at least one conditioner
            state = gamma_all * h[self.target] + beta_all
        fused = self.out(self.drop(state) if self._dropout else state)
        if not need_intermediates:
            return fused, FusionIntermediates()
        return fused, FusionIntermediates(extras={"gamma": gammas, "beta": betas})

    def extra_repr(self) -> str:
        how = " -> ".join(self.order) if self.mode == "chain" else f"{list(self.conditioners)} -> {self.target}"
        return f"{super().extra_repr()}, dim={self.dim}, mode={self.mode}, {how}"
