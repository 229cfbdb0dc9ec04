"""Late fusion: feature-level mean/weighted/max and decision-level rules against hand computation."""

from __future__ import annotations

import pytest
import torch
from _fusion_helpers import check_contract
from torch import Tensor, nn

import mmfuse
from mmfuse import FusionError
from mmfuse import functional as MF

DIMS = {"text": 4, "audio": 3, "image": 5}  # sorted order: audio, image, text
MODS = ("audio", "image", "text")
B = 6
OUT = 5
PRESENT_IMAGE = torch.tensor([True, False, True, True, False, True])


def make(**options: object) -> mmfuse.Fusion:
    """Late fusion with one linear map per modality (hidden_dims=()), so h_i = x_i W_i^T + b_i."""
    torch.manual_seed(0)
    return mmfuse.create_fusion("late", input_dims=DIMS, output_dim=OUT, hidden_dims=(), **options).eval()


def vectors(seed: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


def per_modality(fusion: mmfuse.Fusion, x: dict[str, Tensor]) -> list[Tensor]:
    """h_i = x_i W_i^T + b_i for each modality, in sorted order, by hand."""
    out = []
    for m in MODS:
        lin = fusion.encoders[m].fc_out
        out.append(x[m] @ lin.weight.T + lin.bias)
    return out


def test_mean_is_the_average_of_per_modality_mlps() -> None:
    torch.manual_seed(0)
    fusion = mmfuse.create_fusion("late", input_dims=DIMS, output_dim=OUT, hidden_dims=(8,)).eval()
    x = vectors()
    expected = 0
    for m in MODS:
        mlp = fusion.encoders[m]
        expected = expected + nn.functional.gelu(x[m] @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc_out.weight.T + mlp.fc_out.bias
    torch.testing.assert_close(fusion(x), expected / 3)
    assert not fusion.outputs_logits


def test_mean_excludes_a_missing_modality() -> None:
    fusion = make()
    x = vectors()
    out, info = fusion(x, {"image": PRESENT_IMAGE}, return_intermediates=True)
    ha, hi, ht = per_modality(fusion, x)
    both = (ha + ht) / 2
    torch.testing.assert_close(out[PRESENT_IMAGE], ((ha + hi + ht) / 3)[PRESENT_IMAGE])
    torch.testing.assert_close(out[~PRESENT_IMAGE], both[~PRESENT_IMAGE])  # not (ha + 0 + ht) / 3
    weights = torch.where(PRESENT_IMAGE[:, None], torch.full((B, 3), 1 / 3), torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(info.modality_weights, weights)
    total = sum(info.contributions[m] for m in MODS)
    torch.testing.assert_close(total, out)
    torch.testing.assert_close(info.contributions["image"][~PRESENT_IMAGE], torch.zeros(2, OUT))


def test_weighted_uses_a_softmax_of_learned_scores_over_present_modalities() -> None:
    fusion = make(combine="weighted")
    with torch.no_grad():
        fusion.modality_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = vectors()
    out, info = fusion(x, {"image": PRESENT_IMAGE}, return_intermediates=True)
    h = per_modality(fusion, x)
    s = torch.tensor([0.5, -1.0, 2.0])
    all3 = torch.exp(s) / torch.exp(s).sum()
    two = torch.exp(s[[0, 2]]) / torch.exp(s[[0, 2]]).sum()
    for b in range(B):
        w = all3 if PRESENT_IMAGE[b] else torch.tensor([two[0], 0.0, two[1]])
        torch.testing.assert_close(info.modality_weights[b], w)
        torch.testing.assert_close(out[b], w[0] * h[0][b] + w[1] * h[1][b] + w[2] * h[2][b])
    torch.testing.assert_close(info.modality_weights.sum(1), torch.ones(B))


def test_weighted_scores_learn_and_mean_has_none() -> None:
    fusion = make(combine="weighted").train()
    out = fusion(vectors())
    (out * torch.randn_like(out)).sum().backward()
    assert fusion.modality_logits.grad is not None and fusion.modality_logits.grad.abs().sum() > 0
    assert make().modality_logits is None
    assert "modality_logits" not in dict(make().named_parameters())


def test_max_is_elementwise_over_present_modalities() -> None:
    fusion = make(combine="max")
    with torch.no_grad():
        fusion.encoders["image"].fc_out.bias.fill_(100.0)  # image would win every feature if counted
    x = vectors()
    out, info = fusion(x, {"image": PRESENT_IMAGE}, return_intermediates=True)
    ha, hi, ht = per_modality(fusion, x)
    expected = torch.where(PRESENT_IMAGE[:, None], torch.maximum(torch.maximum(ha, hi), ht), torch.maximum(ha, ht))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(info.modality_weights[PRESENT_IMAGE], torch.tensor([0.0, 1.0, 0.0]).expand(4, 3))
    winner_a = (ha > ht).float()[~PRESENT_IMAGE].mean(1)
    torch.testing.assert_close(info.modality_weights[~PRESENT_IMAGE][:, 0], winner_a)
    torch.testing.assert_close(info.modality_weights.sum(1), torch.ones(B))
    torch.testing.assert_close(sum(info.contributions[m] for m in MODS), out)


def log_probs(fusion: mmfuse.Fusion, x: dict[str, Tensor]) -> list[Tensor]:
    return [torch.log_softmax(h, dim=-1) for h in per_modality(fusion, x)]


def test_decision_mean_prob_is_log_of_mean_probability() -> None:
    fusion = make(level="decision")
    assert fusion.outputs_logits and fusion.decision == "mean_prob"
    x = vectors()
    out, info = fusion(x, {"image": PRESENT_IMAGE}, return_intermediates=True)
    pa, pi, pt = (lp.exp() for lp in log_probs(fusion, x))
    expected = torch.where(PRESENT_IMAGE[:, None], torch.log((pa + pi + pt) / 3), torch.log((pa + pt) / 2))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(B))
    # per-modality log-probabilities, zero where the modality is missing
    torch.testing.assert_close(info.contributions["audio"], pa.log())
    torch.testing.assert_close(info.contributions["image"][PRESENT_IMAGE], pi.log()[PRESENT_IMAGE])
    torch.testing.assert_close(info.contributions["image"][~PRESENT_IMAGE], torch.zeros(2, OUT))
    torch.testing.assert_close(info.extras["probs"][:, 0], pa)
    torch.testing.assert_close(info.extras["probs"][~PRESENT_IMAGE, 1], torch.zeros(2, OUT))
    torch.testing.assert_close(info.modality_weights[~PRESENT_IMAGE], torch.tensor([0.5, 0.0, 0.5]).expand(2, 3))


def test_decision_product_of_experts() -> None:
    fusion = make(level="decision", decision="product")
    x = vectors()
    out = fusion(x, {"image": PRESENT_IMAGE})
    pa, pi, pt = (lp.exp() for lp in log_probs(fusion, x))
    prod3, prod2 = pa * pi * pt, pa * pt
    expected = torch.where(
        PRESENT_IMAGE[:, None], torch.log(prod3 / prod3.sum(1, keepdim=True)), torch.log(prod2 / prod2.sum(1, keepdim=True))
    )
    torch.testing.assert_close(out, expected)
    # the parameter-free op gives the same on all-present samples
    la, li, lt = log_probs(fusion, x)
    torch.testing.assert_close(out[PRESENT_IMAGE], MF.product_of_experts(la, li, lt)[PRESENT_IMAGE])


def test_decision_weighted_mixture() -> None:
    fusion = make(level="decision", decision="weighted")
    s = torch.tensor([1.0, 0.0, -0.5])
    with torch.no_grad():
        fusion.modality_logits.copy_(s)
    x = vectors()
    out, info = fusion(x, {"image": PRESENT_IMAGE}, return_intermediates=True)
    pa, pi, pt = (lp.exp() for lp in log_probs(fusion, x))
    w3 = torch.softmax(s, 0)
    w2 = torch.softmax(s[[0, 2]], 0)
    mix3 = w3[0] * pa + w3[1] * pi + w3[2] * pt
    mix2 = w2[0] * pa + w2[1] * pt
    torch.testing.assert_close(out, torch.where(PRESENT_IMAGE[:, None], mix3.log(), mix2.log()))
    torch.testing.assert_close(info.modality_weights[0], w3)
    torch.testing.assert_close(info.modality_weights[1], torch.tensor([w2[0], 0.0, w2[1]]))
    # usable as logits by cross-entropy: the loss is the mixture's negative log-likelihood
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    nll = -torch.where(PRESENT_IMAGE, mix3.log()[torch.arange(B), y], mix2.log()[torch.arange(B), y]).mean()
    torch.testing.assert_close(nn.functional.cross_entropy(out, y), nll)


def test_decision_outputs_stay_finite_for_confident_heads() -> None:
    fusion = make(level="decision", decision="weighted")
    with torch.no_grad():
        for m in MODS:
            fusion.encoders[m].fc_out.weight.mul_(1e3)
    out = fusion(vectors(), {"image": PRESENT_IMAGE})
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.logsumexp(1), torch.zeros(B), atol=1e-4, rtol=0)


def test_sequences_are_pooled_before_the_modality_mlp() -> None:
    fusion = make()
    x = vectors()
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(B, 4, 3, generator=g)
    lengths = torch.tensor([4, 1, 2, 3, 4, 2])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    out = fusion({**x, "audio": seq}, {"audio": mask})
    pooled = (seq * mask[..., None]).sum(1) / lengths[:, None]
    _, hi, ht = per_modality(fusion, x)
    lin = fusion.encoders["audio"].fc_out
    torch.testing.assert_close(out, (pooled @ lin.weight.T + lin.bias + hi + ht) / 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"level": "score"}, r"level: expected one of \['feature', 'decision'\], got 'score'"),
        ({"combine": "median"}, r"combine: expected one of \['mean', 'weighted', 'max'\] or None, got 'median'"),
        ({"level": "decision", "decision": "vote"}, r"decision: expected one of .*got 'vote'"),
        ({"level": "decision", "combine": "max"}, r"combine='max' applies only to level='feature'"),
        ({"decision": "product"}, r"decision='product' applies only to level='decision'"),
        ({"dropout": -0.1}, r"dropout: expected a float in \[0, 1\)"),
        ({"hidden_dims": (4, -2)}, r"hidden_dims: expected a sequence of positive ints"),
    ],
)
def test_bad_options_raise(options: dict, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        mmfuse.create_fusion("late", input_dims=DIMS, output_dim=OUT, **options)


def test_decision_level_needs_two_classes() -> None:
    with pytest.raises(FusionError, match="number of classes: expected at least 2, got 1"):
        mmfuse.create_fusion("late", input_dims=DIMS, output_dim=1, level="decision")


@pytest.mark.parametrize(
    "options",
    [
        {"combine": "weighted"},
        {"combine": "max"},
        {"level": "decision"},
        {"level": "decision", "decision": "product"},
        {"level": "decision", "decision": "weighted", "norm_layer": nn.LayerNorm},
    ],
    ids=str,
)
def test_options_keep_the_contract(options: dict) -> None:
    torch.manual_seed(0)
    fusion = mmfuse.create_fusion("late", input_dims=DIMS, output_dim=OUT, hidden_dims=(8,), **options)
    check_contract(fusion, vectors(), {}, missing="image")
