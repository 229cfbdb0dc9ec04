"""``tensor`` (TFN) and ``low_rank`` (LMF): parity with the equations written out here.

TFN:  z = vec([h_1; 1] (x) [h_2; 1] (x) ...),  out = W z + b
LMF:  out = sum_r w_r prod_i ([h_i; 1] W_i^(r)) + b
with h_i = A_i pooled(x_i) + c_i, and [0; 1] in place of [h_i; 1] for a missing modality.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import mmfuse
from mmfuse import FusionError

DIMS = {"audio": 3, "image": 2, "text": 4}
OUT = 3
B = 4


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "audio": torch.randn(B, DIMS["audio"], generator=g),
        "image": torch.randn(B, 5, DIMS["image"], generator=g),
        "text": torch.randn(B, DIMS["text"], generator=g),
    }


def _image_mask() -> torch.Tensor:
    lengths = torch.tensor([5, 2, 1, 4])
    return torch.arange(5)[None, :] < lengths[:, None]


def _hand_factors(fusion: mmfuse.Fusion, inputs: dict, masks: dict) -> list[torch.Tensor]:
    """[h_i; 1] per modality, by hand: masked mean of the valid tokens, projection, [0; 1] if missing."""
    zs = []
    for mod in sorted(DIMS):
        x = inputs[mod]
        if x.dim() == 3:
            keep = masks.get(mod, torch.ones(x.shape[:2], dtype=torch.bool)).float()
            x = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        present = masks.get(mod)
        if present is not None and present.dim() == 2:
            present = present.any(1)
        if fusion.dim is not None:
            lin = fusion.proj[mod]
            x = x @ lin.weight.T + lin.bias
        if present is not None:
            x = x * present[:, None].float()
        zs.append(torch.cat([x, torch.ones(B, 1)], dim=1))
    return zs


def _hand_tensor_fusion(fusion: mmfuse.Fusion, inputs: dict, masks: dict) -> torch.Tensor:
    """Explicit outer product (loops over feature indices, first modality slowest), then W z + b."""
    z1, z2, z3 = _hand_factors(fusion, inputs, masks)
    cols = []
    for i, j, k in itertools.product(range(z1.shape[1]), range(z2.shape[1]), range(z3.shape[1])):
        cols.append(z1[:, i] * z2[:, j] * z3[:, k])
    z = torch.stack(cols, dim=1)
    return z @ fusion.out.weight.T + fusion.out.bias


@pytest.mark.parametrize("dim", [2, None])
def test_tensor_matches_explicit_outer_product(dim: int | None) -> None:
    fusion = mmfuse.create_fusion("tensor", input_dims=DIMS, output_dim=OUT, dim=dim)
    k = [(d if dim is None else dim) + 1 for _, d in sorted(DIMS.items())]
    assert fusion.out.in_features == k[0] * k[1] * k[2]
    inputs = _inputs()
    masks = {"image": _image_mask()}
    torch.testing.assert_close(fusion(inputs, masks), _hand_tensor_fusion(fusion, inputs, masks))


def test_tensor_missing_modality_uses_constant_factor() -> None:
    fusion = mmfuse.create_fusion("tensor", input_dims=DIMS, output_dim=OUT, dim=2)
    inputs = _inputs()
    masks = {"audio": torch.tensor([True, False, True, False]), "image": _image_mask()}
    out = fusion(inputs, masks)
    torch.testing.assert_close(out, _hand_tensor_fusion(fusion, inputs, masks))
    # sample 1 without audio is the product over image and text only: [0; 1] picks
    # the weight columns of audio's "1" entry (the last block of the audio axis)
    k_a, k_i, k_t = 3, 3, 3
    w = fusion.out.weight.view(OUT, k_a, k_i, k_t)[:, -1]  # (OUT, k_i, k_t)
    z_i, z_t = _hand_factors(fusion, inputs, masks)[1:]
    expected = torch.einsum("oij,i,j->o", w, z_i[1], z_t[1]) + fusion.out.bias
    torch.testing.assert_close(out[1], expected)


def test_tensor_refuses_too_large_product() -> None:
    dims = {"a": 7, "b": 7, "c": 7}
    # (7 + 1)^3 = 512: accepted at max_size 512, refused at 511
    mmfuse.create_fusion("tensor", input_dims=dims, output_dim=2, dim=None, max_size=512)
    with pytest.raises(FusionError, match=r"prod_i \(k_i \+ 1\) = \(7 \+ 1\) \* \(7 \+ 1\) \* \(7 \+ 1\) = 512"):
        mmfuse.create_fusion("tensor", input_dims=dims, output_dim=2, dim=None, max_size=511)
    with pytest.raises(FusionError, match="exceeds max_size=1048576"):
        mmfuse.create_fusion("tensor", input_dims={f"m{i}": 4 for i in range(5)}, output_dim=2, dim=16)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("tensor", {"dim": 0}),
        ("tensor", {"max_size": 0}),
        ("tensor", {"dropout": 1.0}),
        ("low_rank", {"rank": 0}),
        ("low_rank", {"rank": 2.0}),
        ("low_rank", {"dim": -1}),
        ("low_rank", {"dropout": -0.1}),
    ],
)
def test_bad_options_raise(name: str, options: dict) -> None:
    with pytest.raises(FusionError):
        mmfuse.create_fusion(name, input_dims=DIMS, output_dim=OUT, **options)


def test_low_rank_factors_are_registered_per_modality() -> None:
    fusion = mmfuse.create_fusion("low_rank", input_dims=DIMS, output_dim=OUT, dim=2, rank=5)
    assert isinstance(fusion.factors, torch.nn.ParameterDict)
    assert {k: tuple(v.shape) for k, v in fusion.factors.items()} == {m: (5, 3, OUT) for m in DIMS}
    names = {n for n, _ in fusion.named_parameters()}
    assert {f"factors.{m}" for m in DIMS} <= names


@pytest.mark.parametrize("rank_weights", [False, True])
@pytest.mark.parametrize("dim", [2, None])
def test_low_rank_equals_tensor_with_rebuilt_weight(rank_weights: bool, dim: int | None) -> None:
    low = mmfuse.create_fusion(
        "low_rank", input_dims=DIMS, output_dim=OUT, dim=dim, rank=3, rank_weights=rank_weights
    )
    if rank_weights:
        with torch.no_grad():
            low.rank_weight.copy_(torch.tensor([0.5, -1.5, 2.0]))
    full = mmfuse.create_fusion("tensor", input_dims=DIMS, output_dim=OUT, dim=dim)
    w_a, w_i, w_t = (low.factors[m].detach() for m in sorted(DIMS))
    w_r = low.rank_weight.detach() if rank_weights else torch.ones(3)
    # W[a, i, t, o] = sum_r w_r W_audio[r, a, o] W_image[r, i, o] W_text[r, t, o]
    weight = torch.einsum("r,rao,rio,rto->aito", w_r, w_a, w_i, w_t)
    with torch.no_grad():
        full.out.weight.copy_(weight.reshape(-1, OUT).T)
        full.out.bias.copy_(low.bias)
        for mod in full.proj:
            full.proj[mod].load_state_dict(low.proj[mod].state_dict())
    inputs = _inputs()
    masks = {"image": _image_mask(), "text": torch.tensor([True, True, False, True])}
    torch.testing.assert_close(low(inputs, masks), full(inputs, masks), rtol=1e-4, atol=1e-5)


def test_low_rank_matches_formula_by_hand() -> None:
    low = mmfuse.create_fusion("low_rank", input_dims=DIMS, output_dim=OUT, dim=2, rank=2, rank_weights=True)
    inputs = _inputs()
    masks = {"audio": torch.tensor([False, True, True, True]), "image": _image_mask()}
    zs = _hand_factors(low, inputs, masks)
    expected = torch.zeros(B, OUT)
    for r in range(2):
        term = torch.ones(B, OUT)
        for mod, z in zip(sorted(DIMS), zs, strict=True):
            term = term * (z @ low.factors[mod][r])
        expected = expected + low.rank_weight[r] * term
    expected = expected + low.bias
    torch.testing.assert_close(low(inputs, masks), expected)


@pytest.mark.parametrize("name", ["tensor", "low_rank"])
def test_state_dict_round_trip_is_exact(name: str) -> None:
    opts = {"rank_weights": True} if name == "low_rank" else {}
    torch.manual_seed(0)
    a = mmfuse.create_fusion(name, input_dims=DIMS, output_dim=OUT, dim=2, **opts)
    torch.manual_seed(1)
    b = mmfuse.create_fusion(name, input_dims=DIMS, output_dim=OUT, dim=2, **opts)
    inputs = _inputs()
    assert not torch.equal(a(inputs), b(inputs))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(inputs), b(inputs))


@pytest.mark.parametrize("name", ["tensor", "low_rank"])
def test_fixed_weights_worked_by_hand(name: str) -> None:
    torch.manual_seed(0)
    fusion = mmfuse.create_fusion(name, input_dims={"a": 2, "b": 2}, output_dim=2, dim=None)
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(torch.linspace(-1.0, 1.0, p.numel()).view_as(p))
    out = fusion({"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[0.5, -1.0]])})
    # z = [1, 2, 1] (x) [0.5, -1, 1]; worked out by hand from the linspace weights
    if name == "tensor":
        z = torch.tensor([0.5, -1.0, 1.0, 1.0, -2.0, 2.0, 0.5, -1.0, 1.0])
        w = torch.linspace(-1.0, 1.0, 18).view(2, 9)
        expected = z @ w.T + torch.linspace(-1.0, 1.0, 2)
    else:
        fa = torch.linspace(-1.0, 1.0, 4 * 3 * 2).view(4, 3, 2)
        fb = fa.clone()
        ta = torch.einsum("k,rko->ro", torch.tensor([1.0, 2.0, 1.0]), fa)
        tb = torch.einsum("k,rko->ro", torch.tensor([0.5, -1.0, 1.0]), fb)
        expected = (ta * tb).sum(0) + torch.linspace(-1.0, 1.0, 2)
    torch.testing.assert_close(out[0], expected)
