"""``mmfuse.layers.Mlp``: stable weight names and the conversion of 0.1 checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.errors import CheckpointError
from mmfuse.layers import Mlp


def _old_sequential(in_dim, out_dim, hidden, *, norm=False, dropout=0.0, act=nn.GELU) -> nn.Sequential:
    """The 0.1 layout of Mlp, written out: Linear, [norm], act, [Dropout] per hidden layer."""
    layers: list[nn.Module] = []
    prev = in_dim
    for w in hidden:
        layers.append(nn.Linear(prev, w))
        if norm:
            layers.append(nn.LayerNorm(w))
        layers.append(act())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = w
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def test_weight_names_do_not_depend_on_dropout_or_norm() -> None:
    plain = Mlp(4, 3, hidden_dims=(8, 6))
    dropped = Mlp(4, 3, hidden_dims=(8, 6), dropout=0.3)
    assert list(plain.state_dict()) == list(dropped.state_dict())
    assert set(plain.state_dict()) == {f"{n}.{p}" for n in ("fc1", "fc2", "fc_out") for p in ("weight", "bias")}
    # a checkpoint trained with dropout loads into a model without it, and gives the same eval output
    torch.manual_seed(0)
    dropped = Mlp(4, 3, hidden_dims=(8, 6), dropout=0.3).eval()
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(5, 4)
    torch.testing.assert_close(plain.eval()(x), dropped(x), rtol=0, atol=0)
    normed = Mlp(4, 3, hidden_dims=(8,), norm_layer=nn.LayerNorm)
    assert {"norm1.weight", "norm1.bias"} <= set(normed.state_dict())


def test_forward_is_the_sequence_of_layers() -> None:
    mlp = Mlp(4, 3, hidden_dims=(8,), norm_layer=nn.LayerNorm, act_layer=nn.Tanh).eval()
    x = torch.randn(2, 7, 4)
    expected = mlp.fc_out(torch.tanh(mlp.norm1(mlp.fc1(x))))
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize(("norm", "dropout", "hidden"), [(False, 0.0, (8,)), (False, 0.2, (8, 6)), (True, 0.1, (8, 6)), (True, 0.0, ())])
def test_old_sequential_checkpoint_is_converted(norm: bool, dropout: float, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    old = _old_sequential(4, 3, hidden, norm=norm, dropout=dropout).eval()
    # the 0.1 Mlp held its layers in `net`; nest it in a parent to check prefixes too
    old_state = {f"head.net.{k}": v for k, v in old.state_dict().items()}
    parent = nn.Module()
    parent.head = Mlp(4, 3, hidden_dims=hidden, norm_layer=nn.LayerNorm if norm else None, dropout=dropout)
    result = parent.load_state_dict(old_state)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(6, 4)
    torch.testing.assert_close(parent.head.eval()(x), old(x), rtol=0, atol=0)


def test_old_checkpoint_of_another_depth_is_refused() -> None:
    old = _old_sequential(4, 3, (8, 6))
    with pytest.raises(CheckpointError, match="expected 2 linear layers, got 3"):
        Mlp(4, 3, hidden_dims=(8,)).load_state_dict({f"net.{k}": v for k, v in old.state_dict().items()})
