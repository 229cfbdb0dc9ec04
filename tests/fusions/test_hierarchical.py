"""Parity and behaviour of ``hierarchical``: local fusions over groups, then a global fusion.

The reference is the composition done by hand with the fusion's own submodules: each
local fusion run only on the samples where its group is present, scattered back, and the
global fusion applied to those outputs with the group presence as its mask.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import mmfuse
from mmfuse import FusionError
from mmfuse.fusions.hierarchical import HierarchicalFusion, default_groups

DIMS = {"audio": 5, "image": 6, "text": 7, "video": 4}
LENGTHS = {"audio": 4, "image": 3, "text": 5, "video": 2}
B = 6


def make_inputs(seed: int = 1) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """audio and video as sequences, image and text as vectors."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for name, d in DIMS.items():
        if name in ("audio", "video"):
            t = LENGTHS[name]
            inputs[name] = torch.randn(B, t, d, generator=g)
            valid = torch.randint(1, t + 1, (B,), generator=g)
            masks[name] = torch.arange(t)[None, :] < valid[:, None]
        else:
            inputs[name] = torch.randn(B, d, generator=g)
            masks[name] = torch.ones(B, dtype=torch.bool)
    return inputs, masks


def by_hand(fusion: HierarchicalFusion, inputs: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
    """Global(local outputs), with each local fusion run on its group's present samples only."""
    outputs, presence = {}, {}
    for gname, group in zip(fusion.group_names, fusion.groups, strict=True):
        present = torch.stack([masks[m] if masks[m].dim() == 1 else masks[m].any(1) for m in group], 1).any(1)
        idx = present.nonzero()[:, 0]
        out = torch.zeros(B, fusion.local_dim)
        if len(group) == 1:
            (mod,) = group
            x = inputs[mod]
            if x.dim() == 3:
                w = masks[mod].float()[..., None]
                x = (x * w).sum(1) / w.sum(1).clamp_min(1)
            out[idx] = fusion.local[gname](x[idx])
        else:
            local = fusion.local[gname]
            out[idx] = local({m: inputs[m][idx] for m in group}, {m: masks[m][idx] for m in group})
        outputs[gname], presence[gname] = out, present
    return fusion.global_fusion(outputs, presence)


def test_default_groups_rule() -> None:
    assert default_groups(["b", "a"]) == (("a",), ("b",))
    assert default_groups(["c", "a", "b"]) == (("a", "b"), ("c",))
    assert default_groups(["d", "c", "b", "a"]) == (("a", "b"), ("c", "d"))
    assert default_groups(["e", "d", "c", "b", "a"]) == (("a", "b"), ("c", "d"), ("e",))


def test_equals_the_hand_composition_with_missing_groups() -> None:
    fusion = HierarchicalFusion(input_dims=DIMS, output_dim=3, local_dim=4).eval()
    assert fusion.group_names == ("audio+image", "text+video")
    inputs, masks = make_inputs()
    # sample 1: the whole audio+image group missing; sample 3: only text missing;
    # sample 4: the whole text+video group missing
    masks["audio"] = masks["audio"] & torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)[:, None]
    masks["image"] = torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)
    masks["text"] = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    masks["video"] = masks["video"] & torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)[:, None]
    out, info = fusion(inputs, masks, return_intermediates=True)
    with torch.no_grad():
        expected = by_hand(fusion, inputs, masks)
    torch.testing.assert_close(out, expected)
    assert info.extras["group_present"].tolist() == [
        [True, True], [False, True], [True, True], [True, True], [True, False], [True, True]
    ]
    assert set(info.extras["local"]) == {"audio+image", "text+video"}
    assert info.extras["global"].gates is not None
    assert info.extras["groups"]["audio+image"].shape == (B, 4)
    # the missing group's values have no influence, NaN included
    nan_in = dict(inputs)
    nan_in["image"] = torch.where(masks["image"][:, None], inputs["image"], float("nan"))
    nan_in["audio"] = torch.where(masks["audio"][..., None], inputs["audio"], float("nan"))
    torch.testing.assert_close(fusion(nan_in, masks), out)


def test_custom_groups_and_strategies_with_single_modality_groups() -> None:
    fusion = HierarchicalFusion(
        input_dims=DIMS,
        output_dim=3,
        groups=[["video", "audio", "text"], ["image"]],
        local_fusion="cross_attention",
        local_options={"dim": 4, "mode": "all"},
        local_dim=5,
        global_fusion="early",
        global_options={"hidden_dims": (6,)},
    ).eval()
    assert fusion.groups == (("audio", "text", "video"), ("image",))
    assert fusion.group_names == ("audio+text+video", "image")
    assert type(fusion.local["audio+text+video"]).__name__ == "CrossAttentionFusion"
    inputs, masks = make_inputs(seed=2)
    masks["image"] = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    out, info = fusion(inputs, masks, return_intermediates=True)
    with torch.no_grad():
        torch.testing.assert_close(out, by_hand(fusion, inputs, masks))
    assert info.extras["local"]["image"] is None
    assert set(info.extras["local"]["audio+text+video"].attention) == {
        "audio->text+video", "text->audio+video", "video->audio+text"
    }


def test_decision_level_global_fusion_makes_the_output_logits() -> None:
    fusion = mmfuse.create_fusion(
        "hierarchical", input_dims=DIMS, output_dim=3, global_fusion="late", global_options={"level": "decision"}
    )
    assert fusion.outputs_logits
    assert not mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3).outputs_logits


GROUP_ERRORS = [
    ([["audio", "image"], ["text"]], "modality 'video': expected in exactly one group, got in none"),
    ([["audio", "image"], ["text", "video", "audio"]], r"groups\[1\]: modality 'audio': expected in exactly one group, got it again"),
    ([["audio", "image"], ["text", "cam"], ["video"]], r"groups\[1\]: unknown modality 'cam'"),
    ([["audio", "image"], [], ["text", "video"]], r"groups\[1\]: expected a non-empty sequence"),
    (["audio", "image", "text", "video"], r"groups: expected a sequence of sequences of strings or None, got \['audio'"),
    ([], "groups: expected a non-empty sequence"),
    ("audio", "groups: expected a sequence of sequences of strings or None, got 'audio'"),
]


@pytest.mark.parametrize(("groups", "message"), GROUP_ERRORS)
def test_bad_groups_raise(groups: object, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, groups=groups)


def test_bad_options_raise() -> None:
    with pytest.raises(FusionError, match="local_dim: expected a positive int or None, got 0"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, local_dim=0)
    with pytest.raises(FusionError, match="local_options: expected the strategy's own options only, got 'output_dim'"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, local_options={"output_dim": 2})
    with pytest.raises(FusionError, match="global_options: expected a mapping"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, global_options=[("a", 1)])
    with pytest.raises(FusionError, match="local fusion of group 'audio\\+image': gated: gate: expected one of"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, local_options={"gate": "x"})
    with pytest.raises(FusionError, match="hierarchical: global_fusion: expected one of \\[.*'gated'.*\\], got 'nope'"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, global_fusion="nope")
    with pytest.raises(FusionError, match="local_options: unknown option 'nope' of 'gated'"):
        mmfuse.create_fusion("hierarchical", input_dims={"audio": 3, "image": 4}, output_dim=3, local_options={"nope": 1})
    # two modalities are two single-modality groups: no local fusion is built, the name is still checked
    with pytest.raises(FusionError, match="hierarchical: local_fusion: expected one of .*, got 'nope'"):
        mmfuse.create_fusion("hierarchical", input_dims={"audio": 3, "image": 4}, output_dim=3, local_fusion="nope")
    # one group leaves the global gated fusion (two or more inputs) a single input
    with pytest.raises(FusionError, match=r"global fusion over groups \['audio\+image\+text\+video'\]: .*at least 2"):
        mmfuse.create_fusion("hierarchical", input_dims=DIMS, output_dim=3, groups=[list(DIMS)])
