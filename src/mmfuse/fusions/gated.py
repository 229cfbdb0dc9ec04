"""Gated fusion: a learned gate decides, per sample, how much of each modality to keep.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t_i``
tokens of modality ``i``, ``d_i`` features of modality ``i``, ``d_out`` output
features, ``g`` gate width (1 for ``gate="scalar"``, ``d_out`` for
``gate="feature"``). Masks are bool, True means keep.

Two modalities, ``unit="linear"`` (``h_i = W_i x_i + b_i``, ``(b, d_out)``)::

    g = sigmoid(W_g [h_1, h_2] + b_g)          (b, g)
    h = g * h_1 + (1 - g) * h_2                (b, d_out)

``unit="gmu"``, the Gated Multimodal Unit (Arevalo et al., 2017, "Gated Multimodal
Units for Information Fusion")::

    h_i = tanh(W_i x_i)
    z   = sigmoid(W_z [x_1, x_2])              (gate from the raw inputs)
    h   = z * h_1 + (1 - z) * h_2

(with ``bias=True`` every linear map also has a bias; ``bias=False`` gives the
paper's equations exactly).

More than two modalities generalise the sigmoid to a softmax over modalities::

    a = softmax_m(reshape(W_g [h_1, ..., h_M] + b_g, (b, m, g)))    (masked to present)
    h = sum_i a_i * h_i

The two-modality gate is computed as the same masked softmax over the scores
``[s, 0]``, since ``softmax([s, 0])_1 = sigmoid(s)``: with both present this is the
sigmoid equation above, and with one missing its weight is 0 and the output is the
present modality's projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionIntermediates,
    masked_softmax,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, linear_params
from mmfuse.layers import ModalityDict, escape_key
from mmfuse.space import Categorical, Distribution

__all__ = ["GatedFusion"]


@register_fusion("gated")
class GatedFusion(Fusion):
    """Per-modality projections mixed by a learned gate (sigmoid for 2, softmax for more).

    A sequence input is first reduced to a vector by the mask-aware mean over its
    valid tokens (:meth:`FusionBatch.pooled`). A missing modality gets gate weight 0
    (the gate is a softmax masked to the present modalities) and its projection
    enters the gate's input as zeros.

    Args:
        input_dims: modality -> ``d_i`` (at least two modalities).
        output_dim: ``d_out``.
        gate: ``"scalar"``, one weight per modality and sample, or ``"feature"``
            (default), one per output feature.
        unit: ``"linear"`` (default): ``h_i`` is a linear projection and the gate
            reads the projections; ``"gmu"``: ``h_i = tanh(W_i x_i)`` and the gate
            reads the raw (pooled) inputs.
        bias: give the projections and the gate a bias.
    """

    min_modalities = 2

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "gate": Categorical(("scalar", "feature")),
        "unit": Categorical(("linear", "gmu")),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        gate: Literal["scalar", "feature"] = "feature",
        unit: Literal["linear", "gmu"] = "linear",
        bias: bool = True,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        self.gate = gate
        self.unit = unit
        num = len(self.modalities)
        self.gate_width = 1 if gate == "scalar" else self.output_dim
        self.proj = ModalityDict(
            {mod: nn.Linear(dim, self.output_dim, bias=bias) for mod, dim in self.input_dims.items()}
        )
        self._proj_keys = tuple(escape_key(mod) for mod in self.modalities)  # module keys, modality order
        gate_in = num * self.output_dim if unit == "linear" else sum(self.input_dims.values())
        # Two modalities: one sigmoid score per gate entry; more: one score per modality.
        gate_out = self.gate_width if num == 2 else num * self.gate_width
        self.gate_layer = nn.Linear(gate_in, gate_out, bias=bias)

    cost_text = CostText(
        options=("gate", "unit", "bias"),
        symbols="g = o if m = 2 else m o",
        params_big_o="O(m d o + m^2 o^2)",
        flops_big_o="O(m d o + m^2 o^2)",
        params_exact="m (d+1) o + (m o + 1) g",
        flops_exact="2 (m d o + m o g)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        o = output_dim
        width = 1 if cls.default("gate") == "scalar" else o
        g = width if m == 2 else m * width
        gate_in = m * o if cls.default("unit") == "linear" else m * d
        bias = cls.default("bias")
        params = m * linear_params(d, o, bias=bias) + linear_params(gate_in, g, bias=bias)
        return Cost(params, 2 * (m * d * o + gate_in * g))

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """``(b, d_out)``.

        Intermediates: ``gates["gate"]``: for two modalities the sigmoid gate ``g``
        on the first modality, ``(b, g)``; for more, the softmax weights ``(b, m)``
        (scalar) or ``(b, m, d_out)`` (feature). ``modality_weights`` ``(b, m)``: each
        modality's gate weight averaged over features (rows sum to 1, missing get 0).
        ``contributions``: ``a_i * h_i`` per modality, which add up to the output.
        """
        xs = batch.pooled_all()
        proj = self.proj._modules
        hs = [proj[key](x) for key, x in zip(self._proj_keys, xs, strict=True)]
        if self.unit == "gmu":
            hs = [torch.tanh(h) for h in hs]
        if len(hs) == 2 and batch.all_present and not need_intermediates:
            # fast path, both present: the sigmoid equation itself, h_2 + g (h_1 - h_2)
            gate_in = torch.cat(hs if self.unit == "linear" else xs, dim=-1)
            g = torch.sigmoid(self.gate_layer(gate_in))
            return hs[1] + g * (hs[0] - hs[1]), None
        h = torch.stack(hs, dim=1)  # (b, m, d_out)
        keep = None if batch.all_present else batch.present.unsqueeze(-1)  # (b, m, 1)
        if keep is not None:
            h = torch.where(keep, h, h.new_zeros(()))
        gate_in = h.flatten(1) if self.unit == "linear" else torch.cat(xs, dim=-1)
        s = self.gate_layer(gate_in)
        if len(self.modalities) == 2:
            scores = torch.stack([s, torch.zeros_like(s)], dim=1)  # (b, 2, g)
        else:
            scores = s.unflatten(1, (len(self.modalities), self.gate_width))  # (b, m, g)
        weights = masked_softmax(scores, None if keep is None else keep.expand_as(scores), dim=1)  # (b, m, g)
        contrib = weights * h
        out = contrib.sum(dim=1)
        if not need_intermediates:
            return out, None
        info = FusionIntermediates(present=batch.present)
        info.modality_weights = weights.mean(dim=-1)
        if len(self.modalities) == 2:
            gate = weights[:, 0]
        else:
            gate = weights.squeeze(-1) if self.gate == "scalar" else weights
        info.gates = {"gate": gate}
        info.contributions = {mod: contrib[:, i] for i, mod in enumerate(self.modalities)}
        return out, info

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gate={self.gate!r}, unit={self.unit!r}"
