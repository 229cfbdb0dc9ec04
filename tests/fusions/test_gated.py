"""Gated fusion and the GMU against their equations written out by hand."""

from __future__ import annotations

import pytest
import torch
from _fusion_helpers import check_contract
from torch import Tensor

import mmfuse
from mmfuse import FusionError
from mmfuse import functional as MF

DIMS2 = {"video": 4, "audio": 3}  # sorted order: audio (h_1), video (h_2)
DIMS3 = {"video": 4, "audio": 3, "text": 5}  # sorted: audio, text, video
B = 6
OUT = 5


def make(dims: dict[str, int], **options: object) -> mmfuse.Fusion:
    torch.manual_seed(0)
    return mmfuse.create_fusion("gated", input_dims=dims, output_dim=OUT, **options).eval()


def vectors(dims: dict[str, int], seed: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in dims.items()}


def linear(x: Tensor, layer: torch.nn.Linear) -> Tensor:
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


@pytest.mark.parametrize("gate", ["scalar", "feature"])
def test_two_modalities_follow_the_sigmoid_gate(gate: str) -> None:
    fusion = make(DIMS2, gate=gate)
    x = vectors(DIMS2)
    out, info = fusion(x, return_intermediates=True)
    h1 = linear(x["audio"], fusion.proj["audio"])
    h2 = linear(x["video"], fusion.proj["video"])
    g = torch.sigmoid(torch.cat([h1, h2], dim=1) @ fusion.gate_layer.weight.T + fusion.gate_layer.bias)
    assert g.shape == (B, 1 if gate == "scalar" else OUT)
    torch.testing.assert_close(out, g * h1 + (1 - g) * h2)
    torch.testing.assert_close(out, MF.gated_combine(h1, h2, g))
    torch.testing.assert_close(info.gates["gate"], g)
    torch.testing.assert_close(info.contributions["audio"], g * h1)
    torch.testing.assert_close(info.contributions["video"], (1 - g) * h2)
    torch.testing.assert_close(info.modality_weights, torch.stack([g.mean(1), 1 - g.mean(1)], dim=1))


@pytest.mark.parametrize("gate", ["scalar", "feature"])
def test_two_modalities_one_missing_gives_the_present_projection(gate: str) -> None:
    fusion = make(DIMS2, gate=gate)
    x = vectors(DIMS2)
    audio_present = torch.tensor([True, False, True, True, False, True])
    video_present = torch.tensor([True, True, False, True, True, True])
    out, info = fusion(x, {"audio": audio_present, "video": video_present}, return_intermediates=True)
    h1 = linear(x["audio"], fusion.proj["audio"])
    h2 = linear(x["video"], fusion.proj["video"])
    torch.testing.assert_close(out[~audio_present], h2[~audio_present])
    torch.testing.assert_close(out[~video_present], h1[~video_present])
    g = info.gates["gate"]
    assert bool((g[~audio_present] == 0).all()) and bool((g[~video_present] == 1).all())
    torch.testing.assert_close(info.modality_weights[~audio_present], torch.tensor([[0.0, 1.0]] * 2))
    torch.testing.assert_close(info.modality_weights[~video_present], torch.tensor([[1.0, 0.0]]))
    both = audio_present & video_present
    gate_both = torch.sigmoid(torch.cat([h1, h2], 1) @ fusion.gate_layer.weight.T + fusion.gate_layer.bias)
    torch.testing.assert_close(out[both], (gate_both * h1 + (1 - gate_both) * h2)[both])


@pytest.mark.parametrize("gate", ["scalar", "feature"])
def test_more_modalities_use_a_masked_softmax_gate(gate: str) -> None:
    fusion = make(DIMS3, gate=gate)
    x = vectors(DIMS3)
    text_present = torch.tensor([True, False, True, True, False, True])
    out, info = fusion(x, {"text": text_present}, return_intermediates=True)
    mods = ("audio", "text", "video")
    hs = [linear(x[m], fusion.proj[m]) for m in mods]
    hs[1] = hs[1] * text_present[:, None]  # a missing modality's projection enters the gate as zeros
    width = 1 if gate == "scalar" else OUT
    scores = linear(torch.cat(hs, 1), fusion.gate_layer).view(B, 3, width)
    expected_out = torch.zeros(B, OUT)
    for b in range(B):
        keep = [0, 2] if not text_present[b] else [0, 1, 2]
        w = torch.zeros(3, width)
        w[keep] = torch.softmax(scores[b, keep], dim=0)
        expected_out[b] = sum(w[i] * hs[i][b] for i in range(3))
        got = info.gates["gate"][b]
        torch.testing.assert_close(got, w.squeeze(-1) if gate == "scalar" else w)
        torch.testing.assert_close(info.modality_weights[b], w.mean(-1))
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(info.modality_weights.sum(1), torch.ones(B))
    assert bool((info.modality_weights[~text_present, 1] == 0).all())
    torch.testing.assert_close(sum(info.contributions.values()), out)


@pytest.mark.parametrize("bias", [False, True])
def test_gmu_two_modalities(bias: bool) -> None:
    fusion = make(DIMS2, unit="gmu", bias=bias)
    x = vectors(DIMS2)
    out, info = fusion(x, return_intermediates=True)
    h1 = torch.tanh(linear(x["audio"], fusion.proj["audio"]))
    h2 = torch.tanh(linear(x["video"], fusion.proj["video"]))
    z = torch.sigmoid(linear(torch.cat([x["audio"], x["video"]], 1), fusion.gate_layer))  # from raw inputs
    assert z.shape == (B, OUT)
    torch.testing.assert_close(out, z * h1 + (1 - z) * h2)
    torch.testing.assert_close(info.gates["gate"], z)
    if not bias:  # the paper's equations exactly: no bias anywhere
        assert all(p.dim() == 2 for p in fusion.parameters())


def test_gmu_more_modalities_softmax() -> None:
    fusion = make(DIMS3, unit="gmu", gate="scalar")
    x = vectors(DIMS3)
    out = fusion(x)
    mods = ("audio", "text", "video")
    hs = torch.stack([torch.tanh(linear(x[m], fusion.proj[m])) for m in mods], 1)
    z = torch.softmax(linear(torch.cat([x[m] for m in mods], 1), fusion.gate_layer), dim=1)  # (b, m)
    torch.testing.assert_close(out, (z[..., None] * hs).sum(1))


def test_sequences_are_pooled_by_masked_mean() -> None:
    fusion = make(DIMS2)
    x = vectors(DIMS2)
    g = torch.Generator().manual_seed(4)
    seq = torch.randn(B, 5, 4, generator=g)
    lengths = torch.tensor([5, 1, 3, 2, 4, 5])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    out = fusion({**x, "video": seq}, {"video": mask})
    pooled = (seq * mask[..., None]).sum(1) / lengths[:, None]
    torch.testing.assert_close(out, fusion({**x, "video": pooled}))


def test_gate_layer_sizes() -> None:
    assert make(DIMS2, gate="scalar").gate_layer.weight.shape == (1, 2 * OUT)
    assert make(DIMS2).gate_layer.weight.shape == (OUT, 2 * OUT)
    assert make(DIMS3).gate_layer.weight.shape == (3 * OUT, 3 * OUT)
    assert make(DIMS3, unit="gmu", gate="scalar").gate_layer.weight.shape == (3, 12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gate": "vector"}, r"gate: expected one of \['scalar', 'feature'\], got 'vector'"),
        ({"unit": "lstm"}, r"unit: expected one of \['linear', 'gmu'\], got 'lstm'"),
    ],
)
def test_bad_options_raise(options: dict, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        mmfuse.create_fusion("gated", input_dims=DIMS2, output_dim=OUT, **options)


def test_one_modality_raises() -> None:
    with pytest.raises(FusionError, match=r"expected at least 2 modalities, got 1"):
        mmfuse.create_fusion("gated", input_dims={"audio": 3}, output_dim=OUT)


@pytest.mark.parametrize("dims", [DIMS2, DIMS3], ids=["M2", "M3"])
@pytest.mark.parametrize(
    "options", [{"gate": "scalar"}, {"unit": "gmu"}, {"unit": "gmu", "gate": "scalar", "bias": False}], ids=str
)
def test_options_keep_the_contract(dims: dict[str, int], options: dict) -> None:
    fusion = make(dims, **options)
    g = torch.Generator().manual_seed(7)
    inputs = {**vectors(dims), "video": torch.randn(B, 3, 4, generator=g)}
    masks = {"video": torch.rand(B, 3, generator=g) > 0.3}
    masks["video"][:, 0] = True
    check_contract(fusion, inputs, masks, missing="video")
