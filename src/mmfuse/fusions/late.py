"""Late fusion: encode each modality on its own, then combine the results.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t_i``
tokens of modality ``i``, ``d_i`` features of modality ``i``, ``d_out`` output
features (class count at ``level="decision"``). Masks are bool, True means keep;
``P`` below is the set of modalities present in a sample.

Feature level (``level="feature"``), ``h_i = Mlp_i(x_i)`` of shape ``(b, d_out)``::

    mean      h = (1/|P|) sum_{i in P} h_i
    weighted  a = softmax_{i in P}(s),  h = sum_{i in P} a_i h_i      (s: learned, (m,))
    max       h = max_{i in P} h_i                                     (elementwise)

Decision level (``level="decision"``), ``log p_i = log_softmax(Head_i(x_i))``::

    mean_prob  out = log((1/|P|) sum_{i in P} p_i)
    product    out = log_softmax(sum_{i in P} log p_i)                (product of experts)
    weighted   a = softmax_{i in P}(s),  out = log(sum_{i in P} a_i p_i)

The decision-level output is class log-probabilities: it can be fed to
cross-entropy as logits directly (``outputs_logits`` is True).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    masked_softmax,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, head_cost
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import Mlp, ModalityDict, escape_key
from mmfuse.space import Categorical, Distribution, Float

__all__ = ["LateFusion"]


@register_fusion("late")
class LateFusion(Fusion):
    """One MLP per modality, combined over the modalities present in each sample.

    A sequence input is first reduced to a vector by the mask-aware mean over its
    valid tokens (:meth:`FusionBatch.pooled`). Missing modalities are excluded from
    every combination (they get weight 0 and never win a max), not just zero-filled.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out`` (the number of classes at ``level="decision"``, at
            least 2).
        level: ``"feature"`` combines per-modality features; ``"decision"`` gives
            each modality a classifier head and combines class probabilities.
        combine: feature-level rule, ``"mean"`` (default), ``"weighted"`` or
            ``"max"``; only for ``level="feature"``.
        decision: decision-level rule, ``"mean_prob"`` (default), ``"product"`` or
            ``"weighted"``; only for ``level="decision"``.
        hidden_dims: hidden widths of each per-modality MLP (empty: one linear map).
        act_layer: activation of the MLPs.
        norm_layer: per-sample normalisation of the MLPs (e.g. ``nn.LayerNorm``).
        dropout: dropout of the MLPs.
    """

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "level": Categorical(("feature", "decision")),
        "combine": Categorical((None, "weighted", "max"), when={"level": "feature"}),  # None: mean
        "decision": Categorical((None, "product", "weighted"), when={"level": "decision"}),  # None: mean_prob
        "dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        level: Literal["feature", "decision"] = "feature",
        combine: Literal["mean", "weighted", "max"] | None = None,
        decision: Literal["mean_prob", "product", "weighted"] | None = None,
        hidden_dims: Sequence[PositiveInt] = (256,),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        if level == "feature":
            if decision is not None:
                raise FusionError(
                    f"late: decision={decision!r} applies only to level='decision', got level='feature' "
                    f"(use combine= for feature-level fusion)"
                )
            combine = "mean" if combine is None else combine
        else:
            if combine is not None:
                raise FusionError(
                    f"late: combine={combine!r} applies only to level='feature', got level='decision' "
                    f"(use decision= for decision-level fusion)"
                )
            decision = "mean_prob" if decision is None else decision
            if self.output_dim < 2:
                raise FusionError(
                    f"late(level='decision'): output_dim is the number of classes: expected at least 2, "
                    f"got {self.output_dim}"
                )
            self.outputs_logits = True
        self.level = level
        self.combine = combine
        self.decision = decision
        self.encoders = ModalityDict(
            {
                mod: Mlp(
                    dim,
                    self.output_dim,
                    hidden_dims=tuple(hidden_dims),
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    dropout=dropout,
                )
                for mod, dim in self.input_dims.items()
            }
        )
        self._encoder_keys = tuple(escape_key(mod) for mod in self.modalities)  # module keys, modality order
        # Learned per-modality scores, only where a rule uses them (zero init: uniform weights).
        self.modality_logits: nn.Parameter | None = None
        if combine == "weighted" or decision == "weighted":
            self.modality_logits = nn.Parameter(torch.zeros(len(self.modalities)))

    cost_text = CostText(
        options=("level", "combine", "hidden_dims"),
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
        learned = int(cls.default("combine") == "weighted")  # one score per modality
        head = head_cost(d, hidden, o)
        return Cost(m * head.params + learned * m, m * head.flops)

    def _weights(self, present: Tensor, dtype: torch.dtype) -> Tensor:
        """``(b, m)`` weights over present modalities (rows sum to 1, missing get 0)."""
        if self.modality_logits is not None:
            scores = self.modality_logits.to(dtype).expand(present.shape[0], -1)
            return masked_softmax(scores, present, dim=1)
        w = present.to(dtype)
        return w / w.sum(dim=1, keepdim=True).clamp_min(1.0)

    def _log_weights(self, present: Tensor, dtype: torch.dtype) -> Tensor:
        """``(b, m)`` log of :meth:`_weights`, a large negative finite value where missing."""
        lowest = torch.finfo(dtype).min
        if self.modality_logits is not None:
            scores = self.modality_logits.to(dtype).expand(present.shape[0], -1)
            log_a = torch.log_softmax(scores.masked_fill(~present, lowest), dim=1)
        else:
            count = present.to(dtype).sum(dim=1, keepdim=True).clamp_min(1.0)
            log_a = (-torch.log(count)).expand(-1, present.shape[1])
        return log_a.masked_fill(~present, lowest)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """``(b, d_out)`` features, or class log-probabilities at ``level="decision"``.

        Intermediates: ``modality_weights`` ``(b, m)``; ``contributions`` per
        modality ``(b, d_out)``: at feature level the weighted terms ``a_i h_i`` (for
        ``max``, ``h_i`` where modality ``i`` gives the max, else 0), which add up to
        the output; at decision level each modality's class log-probabilities
        ``log p_i`` (0 where the modality is missing), also stacked with the
        probabilities in ``extras["log_probs"]`` / ``extras["probs"]`` ``(b, m, d_out)``.
        """
        encoders = self.encoders._modules
        xs = batch.pooled_all()
        h = torch.stack([encoders[key](x) for key, x in zip(self._encoder_keys, xs, strict=True)], dim=1)
        if self.combine == "mean" and batch.all_present and not need_intermediates:
            return h.mean(dim=1), None  # fast path: every modality present
        present = batch.present
        keep = present.unsqueeze(-1)  # (b, m, 1)
        if self.level == "feature":
            out, weights, contrib = self._combine_features(h, present)
        else:
            out, weights, contrib = self._combine_decisions(h, present)
        info = FusionIntermediates(present=present, modality_weights=weights)
        if need_intermediates:
            info.contributions = {mod: contrib[:, i] for i, mod in enumerate(self.modalities)}
            if self.level == "decision":
                info.extras["log_probs"] = contrib
                info.extras["probs"] = contrib.exp() * keep.to(contrib.dtype)
        return out, info

    def _combine_features(self, h: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.combine == "max":
            filled = h.masked_fill(~present.unsqueeze(-1), torch.finfo(h.dtype).min)
            out = filled.amax(dim=1)
            # A sample with no present modality only exists under torch.compile (eager
            # validation rejects it): give it zeros rather than the fill value.
            out = torch.where(present.any(dim=1, keepdim=True), out, out.new_zeros(()))
            winner = nn.functional.one_hot(filled.argmax(dim=1), len(self.modalities))  # (b, d, m)
            winner = winner.transpose(1, 2).to(h.dtype) * present.unsqueeze(-1).to(h.dtype)
            weights = winner.mean(dim=2)
            return out, weights, winner * h
        weights = self._weights(present, h.dtype)
        contrib = weights.unsqueeze(-1) * h
        return contrib.sum(dim=1), weights, contrib

    def _combine_decisions(self, logits: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_p = torch.log_softmax(logits, dim=-1)  # (b, m, d)
        keep = present.unsqueeze(-1)
        log_p = torch.where(keep, log_p, log_p.new_zeros(()))
        weights = self._weights(present, logits.dtype)
        if self.decision == "product":
            out = torch.log_softmax(log_p.sum(dim=1), dim=-1)
        else:
            # log(sum_i a_i p_i), stably: logsumexp_i(log a_i + log p_i), missing excluded.
            log_a = self._log_weights(present, logits.dtype)
            out = torch.logsumexp(log_a.unsqueeze(-1) + log_p, dim=1)
        return out, weights, log_p

    def extra_repr(self) -> str:
        rule = f"combine={self.combine!r}" if self.level == "feature" else f"decision={self.decision!r}"
        return f"{super().extra_repr()}, level={self.level!r}, {rule}"
