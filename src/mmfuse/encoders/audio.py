"""A 1-D convolution stack over time for spectrograms ``(b, f, t)``.

Shape legend: ``b`` batch, ``f`` frequency bins (the conv's input channels), ``t``
frames, ``d_out`` output features. Masks are bool, True means keep: ``(b,)``
presence or ``(b, t)`` valid frames (padding of short clips).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from mmfuse.encoders._base import (
    Encoder,
    EncoderError,
    register_encoder_kind,
    token_mask,
    zero_missing_tokens,
)
from mmfuse.encoders.image import _groups
from mmfuse.functional import masked_mean

__all__ = ["AudioEncoder"]


class AudioEncoder(Encoder):
    """Conv1d (frequency bins as channels) -> GroupNorm -> act, repeated; masked mean over
    valid frames; linear.

    Convolutions keep the number of frames (``padding = kernel_size // 2``), so a
    ``(b, t)`` frame mask still lines up with their output; padded frames are zeroed
    at the input and excluded from the mean.

    Args:
        freq_bins: ``f``.
        out_dim: ``d_out``.
        channels: output channels of each conv layer.
        kernel_size: odd temporal kernel size.
        groups: GroupNorm groups (capped at each layer's channels).
        act_layer: activation class.
        dropout: dropout before the final linear.
    """

    outputs_tokens = False

    def __init__(
        self,
        freq_bins: int,
        out_dim: int,
        *,
        channels: Sequence[int] = (64, 64),
        kernel_size: int = 5,
        groups: int = 8,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise EncoderError(f"AudioEncoder: kernel_size: expected an odd positive int, got {kernel_size!r}")
        if not channels:
            raise EncoderError("AudioEncoder: channels: expected at least one layer, got none")
        self.freq_bins = int(freq_bins)
        self.out_dim = int(out_dim)
        layers: list[nn.Module] = []
        prev = self.freq_bins
        for width in channels:
            layers += [
                nn.Conv1d(prev, width, kernel_size=kernel_size, padding=kernel_size // 2),
                nn.GroupNorm(_groups(groups, width), width),
                act_layer(),
            ]
            prev = width
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(prev, self.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(b, f, t)`` and ``(b,)`` or ``(b, t)`` mask -> ``(b, d_out)`` and ``(b,)``."""
        if x.dim() != 3 or x.shape[1] != self.freq_bins:
            raise EncoderError(
                f"AudioEncoder: expected input shape (b, {self.freq_bins}, t), got {tuple(x.shape)}"
            )
        frames = token_mask(mask, x.transpose(1, 2))  # (b, t)
        x = zero_missing_tokens(x.transpose(1, 2), frames).transpose(1, 2)
        h = self.convs(x).transpose(1, 2)  # (b, t, channels)
        pooled = masked_mean(h, frames, dim=1)
        return self.proj(self.dropout(pooled)), frames.any(dim=1)


@register_encoder_kind("audio", shape="(f, t)")
def _audio(shape: tuple[int, ...], meta: dict[str, Any], out_dim: int, options: dict[str, Any]) -> Encoder:
    return AudioEncoder(shape[0], out_dim, **options)
