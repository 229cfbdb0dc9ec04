"""Early fusion: concatenate the modalities' features, then one shared encoder.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``t``
tokens (aligned sequences), ``t_i`` tokens of modality ``i``, ``d_i`` features of
modality ``i``, ``d_cat`` concatenated features, ``d_out`` output features. Masks are
bool, True means keep.

The equations::

    x_fusion = Concat(x_1, ..., x_M[, p_1, ..., p_M])     (b, d_cat)
    h        = Encoder(x_fusion)                          (b, d_out)

where ``p_i`` is the presence indicator of modality ``i`` (1 present, 0 missing), so
the encoder can tell a missing modality from one whose features happen to be zero.
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
    masked_mean,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, head_cost
from mmfuse.fusions._options import PositiveInt, Rate
from mmfuse.layers import Mlp
from mmfuse.space import Categorical, Distribution, Float

__all__ = ["EarlyFusion"]


@register_fusion("early")
class EarlyFusion(Fusion):
    """Concatenate every modality's features and encode the concatenation.

    Sequence inputs are handled by ``align``:

    - ``"pool"`` (default): each sequence is first reduced to a vector by the
      mask-aware mean over its valid tokens (:meth:`FusionBatch.pooled`), so
      sequences of different lengths and vectors mix freely.
    - ``"tokens"``: every input must be a sequence and all must have the same
      length ``t``, declared aligned by the user (token ``j`` of every modality
      describes the same instant). The features are concatenated per token,
      with per-token presence indicators, the encoder runs on every token, and the
      output is the mean of the encoded tokens over the positions valid in at least
      one modality.

    A missing modality enters the concatenation as zeros (its values never reach
    the encoder) and, with ``presence_features=True``, as a 0 presence indicator.

    Args:
        input_dims: modality -> ``d_i``.
        output_dim: ``d_out``.
        hidden_dims: hidden widths of the default MLP encoder.
        act_layer: activation of the default MLP encoder.
        norm_layer: per-sample normalisation of the default MLP encoder (e.g.
            ``nn.LayerNorm``), or ``None``.
        dropout: dropout of the default MLP encoder.
        presence_features: append one 0/1 presence indicator per modality to the
            concatenation.
        align: ``"pool"`` or ``"tokens"`` (see above).
        encoder: a module mapping ``(..., d_cat) -> (..., d_out)`` used instead of
            the default MLP; ``d_cat`` is :meth:`concat_dim` of the same
            ``input_dims`` and ``presence_features``. When given, ``hidden_dims``,
            ``act_layer``, ``norm_layer`` and ``dropout`` are not used. It must act
            on each sample independently (no BatchNorm).
    """

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {
        "dropout": Float(0.0, 0.5),
        "presence_features": Categorical((True, False)),
    }

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dims: Sequence[PositiveInt] = (256,),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: Rate = 0.0,
        presence_features: bool = True,
        align: Literal["pool", "tokens"] = "pool",
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        self.presence_features = bool(presence_features)
        self.align = align
        self.concat_dim = self.concat_dim_for(self.input_dims, presence_features=self.presence_features)
        custom_encoder = encoder is not None
        if encoder is None:
            encoder = Mlp(
                self.concat_dim,
                self.output_dim,
                hidden_dims=tuple(hidden_dims),
                act_layer=act_layer,
                norm_layer=norm_layer,
                dropout=dropout,
            )
        self.encoder = encoder
        #: a custom encoder's output width is checked on every call; the default MLP's is known
        self._check_encoder_output = custom_encoder

    cost_text = CostText(
        options=("hidden_dims", "presence_features", "align"),
        symbols="H = hidden_dims[0]",
        params_big_o="O(m d H + H o)",
        flops_big_o="O(m d H + H o)",
        params_exact="(m(d+1)+1) H + (H+1) o",
        flops_exact="2 (m(d+1) H + H o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        (hidden,) = cls.default("hidden_dims")
        cat = m * d + (m if cls.default("presence_features") else 0)
        o = output_dim
        return head_cost(cat, hidden, o)

    @staticmethod
    def concat_dim_for(input_dims: Mapping[str, int], *, presence_features: bool = True) -> int:
        """``d_cat``: the width a custom ``encoder`` must accept for these options."""
        return sum(input_dims.values()) + (len(input_dims) if presence_features else 0)

    def _concat_pooled(self, batch: FusionBatch) -> tuple[Tensor, None]:
        parts = batch.pooled_all()
        if self.presence_features:
            if batch.all_present:  # the indicators are all 1: no bool presence to build and convert
                x = parts[0]
                parts.append(x.new_ones((x.shape[0], len(self.modalities))))
            else:
                parts.append(batch.present.to(parts[0].dtype))
        return torch.cat(parts, dim=-1), None

    def _concat_tokens(self, batch: FusionBatch) -> tuple[Tensor, Tensor]:
        first = self.modalities[0]
        length = None
        for mod in self.modalities:
            x = batch.inputs[mod]
            if x.dim() != 3:
                raise FusionError(
                    f"early(align='tokens'): modality {mod!r}: expected a sequence (b, t, d), "
                    f"got shape {tuple(x.shape)}"
                )
            if length is None:
                length = x.shape[1]
            elif x.shape[1] != length:
                raise FusionError(
                    f"early(align='tokens'): modality {mod!r}: expected {length} tokens "
                    f"(as {first!r}), got {x.shape[1]}"
                )
        tokens = torch.stack([batch.token_masks[mod] for mod in self.modalities], dim=-1)  # (b, t, m)
        parts = [batch.inputs[mod] for mod in self.modalities]
        if self.presence_features:
            parts.append(tokens.to(parts[0].dtype))
        return torch.cat(parts, dim=-1), tokens.any(dim=-1)

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """``(b, d_out)``; intermediates: ``extras["concat"]`` (``(b, d_cat)``, or
        ``(b, t, d_cat)`` with ``align="tokens"``) and ``present``."""
        if self.align == "tokens":
            concat, valid = self._concat_tokens(batch)
        else:
            concat, valid = self._concat_pooled(batch)
        h = self.encoder(concat)
        if self._check_encoder_output and h.shape[-1] != self.output_dim:
            raise FusionError(
                f"early: encoder output: expected last dim {self.output_dim}, got {h.shape[-1]}"
            )
        if valid is not None:
            h = masked_mean(h, valid, dim=1)
        if not need_intermediates:
            return h, None
        info = FusionIntermediates(present=batch.present)
        info.extras["concat"] = concat
        return h, info

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, concat_dim={self.concat_dim}, "
            f"presence_features={self.presence_features}, align={self.align!r}"
        )
