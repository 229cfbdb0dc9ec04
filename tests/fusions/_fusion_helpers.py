"""Helpers shared by the fusion tests.

- ``check_contract``: every parameter trains, a missing modality does not leak, the
  state dict round-trips (used by the early, late and gated tests).
- ``check_state_dict_round_trip``: two differently seeded fusions agree once one
  loads the other's state dict.
- The transformer-family references (bottleneck, cross_modal_transformer): a
  batch of three modalities with padding and missing data (``mixed_inputs``) and
  the layers written out by hand (``ln``, ``lin``, ``attend``, ``block``) with a
  module's own weights, run on one sample's valid tokens (``valid_tokens``).

Shape legend: ``b`` batch, ``t`` tokens, ``d`` features, ``h`` heads.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mmfuse


# ------------------------------------------------------------------- contract
def check_contract(fusion: mmfuse.Fusion, inputs: dict[str, Tensor], masks: dict[str, Tensor], missing: str) -> None:
    """Every parameter trains; a missing modality's values do not leak; state_dict round-trips."""
    b = next(iter(inputs.values())).shape[0]
    fusion.train()
    out = fusion(inputs, masks)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"
    fusion.eval()
    present = torch.tensor([True, False] * (b // 2))
    mk = {**masks, missing: present if inputs[missing].dim() == 2 else masks[missing] & present[:, None]}
    keep = present.view(-1, *([1] * (inputs[missing].dim() - 1)))
    noisy = {**inputs, missing: torch.where(keep, inputs[missing], torch.randn_like(inputs[missing]) * 50)}
    out = fusion(inputs, mk)
    torch.testing.assert_close(fusion(noisy, mk), out)
    clone = copy.deepcopy(fusion)
    for p in clone.parameters():
        p.data.normal_()
    clone.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(clone(inputs, mk), out, rtol=0, atol=0)


def check_state_dict_round_trip(
    make: Callable[[], mmfuse.Fusion], inputs: dict[str, Tensor], masks: dict[str, Tensor]
) -> None:
    """Fusions built under seeds 0 and 1 differ, and agree exactly after ``load_state_dict``."""
    torch.manual_seed(0)
    a = make()
    torch.manual_seed(1)
    b = make()
    assert not torch.equal(a(inputs, masks), b(inputs, masks))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(inputs, masks), b(inputs, masks))


# ------------------------------------------------- transformer-family references
MIXED_DIMS = {"audio": 5, "image": 3, "text": 4}
MIXED_LENGTHS = {"audio": 4, "text": 6}  # image is a vector
MIXED_B = 4


def mixed_inputs(seed: int = 1) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``MIXED_B`` samples: audio and text padded sequences, image a vector; audio is
    missing in sample 2 and image in sample 3."""
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "audio": torch.randn(MIXED_B, MIXED_LENGTHS["audio"], MIXED_DIMS["audio"], generator=g),
        "image": torch.randn(MIXED_B, MIXED_DIMS["image"], generator=g),
        "text": torch.randn(MIXED_B, MIXED_LENGTHS["text"], MIXED_DIMS["text"], generator=g),
    }
    masks = {
        "audio": torch.arange(4)[None] < torch.tensor([4, 1, 0, 2])[:, None],  # sample 2: audio missing
        "image": torch.tensor([True, True, True, False]),  # sample 3: image missing
        "text": torch.arange(6)[None] < torch.tensor([6, 3, 5, 2])[:, None],
    }
    return inputs, masks


def ln(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm by hand."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def lin(layer: nn.Linear, x: Tensor) -> Tensor:
    """``x W^T + b`` by hand."""
    return x @ layer.weight.T + layer.bias


def attend(attn: nn.Module, q_in: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor]:
    """Plain multi-head attention of ``q_in (t_q, d)`` over ``kv_in (t_k, d)``; every key valid.

    Returns the ``(t_q, d)`` output and the ``(h, t_q, t_k)`` weights.
    """
    dh = attn.dim // attn.num_heads
    q = lin(attn.q_proj, q_in).view(-1, attn.num_heads, dh).transpose(0, 1)
    k = lin(attn.k_proj, kv_in).view(-1, attn.num_heads, dh).transpose(0, 1)
    v = lin(attn.v_proj, kv_in).view(-1, attn.num_heads, dh).transpose(0, 1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # (h, t_q, t_k)
    out = (weights @ v).transpose(0, 1).reshape(q_in.shape[0], attn.dim)
    return lin(attn.out_proj, out), weights


def block(module: nn.Module, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One pre-norm transformer block by hand: self-attention, or cross-attention over ``context``."""
    q = ln(module.norm1, x)
    kv = q if context is None else ln(module.norm_kv, context)
    a, weights = attend(module.attn, q, kv)
    x = x + a
    lin1, lin2 = module.mlp.fc1, module.mlp.fc_out
    return x + lin(lin2, F.gelu(lin(lin1, ln(module.norm2, x)))), weights


def valid_tokens(fusion: mmfuse.Fusion, inputs: dict, masks: dict, n: int) -> dict[str, Tensor]:
    """Sample ``n``'s valid tokens of each present modality through ``fusion.proj``
    (a vector is one token; padded tokens and missing modalities are dropped)."""
    xs = {}
    for mod in fusion.modalities:
        x = inputs[mod][n]
        mask = masks.get(mod)
        if x.dim() == 1:
            x = x[None]
            valid = torch.ones(1, dtype=torch.bool) if mask is None else mask[n].reshape(1)
        else:
            valid = torch.ones(x.shape[0], dtype=torch.bool) if mask is None else mask[n]
            if valid.dim() == 0:
                valid = valid.expand(x.shape[0])
        if valid.any():
            xs[mod] = lin(fusion.proj[mod], x[valid])
    return xs
