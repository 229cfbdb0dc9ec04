"""A small CNN for images ``(b, c, h, w)``.

Shape legend: ``b`` batch, ``c`` channels, ``h``/``w`` height/width, ``d_out`` output
features. Masks are bool, True means keep (``(b,)`` presence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from mmfuse.encoders._base import (
    Encoder,
    EncoderError,
    presence_of,
    register_encoder_kind,
    zero_missing,
)

__all__ = ["ImageEncoder"]


class ImageEncoder(Encoder):
    """Conv3x3 -> GroupNorm -> act -> 2x2 max-pool per stage, global average pool, linear.

    GroupNorm (not BatchNorm) keeps every sample independent of the rest of its batch.

    Args:
        in_channels: ``c``.
        out_dim: ``d_out``.
        channels: output channels of each stage.
        groups: GroupNorm groups (capped at each stage's channels).
        act_layer: activation class.
        dropout: dropout before the final linear.
    """

    outputs_tokens = False

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        *,
        channels: Sequence[int] = (16, 32, 64),
        groups: int = 8,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channels:
            raise EncoderError("ImageEncoder: channels: expected at least one stage, got none")
        self.in_channels = int(in_channels)
        self.out_dim = int(out_dim)
        layers: list[nn.Module] = []
        prev = self.in_channels
        for width in channels:
            layers += [
                nn.Conv2d(prev, width, kernel_size=3, padding=1),
                nn.GroupNorm(_groups(groups, width), width),
                act_layer(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            prev = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(prev, self.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, c, h, w)`` and ``(b,)`` presence -> ``(b, d_out)`` and ``(b,)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise EncoderError(
                f"ImageEncoder: expected input shape (b, {self.in_channels}, h, w), got {tuple(x.shape)}"
            )
        if mask is not None and mask.dim() != 1:
            raise EncoderError(f"ImageEncoder: expected a (b,) presence mask, got shape {tuple(mask.shape)}")
        present = presence_of(mask, x)
        return self.net(zero_missing(x, present)), present


def _groups(groups: int, width: int) -> int:
    g = max(1, min(groups, width))
    while width % g:
        g -= 1
    return g


@register_encoder_kind("image", shape="(c, h, w)")
def _image(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    return ImageEncoder(shape[0], out_dim, **options)
