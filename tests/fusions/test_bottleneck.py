"""``bottleneck``: parity with a hand-written reference using the module's weights.

The reference runs one sample at a time on the valid tokens only (padded tokens and
missing modalities are dropped, not masked), with attention written as plain
``softmax(q k^T / sqrt(d_h)) v``:

    block(x)  = x' + MLP(LN_2(x')),  x' = x + W_o Attn(LN_1(x)) + b_o
    layers < fusion_layer:  x_i = block_i(x_i)
    later layers:           [x_i; f_i] = block_i([x_i; f]),  f = mean_{i present} f_i
    out = W mean_{i present}(mean_tokens LN(x_i)) + b
"""

from __future__ import annotations

import pytest
import torch
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
K = 8
H = 2


def _reference(fusion: mmfuse.Fusion, inputs: dict, masks: dict, n: int) -> tuple[torch.Tensor, dict]:
    """Output of sample ``n`` and its first-layer attention weights per modality."""
    xs = valid_tokens(fusion, inputs, masks, n)
    f = fusion.fusion_tokens
    first: dict[str, torch.Tensor] = {}
    for layer_idx, layer in enumerate(fusion.layers):
        blocks = dict(zip(fusion.modalities, layer, strict=True))
        if layer_idx < fusion.fusion_layer:
            for mod in xs:
                xs[mod], w = block(blocks[mod], xs[mod])
                first.setdefault(mod, w)
            continue
        updates = []
        for mod in xs:
            t = xs[mod].shape[0]
            joint, w = block(blocks[mod], torch.cat([xs[mod], f]))
            xs[mod] = joint[:t]
            updates.append(joint[t:])
            first.setdefault(mod, w)
        f = torch.stack(updates).mean(0)
    pooled = torch.stack([ln(fusion.norm, x).mean(0) for x in xs.values()]).mean(0)
    return lin(fusion.out, pooled), first


def _fusion(**options: object) -> mmfuse.Fusion:
    base = {"dim": K, "num_heads": H, "num_fusion_tokens": 3, "mlp_ratio": 2.0}
    return mmfuse.create_fusion("bottleneck", input_dims=DIMS, output_dim=OUT, **{**base, **options}).eval()


@pytest.mark.parametrize(("num_layers", "fusion_layer"), [(1, 0), (2, 1), (2, 2), (3, 1)])
def test_matches_per_sample_reference(num_layers: int, fusion_layer: int) -> None:
    fusion = _fusion(num_layers=num_layers, fusion_layer=fusion_layer)
    inputs, masks = mixed_inputs()
    out, info = fusion(inputs, masks, return_intermediates=True)
    torch.testing.assert_close(fusion(inputs, masks), out, rtol=1e-5, atol=1e-6)
    for n in range(B):
        expected, first = _reference(fusion, inputs, masks, n)
        torch.testing.assert_close(out[n], expected, rtol=1e-4, atol=1e-5)
        # first-layer weights of the valid queries over the valid keys; masked keys get 0
        for mod, w in first.items():
            got = info.attention[f"layer0/{mod}"][n]
            x_mask = masks[mod][n] if masks[mod].dim() == 2 else masks[mod][n].reshape(1)
            keys = x_mask if fusion_layer > 0 else torch.cat([x_mask, torch.ones(3, dtype=torch.bool)])
            torch.testing.assert_close(got[:, keys][:, :, keys], w, rtol=1e-4, atol=1e-5)
            assert torch.equal(got[:, :, ~keys], torch.zeros_like(got[:, :, ~keys]))


def test_fusion_tokens_carry_information_across_modalities() -> None:
    inputs, masks = mixed_inputs()
    changed = {**inputs, "text": inputs["text"] + 1.0}
    fused = _fusion(num_layers=2, fusion_layer=1)
    # text changes reach audio's tokens only through the fusion tokens
    _, a = fused(inputs, masks, return_intermediates=True)
    _, b = fused(changed, masks, return_intermediates=True)
    assert not torch.allclose(a.extras["fusion_tokens"], b.extras["fusion_tokens"])
    late = _fusion(num_layers=2, fusion_layer=2)
    assert late.fusion_tokens is None
    assert "fusion_tokens" not in late(inputs, masks, return_intermediates=True)[1].extras


def test_missing_modality_is_excluded_from_the_fusion_token_mean() -> None:
    fusion = _fusion(num_layers=2, fusion_layer=0)
    inputs, masks = mixed_inputs()
    out = fusion(inputs, masks)
    # sample 2 has no audio: same output as a fusion that never had audio, same weights
    two = mmfuse.create_fusion(
        "bottleneck", input_dims={"image": 3, "text": 4}, output_dim=OUT, dim=K, num_heads=H,
        num_fusion_tokens=3, mlp_ratio=2.0, num_layers=2, fusion_layer=0,
    ).eval()
    state = {k: v for k, v in fusion.state_dict().items() if "proj.audio" not in k}
    for key in list(state):
        if key.startswith("layers."):  # layers.{l}.{i}: shift modality index (audio was 0)
            parts = key.split(".")
            if parts[2] == "0":
                del state[key]
            else:
                parts[2] = str(int(parts[2]) - 1)
                state[".".join(parts)] = state.pop(key)
    two.load_state_dict(state)
    sub = {m: inputs[m][2:3] for m in ("image", "text")}
    torch.testing.assert_close(out[2:3], two(sub, {m: masks[m][2:3] for m in sub}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"fusion_layer": 3},
        {"fusion_layer": -1},
        {"num_layers": 0},
        {"num_fusion_tokens": 0},
        {"num_heads": 3},
        {"dim": 0},
        {"mlp_ratio": 0.0},
        {"dropout": 1.0},
    ],
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(FusionError):
        _fusion(**options)


def test_state_dict_round_trip_is_exact() -> None:
    check_state_dict_round_trip(_fusion, *mixed_inputs())
