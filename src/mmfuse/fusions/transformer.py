"""Cross-modal transformer (MulT-style, Tsai et al., 2019, "Multimodal Transformer for
Unaligned Multimodal Language Sequences").

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t_i``
tokens of modality ``i`` (a vector input is one token; lengths may differ across
modalities, no alignment is needed), ``d_i`` input features, ``k`` model width
(``dim``), ``s = (m - 1) k`` width of a target's concatenated streams, ``h`` heads,
``d_out`` output.

Masks are bool and True means keep. Padded tokens and the tokens of a missing
modality are never attention keys and never pooled; there is no causal mask.

MulT-*style*, not the reference. Every difference from the reference implementation
(``yaohungt/Multimodal-Transformer``, ``MULTModel`` / ``TransformerEncoder``):

- input projection: ``Linear(d_i -> k)`` with bias here; MulT uses a temporal
  ``Conv1d`` (kernel 1 by default, no bias);
- embedding: none here; MulT scales the projected tokens by ``sqrt(k)``, adds
  sinusoidal positions (to queries and to keys/values) and applies embedding dropout;
- cross-modal layer norms: here the query tokens and the source tokens have their own
  ``LayerNorm`` (``LN_1`` and ``LN_kv``); MulT applies one shared ``LayerNorm`` to both;
- no final ``LayerNorm`` after each cross-modal stack here; MulT normalises the
  output of every encoder stack;
- MLP activation: GELU here, ReLU in MulT; one ``dropout`` here where MulT has
  separate attention, ReLU, residual and embedding dropouts;
- self-attention after concatenation: ``num_self_layers`` blocks (default 1) here;
  MulT uses ``max(layers, 3)``;
- readout: the mask-aware mean over the target's valid tokens here; MulT takes the
  last time step;
- output: one ``Linear`` here; MulT applies a residual two-layer ReLU MLP
  (``proj1``, ``proj2``) before its output layer;
- masks: padding and missing modalities are masked here; MulT has no key padding
  mask (only an optional causal mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmfuse.fusions._attention import TransformerBlock, project_tokens
from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionIntermediates,
    masked_mean,
    register_fusion,
)
from mmfuse.fusions._checks import check_heads
from mmfuse.fusions._cost import Cost, CostText, block_flops, block_params, linear_params
from mmfuse.fusions._options import NonNegativeInt, PositiveFloat, PositiveInt, Rate
from mmfuse.layers import ModalityDict
from mmfuse.space import Categorical, Distribution, Float, Int

__all__ = ["CrossModalTransformerFusion"]


@register_fusion("cross_modal_transformer")
class CrossModalTransformerFusion(Fusion):
    """One cross-modal stream per ordered (target, source) pair, MulT-style (the
    differences from the reference are listed in the module docstring).

    1. Project each modality to width ``k``: ``x_i = Linear(d_i -> k)`` (no positional
       embedding: order information, if any, must come from the encoders).
    2. For each target ``i`` and each source ``j != i``, a stream of ``num_layers``
       pre-norm cross-modal blocks: ``z <- z + Attn(LN(z), LN(x_j))``,
       ``z <- z + MLP(LN(z))``, starting from ``z = x_i``; the keys are always the
       source's projected tokens ``x_j`` (MulT's low-level source features).
    3. The target's ``m - 1`` streams are concatenated along features (``(b, t_i, s)``).
       Where a stream's source is missing for a sample, its attention terms are zero
       and the stream is the target's own tokens through the residual and MLP path,
       so a target keeps its information when every source is missing.
    4. ``num_self_layers`` self-attention blocks of width ``s`` over the target's
       tokens, ``LayerNorm``, and the mask-aware mean over the target's valid tokens
       (MulT reads the last token; a mean does not depend on padding).
    5. Per-target vectors are combined over targets: ``"concat"`` (MulT; a missing
       target's slice is zero) or ``"mean"`` over present targets; then
       ``Linear(-> d_out)``.

    Intermediates: ``attention["{target}->{source}/layer{l}"]`` ``(b, h, t_i, t_j)``
    and ``attention["{target}/self{l}"]`` ``(b, h, t_i, t_i)`` when asked.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        dim: model width ``k``.
        num_layers: cross-modal blocks per stream.
        num_self_layers: self-attention blocks per target after concatenation.
        num_heads: attention heads (must divide ``dim``).
        mlp_ratio: MLP hidden width as a multiple of the block width.
        dropout: dropout on attention weights and in the MLPs.
        combine: ``"concat"`` or ``"mean"`` over targets.
    """

    min_modalities = 2

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dim": Categorical((16, 24, 32, 48, 64)),
        "num_heads": Categorical((1, 2, 3, 4, 8), divides="dim"),
        "num_layers": Int(1, 3),
        "combine": Categorical(("concat", "mean")),
        "dropout": Float(0.0, 0.3),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: PositiveInt = 32,
        num_layers: PositiveInt = 2,
        num_self_layers: NonNegativeInt = 1,
        num_heads: PositiveInt = 4,
        mlp_ratio: PositiveFloat = 4.0,
        dropout: Rate = 0.0,
        combine: Literal["concat", "mean"] = "concat",
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        check_heads(self.name, dim, num_heads)
        m = len(self.modalities)
        self.dim = dim
        self.num_layers = num_layers
        self.combine = combine
        self.stream_width = (m - 1) * dim
        self.proj = ModalityDict({mod: nn.Linear(d, dim) for mod, d in self.input_dims.items()})
        # streams[i][j']: the stream of target i from its j'-th source (sources in
        # modality order, target skipped), a ModuleList of num_layers blocks
        self.streams = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        nn.ModuleList(
                            [
                                TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout, cross=True)
                                for _ in range(num_layers)
                            ]
                        )
                        for _ in range(m - 1)
                    ]
                )
                for _ in range(m)
            ]
        )
        s = self.stream_width
        self.self_layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [TransformerBlock(s, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(num_self_layers)]
                )
                for _ in range(m)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(s) for _ in range(m)])
        self.out = nn.Linear(m * s if combine == "concat" else s, output_dim)

    cost_text = CostText(
        options=("dim", "num_layers", "num_self_layers", "num_heads", "mlp_ratio", "combine"),
        symbols="k = dim, L = num_layers, S = num_self_layers, s = (m-1) k; B_x(k) = 12 k^2 + 15 k (cross), "
        "B(s) = 12 s^2 + 13 s; F_w = 24 t w^2 + 4 t^2 w for a block of width w",
        params_big_o="O(L m^2 k^2 + S m^3 k^2 + m d k + m^2 k o)",
        flops_big_o="O(m t d k + L m^2 (t k^2 + t^2 k) + S m (t s^2 + t^2 s))",
        params_exact="m (d+1) k + m(m-1) L B_x(k) + m S B(s) + 2 m s + (m s + 1) o",
        flops_exact="2 m t d k + m(m-1) L F_k + m S F_s + 2 m s o",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        k, layers, self_layers = cls.default("dim"), cls.default("num_layers"), cls.default("num_self_layers")
        ratio = cls.default("mlp_ratio")
        s = (m - 1) * k
        out_in = m * s if cls.default("combine") == "concat" else s
        params = (
            m * linear_params(d, k)
            + m * (m - 1) * layers * block_params(k, cross=True, mlp_ratio=ratio)
            + m * self_layers * block_params(s, cross=False, mlp_ratio=ratio)
            + m * 2 * s
            + linear_params(out_in, output_dim)
        )
        flops = (
            2 * m * t * d * k
            + m * (m - 1) * layers * block_flops(k, t, t, mlp_ratio=ratio)
            + m * self_layers * block_flops(s, t, t, mlp_ratio=ratio)
            + 2 * out_in * output_dim
        )
        return Cost(params, flops)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; attention weights per stream layer and self layer when asked."""
        xs, masks = project_tokens(self.proj, batch)
        present = batch.present.to(xs[0].dtype)  # (b, m)
        attention: dict[str, Tensor] = {}
        per_target: list[Tensor] = []
        for i, target in enumerate(self.modalities):
            sources = [j for j in range(len(self.modalities)) if j != i]
            streams: list[Tensor] = []
            for stream, j in zip(self.streams[i], sources, strict=True):
                z = xs[i]
                for layer_idx, block in enumerate(stream):
                    z, w = block(z, masks[j], xs[j], need_weights=need_intermediates)
                    if w is not None:
                        attention[f"{target}->{self.modalities[j]}/layer{layer_idx}"] = w
                # a missing source has no valid key, so each block's attention term is
                # zero and the stream carries the target's own tokens through the
                # residual path: the source contributes nothing, the target is kept
                streams.append(z)
            z = torch.cat(streams, dim=-1)  # (b, t_i, s)
            for layer_idx, block in enumerate(self.self_layers[i]):
                z, w = block(z, masks[i], need_weights=need_intermediates)
                if w is not None:
                    attention[f"{target}/self{layer_idx}"] = w
            # a missing target has no valid token: masked_mean gives zeros
            per_target.append(masked_mean(self.norms[i](z), masks[i], dim=1))
        stacked = torch.stack(per_target, dim=1)  # (b, m, s)
        if self.combine == "concat":
            combined = (stacked * present.unsqueeze(-1)).flatten(1)
        else:
            combined = masked_mean(stacked, batch.present, dim=1)
        return self.out(combined), FusionIntermediates(attention=attention if need_intermediates else None)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, dim={self.dim}, num_layers={self.num_layers}, "
            f"stream_width={self.stream_width}, combine={self.combine}"
        )
