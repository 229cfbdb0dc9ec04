"""Trusted multi-view classification: evidential opinions per modality, combined by Dempster-Shafer.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t_i``
tokens of modality ``i``, ``d_i`` features of modality ``i``, ``k`` classes
(``d_out``). Masks are bool, True means keep.

TMC (Han, Zhang, Fu & Zhou, "Trusted Multi-View Classification", ICLR 2021) and its
extension ETMC (TPAMI 2022). Each modality ``i`` gets a head ``f_i`` to the ``k``
classes whose output is read as *evidence* for each class, and the evidence as the
parameters of a Dirichlet distribution over the class probabilities (subjective
logic)::

    e_i = softplus(f_i(x_i))          (b, k), >= 0
    alpha_i = e_i + 1,  S_i = sum_c alpha_ic
    b_i = e_i / S_i                   belief in each class
    u_i = k / S_i                     uncertainty, so that sum_c b_ic + u_i = 1

Little evidence gives ``u`` near 1 (the model does not know); much evidence for one
class gives a large belief in it and ``u`` near 0. Two opinions are combined with the
reduced Dempster-Shafer rule (the paper's Definition 3.1)::

    C = sum_{c != c'} b1_c b2_c'                        (conflict)
    b_c = (b1_c b2_c + b1_c u2 + b2_c u1) / (1 - C)
    u   = u1 u2 / (1 - C)

folded one modality at a time for any number of modalities (the rule is commutative
and associative, so the order does not matter). ``1 - C`` is computed as
``u1 + u2 - u1 u2 + sum_c b1_c b2_c``, the same value when ``sum b + u = 1`` (as it is
by construction), as a sum of non-negative terms: no cancellation when both opinions
are confident and disagree. A missing modality gets no evidence (``e = 0``), which is
the vacuous opinion ``b = 0, u = 1``: the rule's identity, so it takes no part.

Output: the class log-probabilities of the combined Dirichlet's expected probability,
``alpha / S`` with ``S = k / u`` and ``alpha = b S + 1``, which is ``b_c + u / k``:
the output can be fed to cross-entropy and read as probabilities like any
decision-level output (``outputs_logits`` is True).

Training (:meth:`TrustedFusion.training_loss`, called by the training engine in place of
the task loss): for each present modality's Dirichlet and for the combined one (and
ETMC's pseudo-view), with ``y`` the one-hot target,

    L(alpha) = sum_c y_c (digamma(S) - digamma(alpha_c))           (expected cross-entropy)
             + lambda_t KL(Dir(alpha~) || Dir(1)),   alpha~ = y + (1 - y) alpha

where ``alpha~`` removes the target's evidence, so the KL term only penalises evidence
for the wrong classes, and ``lambda_t = min(1, t / annealing_epochs)`` with ``t`` the
epoch counted from 1 (as the authors' code, ``hanmenghan/TMC``: ``ce_loss``, ``KL``,
``lambda_epochs``). The per-sample sum of those terms is averaged over the batch.

ETMC's pseudo-view (``pseudo_view=True``): the concatenation of every modality's
(pooled) features gets its own head and its opinion is combined as one more view. A
missing modality enters that concatenation as the zeros the contract gives it (as in
``early``), so the pseudo-view always takes part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, head_cost
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import Mlp, ModalityDict, escape_key
from mmfuse.space import Categorical, Distribution, Float, Int

__all__ = ["TrustedFusion", "combine_opinions", "dirichlet_loss", "opinion"]


def opinion(evidence: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., k)`` non-negative evidence -> belief ``(..., k)`` and uncertainty ``(...,)``."""
    k = evidence.shape[-1]
    s = evidence.sum(dim=-1, keepdim=True) + k
    return evidence / s, k / s.squeeze(-1)


def combine_opinions(b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """The reduced Dempster-Shafer combination of two opinions (see the module docstring).

    Args:
        b1, b2: ``(..., k)`` beliefs.
        u1, u2: ``(...,)`` uncertainties, with ``b.sum(-1) + u == 1``.

    Returns:
        The combined belief ``(..., k)`` and uncertainty ``(...,)``.
    """
    u1_, u2_ = u1.unsqueeze(-1), u2.unsqueeze(-1)
    agree = b1 * b2
    # 1 - C, as a sum of non-negative terms (equal to 1 - C when sum b + u = 1)
    norm = u1_ + u2_ - u1_ * u2_ + agree.sum(dim=-1, keepdim=True)
    b = (agree + b1 * u2_ + b2 * u1_) / norm
    u = (u1_ * u2_ / norm).squeeze(-1)
    return b, u


def _expected_probability(belief: Tensor, uncertainty: Tensor) -> Tensor:
    """``alpha / S`` of the opinion's Dirichlet: ``b + u / k``."""
    return belief + (uncertainty / belief.shape[-1]).unsqueeze(-1)


def dirichlet_loss(belief: Tensor, uncertainty: Tensor, target: Tensor, annealing: float) -> Tensor:
    """Per-sample loss ``(b,)`` of one opinion's Dirichlet (see the module docstring).

    Args:
        belief: ``(b, k)``, or ``(b, v, k)`` for ``v`` opinions of each sample.
        uncertainty: ``(b,)``, or ``(b, v)``.
        target: ``(b,)`` class indices.
        annealing: ``lambda_t``, the weight of the KL term.

    Returns:
        ``(b,)``, or ``(b, v)``: the loss of each opinion.
    """
    k = belief.shape[-1]
    dtype = torch.promote_types(belief.dtype, torch.float32)  # at least float32, even under autocast
    belief, uncertainty = belief.to(dtype), uncertainty.to(dtype)
    s = k / uncertainty.clamp_min(torch.finfo(dtype).tiny)  # (b,) or (b, v)
    alpha = belief * s.unsqueeze(-1) + 1.0
    y = F.one_hot(target, k).to(alpha.dtype)
    if alpha.dim() == 3:
        y = y.unsqueeze(1)
    expected_ce = torch.digamma(s) - (y * torch.digamma(alpha)).sum(dim=-1)
    if annealing == 0:
        return expected_ce
    tilde = y + (1.0 - y) * alpha
    s_t = tilde.sum(dim=-1)
    # KL(Dir(tilde) || Dir(1)) = ln Gamma(S~) - sum ln Gamma(alpha~) - ln Gamma(k)
    #                            + sum (alpha~ - 1)(digamma(alpha~) - digamma(S~))
    kl = (
        torch.lgamma(s_t)
        - torch.lgamma(tilde).sum(dim=-1)
        - math.lgamma(k)
        + ((tilde - 1.0) * (torch.digamma(tilde) - torch.digamma(s_t).unsqueeze(-1))).sum(dim=-1)
    )
    return expected_ce + annealing * kl


@register_fusion("trusted")
class TrustedFusion(Fusion):
    """Trusted multi-view classification (TMC/ETMC): per-modality Dirichlet evidence, Dempster-Shafer combination.

    A decision-level strategy: it outputs class log-probabilities (``output_dim`` is
    the number of classes) and a per-sample uncertainty ``u`` in ``(0, 1]`` that grows
    when the modalities have little evidence or disagree. A sequence input is first
    reduced to a vector by the mask-aware mean over its valid tokens. A missing
    modality contributes the vacuous opinion (no evidence, ``u = 1``), which leaves the
    combination unchanged. Trained with the evidential loss of the paper
    (:meth:`training_loss`), which the training engine uses in place of cross-entropy;
    validation and early stopping read the plain negative log-likelihood of the output.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``k``, the number of classes (at least 2).
        hidden_dims: hidden widths of each per-modality evidence head (empty: one
            linear map, as the paper's heads on raw features).
        pseudo_view: ETMC's extra view: a head on the concatenation of every
            modality's features, whose opinion is combined with the others'.
        annealing_epochs: epochs over which the weight of the KL term grows linearly
            to 1 (``lambda_t = min(1, t / annealing_epochs)``, ``t`` counted from 1).
        act_layer: activation of the heads.
        norm_layer: per-sample normalisation of the heads (e.g. ``nn.LayerNorm``).
        dropout: dropout of the heads.
    """

    #: always decision-level, whatever the options
    outputs_logits = True

    search_space: ClassVar[dict[str, Distribution]] = {
        "pseudo_view": Categorical((False, True)),
        "annealing_epochs": Int(1, 50, log=True),
        "dropout": Float(0.0, 0.3),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dims: Sequence[PositiveInt] = (256,),
        pseudo_view: bool = False,
        annealing_epochs: PositiveInt = 10,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        if self.output_dim < 2:
            raise FusionError(
                f"trusted: output_dim is the number of classes: expected at least 2, got {self.output_dim}"
            )
        self.pseudo_view = pseudo_view
        self.annealing_epochs = annealing_epochs

        def head(dim: int) -> Mlp:
            return Mlp(dim, self.output_dim, hidden_dims=tuple(hidden_dims), act_layer=act_layer,
                       norm_layer=norm_layer, dropout=dropout)

        self.heads = ModalityDict({mod: head(dim) for mod, dim in self.input_dims.items()})
        self._head_keys = tuple(escape_key(mod) for mod in self.modalities)  # module keys, modality order
        # a fixed slot, so weight names do not depend on the option
        self.pseudo_head: nn.Module = head(sum(self.input_dims.values())) if pseudo_view else nn.Identity()

    cost_text = CostText(
        options=("hidden_dims", "pseudo_view"),
        symbols="H = hidden_dims[0]",
        params_big_o="O(m (d + o) H)",
        flops_big_o="O(m (d + o) H)",
        params_exact="m ((d+1) H + (H+1) o)",
        flops_exact="2 m (d H + H o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        (hidden,) = cls.default("hidden_dims")
        o = output_dim
        head = head_cost(d, hidden, o)
        params, flops = m * head.params, m * head.flops
        if cls.default("pseudo_view"):  # one more head, on the concatenation
            pseudo = head_cost(m * d, hidden, o)
            params, flops = params + pseudo.params, flops + pseudo.flops
        return Cost(params, flops)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """``(b, k)`` class log-probabilities of the combined opinion.

        Intermediates (``extras``): ``uncertainty`` ``(b,)`` and ``belief`` ``(b, k)`` of
        the combined opinion; ``modality_uncertainty`` ``(b, m)`` and ``modality_belief``
        ``(b, m, k)`` of each modality's own opinion (1 and 0 where it is missing); with
        ``pseudo_view``, ``pseudo_uncertainty`` ``(b,)`` and ``pseudo_belief`` ``(b, k)``.
        """
        heads = self.heads._modules
        xs = batch.pooled_all()
        logits = torch.stack([heads[key](x) for key, x in zip(self._head_keys, xs, strict=True)], dim=1)
        evidence = F.softplus(logits)  # (b, m, k)
        if not batch.all_present:
            # no evidence: the vacuous opinion (u = 1), the combination's identity
            evidence = torch.where(batch.present.unsqueeze(-1), evidence, evidence.new_zeros(()))
        beliefs, uncertainties = opinion(evidence)  # (b, m, k), (b, m)
        b, u = beliefs[:, 0], uncertainties[:, 0]
        for i in range(1, len(self.modalities)):
            b, u = combine_opinions(b, u, beliefs[:, i], uncertainties[:, i])
        if self.pseudo_view:
            pb, pu = opinion(F.softplus(self.pseudo_head(torch.cat(xs, dim=-1))))
            b, u = combine_opinions(b, u, pb, pu)
        p = _expected_probability(b, u)
        out = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        if not need_intermediates:
            return out, None
        info = FusionIntermediates(present=batch.present)
        info.extras.update(
            uncertainty=u, belief=b, modality_uncertainty=uncertainties, modality_belief=beliefs
        )
        if self.pseudo_view:
            info.extras.update(pseudo_uncertainty=pu, pseudo_belief=pb)
        return out, info

    def training_loss(self, info: FusionIntermediates, target: Tensor, *, epoch: int) -> Tensor:
        """The evidential loss of one batch, averaged over its samples (see the module docstring).

        Args:
            info: the intermediates of this batch's forward
                (``return_intermediates=True``).
            target: ``(b,)`` class indices.
            epoch: the training epoch, counted from 0 (``lambda_t`` counts from 1).
        """
        x = info.extras
        annealing = min(1.0, (epoch + 1) / self.annealing_epochs)
        beliefs = [x["belief"].unsqueeze(1), x["modality_belief"]]
        uncertainties = [x["uncertainty"].unsqueeze(1), x["modality_uncertainty"]]
        if self.pseudo_view:
            beliefs.append(x["pseudo_belief"].unsqueeze(1))
            uncertainties.append(x["pseudo_uncertainty"].unsqueeze(1))
        terms = dirichlet_loss(torch.cat(beliefs, dim=1), torch.cat(uncertainties, dim=1), target, annealing)
        if info.present is not None:  # a missing modality's (vacuous) opinion is not trained
            keep = F.pad(info.present, (1, terms.shape[1] - 1 - info.present.shape[1]), value=True)
            terms = torch.where(keep, terms, terms.new_zeros(()))
        total = terms.sum(dim=1)
        return total.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pseudo_view={self.pseudo_view}, annealing_epochs={self.annealing_epochs}"
