"""``cross_modal_transformer``: parity with a hand-written reference using the module's weights.

The reference runs one sample at a time on the valid tokens only (padded tokens and
missing modalities are dropped, not masked), with attention written as plain
``softmax(q k^T / sqrt(d_h)) v``:

    cross(z, x_j) = z' + MLP(LN_2(z')),  z' = z + W_o Attn(LN_1(z), LN_kv(x_j)) + b_o
    stream_{i<-j} = cross^L(x_i, x_j)          (no attention term when source j is missing:
                                                z' = z, so the target passes through)
    u_i = mean_tokens LN(self^S([stream_{i<-j}]_j))   (zeros when target i is missing)
    out = W [u_1; ...; u_m] + b   ("concat")   or   W mean_{i present} u_i + b   ("mean")
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _fusion_helpers import (
    MIXED_B,
    MIXED_DIMS,
    block,
    check_state_dict_round_trip,
    lin,
    ln,
    mixed_inputs,
    valid_tokens,
)

import mmfuse
from mmfuse import FusionError

DIMS = MIXED_DIMS  # audio and text are sequences, image a vector
OUT = 3
B = MIXED_B
K = 4
H = 2


def _reference(fusion: mmfuse.Fusion, inputs: dict, masks: dict, n: int) -> tuple[torch.Tensor, dict]:
    """Output of sample ``n`` and every attention map of it (valid queries x valid keys)."""
    xs = valid_tokens(fusion, inputs, masks, n)
    weights: dict[str, torch.Tensor] = {}
    per_target = []
    for i, target in enumerate(fusion.modalities):
        if target not in xs:
            per_target.append(torch.zeros(fusion.stream_width))
            continue
        sources = [m for m in fusion.modalities if m != target]
        streams = []
        for stream, source in zip(fusion.streams[i], sources, strict=True):
            z = xs[target]
            if source not in xs:
                for layer in stream:  # no keys: only the residual and MLP path
                    lin1, lin2 = layer.mlp.fc1, layer.mlp.fc_out
                    z = z + lin(lin2, F.gelu(lin(lin1, ln(layer.norm2, z))))
                streams.append(z)
                continue
            for layer_idx, layer in enumerate(stream):
                z, w = block(layer, z, xs[source])
                weights[f"{target}->{source}/layer{layer_idx}"] = w
            streams.append(z)
        z = torch.cat(streams, dim=-1)
        for layer_idx, layer in enumerate(fusion.self_layers[i]):
            z, w = block(layer, z)
            weights[f"{target}/self{layer_idx}"] = w
        per_target.append(ln(fusion.norms[i], z).mean(0))
    if fusion.combine == "concat":
        combined = torch.cat(per_target)
    else:
        present = [m in xs for m in fusion.modalities]
        combined = sum(u for u, p in zip(per_target, present, strict=True) if p) / sum(present)
    return lin(fusion.out, combined), weights


def _fusion(dims: dict | None = None, **options: object) -> mmfuse.Fusion:
    base = {"dim": K, "num_heads": H, "mlp_ratio": 2.0}
    return mmfuse.create_fusion(
        "cross_modal_transformer", input_dims=dims or DIMS, output_dim=OUT, **{**base, **options}
    ).eval()


def _mask_of(masks: dict, mod: str, n: int) -> torch.Tensor:
    m = masks[mod][n]
    return m.reshape(1) if m.dim() == 0 else m


@pytest.mark.parametrize(
    "options",
    [{"num_layers": 1}, {"num_layers": 2, "num_self_layers": 0}, {"num_layers": 1, "num_self_layers": 2, "combine": "mean"}],
)
def test_matches_per_sample_reference(options: dict) -> None:
    fusion = _fusion(**options)
    inputs, masks = mixed_inputs()
    out, info = fusion(inputs, masks, return_intermediates=True)
    torch.testing.assert_close(fusion(inputs, masks), out, rtol=1e-5, atol=1e-6)
    for n in range(B):
        expected, weights = _reference(fusion, inputs, masks, n)
        torch.testing.assert_close(out[n], expected, rtol=1e-4, atol=1e-5)
        for key, w in weights.items():
            head = key.split("/")[0]  # "target->source" or "target" (self layers)
            target, source = head.split("->") if "->" in head else (head, head)
            q, k = _mask_of(masks, target, n), _mask_of(masks, source, n)
            got = info.attention[key][n]
            torch.testing.assert_close(got[:, q][:, :, k], w, rtol=1e-4, atol=1e-5)
            assert torch.equal(got[:, :, ~k], torch.zeros_like(got[:, :, ~k]))


def test_streams_are_one_per_ordered_pair() -> None:
    fusion = _fusion(num_layers=3)
    assert fusion.stream_width == 2 * K
    assert len(fusion.streams) == 3 and all(len(s) == 2 for s in fusion.streams)
    assert all(len(stream) == 3 for s in fusion.streams for stream in s)
    inputs, masks = mixed_inputs()
    _, info = fusion(inputs, masks, return_intermediates=True)
    pairs = {k.split("/")[0] for k in info.attention if "->" in k}
    assert pairs == {f"{a}->{b}" for a in DIMS for b in DIMS if a != b}


def test_missing_source_contributes_nothing_and_missing_target_is_excluded() -> None:
    fusion = _fusion(num_layers=1, combine="mean")
    inputs, masks = mixed_inputs()
    out = fusion(inputs, masks)
    noisy = {**inputs, "image": inputs["image"] + 10.0 * torch.randn(B, DIMS["image"])}
    # image is missing in sample 3: changing it changes nothing there
    torch.testing.assert_close(fusion(noisy, masks)[3], out[3])
    assert not torch.allclose(fusion(noisy, masks)[0], out[0])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "options",
    [
        {"num_layers": 0},
        {"num_self_layers": -1},
        {"num_heads": 3},
        {"dim": 0},
        {"mlp_ratio": -1.0},
        {"dropout": 1.0},
        {"combine": "sum"},
    ],
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(FusionError):
        _fusion(**options)


def test_one_modality_is_refused() -> None:
    with pytest.raises(FusionError, match="at least 2 modalities"):
        _fusion({"audio": 5})


def test_state_dict_round_trip_is_exact() -> None:
    check_state_dict_round_trip(_fusion, *mixed_inputs())
