"""Attention bottlenecks (Nagrani et al., 2021, "Attention Bottlenecks for Multimodal Fusion").

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t_i``
tokens of modality ``i`` (a vector input is one token), ``n`` fusion tokens, ``d_i``
input features, ``k`` model width (``dim``), ``h`` heads, ``d_out`` output.

Masks are bool and True means keep. Padded tokens and the tokens of a missing
modality are never attention keys and never pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmfuse.fusions._attention import TransformerBlock, project_tokens
from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    masked_mean,
    register_fusion,
)
from mmfuse.fusions._checks import check_heads
from mmfuse.fusions._cost import Cost, CostText, block_flops, block_params, linear_params
from mmfuse.fusions._options import NonNegativeInt, PositiveFloat, PositiveInt, Rate
from mmfuse.layers import ModalityDict
from mmfuse.space import Categorical, Distribution, Float, Int

__all__ = ["BottleneckFusion"]


@register_fusion("bottleneck")
class BottleneckFusion(Fusion):
    """Per-modality transformers that exchange information only through fusion tokens.

    Each modality is projected to width ``k`` (``Linear(d_i -> k)``; no positional
    embedding is added: order information, if any, must come from the encoders) and
    runs through its own stack of ``num_layers`` pre-norm transformer blocks
    (self-attention + MLP; weights not shared across modalities). Layers
    ``0 .. fusion_layer - 1`` process each modality alone. From layer
    ``fusion_layer`` on, ``n = num_fusion_tokens`` shared fusion tokens ``f``
    (learned initial values) join every modality: modality ``i``'s block runs on
    ``[x_i; f]``, giving updated ``x_i`` and ``f_i``, and the next ``f`` is the mean of
    the ``f_i`` over the modalities present in that sample. Cross-modal information
    therefore flows only through the ``n`` fusion tokens.

    Output (what the code reads out): one shared ``LayerNorm`` on each modality's
    final tokens, the mask-aware mean over its valid tokens, the mean of those
    vectors over the modalities present in the sample, then ``Linear(k -> d_out)``.
    The fusion tokens are not read out. The paper (MBT) differs: it prepends a CLS
    token to each modality, reads out only those CLS tokens, passes each through its
    own linear classifier and averages the per-modality logits.

    ``fusion_layer = num_layers`` gives separate streams combined only at the
    output (late fusion); ``fusion_layer = 0`` fuses from the first layer.

    Intermediates: ``attention["layer{l}/{modality}"]`` ``(b, h, t_q, t_k)`` for
    every layer and modality when asked (in fusion layers the last ``n`` queries and
    keys are the fusion tokens); ``extras["fusion_tokens"]`` ``(b, n, k)`` after the
    last layer (absent when no layer fuses).

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        dim: model width ``k``.
        num_layers: transformer layers per modality.
        num_heads: attention heads (must divide ``dim``).
        num_fusion_tokens: ``n``.
        fusion_layer: index of the first layer that uses the fusion tokens
            (``0 <= fusion_layer <= num_layers``).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout on attention weights and in the MLPs.
    """

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dim": Categorical((24, 32, 48, 64)),
        "num_heads": Categorical((1, 2, 3, 4, 8), divides="dim"),
        "num_layers": Int(1, 3),
        "num_fusion_tokens": Int(1, 8, log=True),
        "dropout": Float(0.0, 0.3),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt = 64,
        num_layers: PositiveInt = 2,
        num_heads: PositiveInt = 4,
        num_fusion_tokens: PositiveInt = 4,
        fusion_layer: NonNegativeInt = 1,
        mlp_ratio: PositiveFloat = 4.0,
        dropout: Rate = 0.0,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        check_heads(self.name, dim, num_heads)
        if fusion_layer > num_layers:
            raise FusionError(f"{self.name}: fusion_layer: expected an int in [0, num_layers={num_layers}], got {fusion_layer}")
        self.dim = dim
        self.num_layers = num_layers
        self.num_fusion_tokens = num_fusion_tokens
        self.fusion_layer = fusion_layer
        self.proj = ModalityDict({m: nn.Linear(d, dim) for m, d in self.input_dims.items()})
        # layers[l][i]: layer l of modality i (self.modalities order)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in self.modalities]
                )
                for _ in range(num_layers)
            ]
        )
        # no fusion layer: no fusion tokens (they would never be used nor trained)
        self.fusion_tokens = (
            nn.Parameter(torch.randn(num_fusion_tokens, dim) * 0.02) if fusion_layer < num_layers else None
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, output_dim)

    cost_text = CostText(
        options=("dim", "num_layers", "num_heads", "num_fusion_tokens", "fusion_layer", "mlp_ratio"),
        symbols="k = dim, L = num_layers, n = num_fusion_tokens; B(k) = 12 k^2 + 13 k per block; "
        "F(q) = 24 q k^2 + 4 q^2 k per block on q tokens (fusion_layer = 1)",
        params_big_o="O(L m k^2 + m d k)",
        flops_big_o="O(m t d k + L m (t+n) k^2 + L m (t+n)^2 k)",
        params_exact="m (d+1) k + L m B(k) + n k + 2 k + (k+1) o",
        flops_exact="2 m t d k + m F(t) + (L-1) m F(t+n) + 2 k o",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        k, layers, n = cls.default("dim"), cls.default("num_layers"), cls.default("num_fusion_tokens")
        fusion_layer, ratio = cls.default("fusion_layer"), cls.default("mlp_ratio")
        tokens_param = n * k if fusion_layer < layers else 0
        params = (
            m * linear_params(d, k)
            + layers * m * block_params(k, cross=False, mlp_ratio=ratio)
            + tokens_param
            + 2 * k
            + linear_params(k, output_dim)
        )
        flops = 2 * m * t * d * k + 2 * k * output_dim
        for layer in range(layers):
            tok = t if layer < fusion_layer else t + n
            flops += m * block_flops(k, tok, tok, mlp_ratio=ratio)
        return Cost(params, flops)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; attention weights per layer and modality when asked."""
        xs, masks = project_tokens(self.proj, batch)
        b = batch.batch_size
        present = batch.present.to(xs[0].dtype)  # (b, m)
        n = self.num_fusion_tokens
        attention: dict[str, Tensor] = {}
        fusion: Tensor | None = None
        for layer_idx, layer in enumerate(self.layers):
            if layer_idx < self.fusion_layer:
                for i, mod in enumerate(self.modalities):
                    xs[i], w = layer[i](xs[i], masks[i], need_weights=need_intermediates)
                    if w is not None:
                        attention[f"layer{layer_idx}/{mod}"] = w
                continue
            if fusion is None:
                assert self.fusion_tokens is not None  # built whenever a layer fuses
                fusion = self.fusion_tokens.unsqueeze(0).expand(b, -1, -1)
            fusion_mask = masks[0].new_ones(b, n)
            new_fusion = torch.zeros_like(fusion)
            for i, mod in enumerate(self.modalities):
                t_i = xs[i].shape[1]
                joint = torch.cat([xs[i], fusion], dim=1)
                joint_mask = torch.cat([masks[i], fusion_mask], dim=1)
                joint, w = layer[i](joint, joint_mask, need_weights=need_intermediates)
                xs[i] = joint[:, :t_i]
                new_fusion = new_fusion + present[:, i, None, None] * joint[:, t_i:]
                if w is not None:
                    attention[f"layer{layer_idx}/{mod}"] = w
            count = present.sum(dim=1).clamp_min(1.0)
            fusion = new_fusion / count[:, None, None]

        pooled = torch.stack(
            [masked_mean(self.norm(x), mask, dim=1) for x, mask in zip(xs, masks, strict=True)], dim=1
        )  # (b, m, k)
        fused = self.out(masked_mean(pooled, batch.present, dim=1))
        info = FusionIntermediates()
        if need_intermediates:
            info.attention = attention
            if fusion is not None:
                info.extras["fusion_tokens"] = fusion
        return fused, info

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, num_layers={self.num_layers}, "
            f"num_fusion_tokens={self.num_fusion_tokens}, fusion_layer={self.fusion_layer}"
        )
