"""Small building blocks shared by fusions, encoders and heads.

Shape legend: ``b`` batch, ``t`` tokens, ``d`` features. Layers act on the last axis,
so ``(b, d)`` and ``(b, t, d)`` inputs both work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """Linear -> act -> dropout, repeated, then a final linear layer.

    Args:
        in_dim: input features.
        out_dim: output features.
        hidden_dims: widths of the hidden layers (empty: a single linear map).
        act_layer: activation class, instantiated once per hidden layer.
        norm_layer: optional normalisation class applied after each hidden linear
            (e.g. ``nn.LayerNorm``; it must act per sample: no BatchNorm in fusions).
        dropout: dropout after each hidden activation.
        bias: use biases.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dims: Sequence[int] = (),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden_dims:
            layers.append(nn.Linear(prev, width, bias=bias))
            if norm_layer is not None:
                layers.append(norm_layer(width))
            layers.append(act_layer())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, out_dim, bias=bias))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        return self.net(x)
