"""Parity and behaviour of ``cross_attention`` (additive) and ``multihead_cross_attention``.

References are written out here: the guide's per-position loop ``e_ij = MLP([h_i, h_j])``
with the same weights reassembled into one ``Linear(2d -> d_a)``, the concatenated-pair
MLP, and ``nn.MultiheadAttention`` with copied weights and the inverted key mask.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import mmfuse
from mmfuse import FusionError
from mmfuse.fusions.attention import (
    AdditiveScore,
    CrossAttentionFusion,
    MultiheadCrossAttention,
    MultiheadCrossAttentionFusion,
)

DIMS = {"audio": 5, "image": 6, "text": 7}
B = 4


def sequences(lengths: dict[str, int], seed: int = 1) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Random sequences with random valid lengths (at least 1 token each)."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for name, t in lengths.items():
        inputs[name] = torch.randn(B, t, DIMS[name], generator=g)
        valid = torch.randint(1, t + 1, (B,), generator=g)
        masks[name] = torch.arange(t)[None, :] < valid[:, None]
    return inputs, masks


def project(fusion: nn.Module, inputs: dict[str, Tensor], masks: dict[str, Tensor], names: list[str]) -> tuple[Tensor, Tensor]:
    """The fusion's per-modality projections of ``names``, concatenated along tokens."""
    xs = [fusion.proj[n](torch.where(masks[n][..., None], inputs[n], 0.0)) for n in names]
    return torch.cat(xs, dim=1), torch.cat([masks[n] for n in names], dim=1)


def concatenated_mlp(scorer: AdditiveScore) -> nn.Sequential:
    """The guide's score MLP ``Linear(2d -> d_a) -> tanh -> Linear(d_a -> 1)`` rebuilt
    from the split layers: ``W = [W_a, W_b]``, bias of the query half."""
    hidden, dim = scorer.query.weight.shape
    first = nn.Linear(2 * dim, hidden)
    last = nn.Linear(hidden, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.cat([scorer.query.weight, scorer.key.weight], dim=1))
        first.bias.copy_(scorer.query.bias)
        last.weight.copy_(scorer.score.weight)
    return nn.Sequential(first, nn.Tanh(), last)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    w = mask.float()[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1)


def loop_additive(mlp: nn.Module, q: Tensor, k: Tensor, k_mask: Tensor, zero_attn: bool) -> tuple[Tensor, Tensor]:
    """The guide's loop: for i, for j: e_ij = mlp(cat(h_i, h_j)); masked softmax over j;
    h_i + sum_j a_ij h_j. The zero key (value 0) enters the denominator only."""
    b, t_q, _ = q.shape
    t_k = k.shape[1]
    e = torch.zeros(b, t_q, t_k)
    for i in range(t_q):
        for j in range(t_k):
            e[:, i, j] = mlp(torch.cat([q[:, i], k[:, j]], dim=-1)).squeeze(-1)
    m = e.max(dim=-1, keepdim=True).values
    if zero_attn:
        e0 = torch.stack([mlp(torch.cat([q[:, i], torch.zeros_like(q[:, i])], -1)).squeeze(-1) for i in range(t_q)], 1)
        m = torch.maximum(m, e0[..., None])
    num = torch.exp(e - m) * k_mask[:, None, :]
    den = num.sum(-1, keepdim=True)
    if zero_attn:
        den = den + torch.exp(e0[..., None] - m)
    alpha = num / den.clamp_min(1e-30)
    out = q.clone()
    for i in range(t_q):
        for j in range(t_k):
            out[:, i] = out[:, i] + alpha[:, i, j, None] * k[:, j]
    return out, alpha


# ------------------------------------------------------------------- additive
@pytest.mark.parametrize("zero_attn", [False, True])
def test_additive_matches_the_guides_per_position_loop(zero_attn: bool) -> None:
    fusion = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, hidden_dim=5, add_zero_attn=zero_attn)
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4})
    out, info = fusion(inputs, masks, return_intermediates=True)
    assert fusion.query == "audio"
    q, q_mask = project(fusion, inputs, masks, ["audio"])
    k, k_mask = project(fusion, inputs, masks, ["image", "text"])
    with torch.no_grad():
        enriched, alpha = loop_additive(concatenated_mlp(fusion.scorers["audio"]), q, k, k_mask, zero_attn)
        expected = fusion.out(masked_mean(enriched, q_mask))
    weights = info.attention["audio->image+text"]
    assert weights.shape == (B, 1, 3, 6)
    torch.testing.assert_close(weights[:, 0], alpha)
    torch.testing.assert_close(out, expected)
    if not zero_attn:  # the guide's softmax: rows sum to 1 over valid keys
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, 1, 3))
    else:  # the zero slot takes the rest
        assert bool((weights.sum(-1) < 1).all())


def test_split_scores_equal_the_concatenated_pair_mlp() -> None:
    scorer = AdditiveScore(dim=6, hidden_dim=8)
    q, k = torch.randn(3, 4, 6), torch.randn(3, 5, 6)
    pairs = torch.cat(
        [q[:, :, None, :].expand(-1, -1, 5, -1), k[:, None, :, :].expand(-1, 4, -1, -1)], dim=-1
    )  # (b, t_q, t_k, 2d)
    with torch.no_grad():
        expected = concatenated_mlp(scorer)(pairs).squeeze(-1)
        torch.testing.assert_close(scorer(q, k), expected)
        torch.testing.assert_close(scorer.zero_key_score(q)[..., 0], concatenated_mlp(scorer)(
            torch.cat([q, torch.zeros_like(q)], -1)).squeeze(-1))


def test_additive_masked_keys_get_zero_weight_and_change_nothing() -> None:
    fusion = mmfuse.create_fusion("cross_attention", input_dims=DIMS, output_dim=3)
    inputs, masks = sequences({"audio": 3, "image": 4, "text": 5}, seed=2)
    out, info = fusion(inputs, masks, return_intermediates=True)
    key_mask = torch.cat([masks["image"], masks["text"]], dim=1)
    weights = info.attention["audio->image+text"]
    assert bool((weights.masked_select(~key_mask[:, None, None, :].expand_as(weights)) == 0).all())
    assert bool((weights.masked_select(key_mask[:, None, None, :].expand_as(weights)) > 0).all())
    noisy = {k: torch.where(masks[k][..., None], v, torch.randn_like(v) * 50) for k, v in inputs.items()}
    torch.testing.assert_close(fusion(noisy, masks), out)


def test_additive_query_missing_queries_with_the_context_mean() -> None:
    fusion = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4)
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=3)
    present = torch.tensor([True, False, True, False])
    masks["audio"] = masks["audio"] & present[:, None]
    out = fusion(inputs, masks)
    assert torch.isfinite(out).all()
    k, k_mask = project(fusion, inputs, masks, ["image", "text"])
    # by hand: the context mean at every query token, the guide's loop, mean, W_out
    with torch.no_grad():
        p = masked_mean(k, k_mask)[:, None, :].expand(B, 3, 4)
        enriched, _ = loop_additive(concatenated_mlp(fusion.scorers["audio"]), p, k, k_mask, True)
        torch.testing.assert_close(out[~present], fusion.out(enriched.mean(1))[~present])
    changed = dict(inputs, audio=inputs["audio"] + 100 * (~present)[:, None, None])
    torch.testing.assert_close(fusion(changed, masks), out)
    # the score MLP is trained by samples whose query is missing (it was skipped before)
    out[~present].sum().backward()
    assert fusion.scorers["audio"].query.weight.grad.abs().sum() > 0


def test_additive_context_missing_leaves_the_query_alone() -> None:
    fusion = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, add_zero_attn=False)
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=4)
    gone = torch.tensor([False, True, False, True])
    for name in ("image", "text"):
        masks[name] = masks[name] & ~gone[:, None]
    out, info = fusion(inputs, masks, return_intermediates=True)
    assert torch.isfinite(out).all() and torch.isfinite(info.attention["audio->image+text"]).all()
    assert bool((info.attention["audio->image+text"][gone] == 0).all())
    q, q_mask = project(fusion, inputs, masks, ["audio"])
    with torch.no_grad():
        torch.testing.assert_close(out[gone], fusion.out(masked_mean(q, q_mask))[gone])
    nan_ctx = {k: (torch.where(gone[:, None, None], float("nan"), v) if k != "audio" else v) for k, v in inputs.items()}
    torch.testing.assert_close(fusion(nan_ctx, masks), out)


def test_additive_pool_false_returns_the_enriched_query_tokens() -> None:
    fusion = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, pool=False, query="text")
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 5}, seed=5)
    present = torch.tensor([True, True, False, True])
    masks["text"] = masks["text"] & present[:, None]
    out = fusion(inputs, masks)
    assert out.shape == (B, 5, 3)
    q, q_mask = project(fusion, inputs, masks, ["text"])
    k, k_mask = project(fusion, inputs, masks, ["audio", "image"])
    with torch.no_grad():
        enriched, _ = loop_additive(concatenated_mlp(fusion.scorers["text"]), q, k, k_mask, True)
        tokens = fusion.out(enriched)
        p = masked_mean(k, k_mask)[:, None, :]
        fallback = fusion.out(loop_additive(concatenated_mlp(fusion.scorers["text"]), p, k, k_mask, True)[0][:, 0])
    valid = q_mask
    torch.testing.assert_close(out[valid], tokens[valid])
    assert bool((out[present][~valid[present]] == 0).all())  # padding of present queries
    # a missing query: the context-mean query's output at every token
    torch.testing.assert_close(out[~present], fallback[~present, None, :].expand(-1, 5, -1))
    # the pooled fusion with the same weights is the mean of these tokens' pre-output features
    pooled = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, query="text")
    pooled.load_state_dict(fusion.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(pooled(inputs, masks)[present], fusion.out(masked_mean(enriched, q_mask))[present])


def test_additive_bidirectional_and_all_match_their_composition() -> None:
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=6)
    present = torch.tensor([True, True, False, True])  # text missing for sample 2
    masks["text"] = masks["text"] & present[:, None]

    bi = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, mode="bidirectional", query="image")
    out, info = bi(inputs, masks, return_intermediates=True)
    assert set(info.attention) == {"image->audio+text", "audio+text->image"}
    q, q_mask = project(bi, inputs, masks, ["image"])
    k, k_mask = project(bi, inputs, masks, ["audio", "text"])
    with torch.no_grad():
        e_q, _ = loop_additive(concatenated_mlp(bi.scorers["image"]), q, k, k_mask, True)
        e_k, _ = loop_additive(concatenated_mlp(bi.scorers["context"]), k, q, q_mask, True)
        expected = bi.out((masked_mean(e_q, q_mask) + masked_mean(e_k, k_mask)) / 2)
    torch.testing.assert_close(out, expected)

    every = CrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=4, mode="all")
    out = every(inputs, masks)
    sides = []
    with torch.no_grad():
        for mod in every.modalities:
            others = [m for m in every.modalities if m != mod]
            q, q_mask = project(every, inputs, masks, [mod])
            k, k_mask = project(every, inputs, masks, others)
            e, _ = loop_additive(concatenated_mlp(every.scorers[mod]), q, k, k_mask, True)
            sides.append(masked_mean(e, q_mask))
        p = torch.stack([masks[m].any(1) for m in every.modalities], 1).float()
        expected = every.out((torch.stack(sides, 1) * p[..., None]).sum(1) / p.sum(1, keepdim=True))
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------- multi-head
def copy_to_mha(core: MultiheadCrossAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(core.dim, core.num_heads, batch_first=True, add_zero_attn=core.add_zero_attn)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([core.q_proj.weight, core.k_proj.weight, core.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([core.q_proj.bias, core.k_proj.bias, core.v_proj.bias]))
        mha.out_proj.weight.copy_(core.out_proj.weight)
        mha.out_proj.bias.copy_(core.out_proj.bias)
    return mha.eval()


@pytest.mark.parametrize("zero_attn", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_core_equals_nn_multihead_attention(zero_attn: bool, need_weights: bool) -> None:
    core = MultiheadCrossAttention(8, 2, add_zero_attn=zero_attn).eval()
    mha = copy_to_mha(core)
    q, kv = torch.randn(B, 3, 8), torch.randn(B, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    out, weights = core(q, kv, mask, need_weights=need_weights)
    ref, ref_w = mha(q, kv, kv, key_padding_mask=~mask, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref)
    if need_weights:
        assert weights is not None and weights.shape == (B, 2, 3, 5)
        torch.testing.assert_close(weights, ref_w[..., :5])
        assert bool((weights.masked_select(~mask[:, None, None, :].expand_as(weights)) == 0).all())
    else:
        assert weights is None


@pytest.mark.parametrize("zero_attn", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_core_without_a_key_mask_equals_nn_multihead_attention(zero_attn: bool, need_weights: bool) -> None:
    """``key_mask=None`` (every key takes part) is the unmasked fast path: the same
    output and weights as ``nn.MultiheadAttention`` with no padding mask."""
    core = MultiheadCrossAttention(8, 2, add_zero_attn=zero_attn).eval()
    mha = copy_to_mha(core)
    q, kv = torch.randn(B, 3, 8), torch.randn(B, 5, 8)
    out, weights, null = core(q, kv, None, need_weights=need_weights, return_null=True)
    ref, ref_w = mha(q, kv, kv, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref)
    if need_weights:
        torch.testing.assert_close(weights, ref_w[..., :5])
        torch.testing.assert_close(weights.sum(-1) + null, torch.ones(B, 2, 3))


def test_fusion_core_config_equals_nn_multihead_attention() -> None:
    fusion = MultiheadCrossAttentionFusion(
        input_dims=DIMS, output_dim=3, dim=8, num_heads=2, residual=False, norm=False, add_zero_attn=False, pool=False
    ).eval()
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=7)
    out = fusion(inputs, masks)
    mha = copy_to_mha(fusion.attn["audio"])
    q, q_mask = project(fusion, inputs, masks, ["audio"])
    k, k_mask = project(fusion, inputs, masks, ["image", "text"])
    with torch.no_grad():
        ref = fusion.out(mha(q, k, k, key_padding_mask=~k_mask, need_weights=False)[0])
    torch.testing.assert_close(out[q_mask], ref[q_mask])


@pytest.mark.parametrize("mode", ["query", "all"])
def test_block_residual_norm_and_pooling_by_hand(mode: str) -> None:
    fusion = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=3, dim=8, num_heads=2, mode=mode).eval()
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=8)
    out = fusion(inputs, masks)
    queries = fusion.modalities if mode == "all" else ("audio",)
    pooled = []
    with torch.no_grad():
        for mod in queries:
            others = [m for m in fusion.modalities if m != mod]
            q, q_mask = project(fusion, inputs, masks, [mod])
            k, k_mask = project(fusion, inputs, masks, others)
            a = copy_to_mha(fusion.attn[mod])(q, k, k, key_padding_mask=~k_mask, need_weights=False)[0]
            pooled.append(masked_mean(fusion.norms[mod](q + a), q_mask))
        expected = fusion.out(torch.stack(pooled, 1).mean(1))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("mode", ["query", "all"])
def test_explicit_weights_and_sdpa_paths_agree(mode: str) -> None:
    fusion = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=6, num_heads=3, mode=mode).train()
    inputs, masks = sequences({"audio": 3, "image": 4, "text": 2}, seed=9)
    masks["image"] = masks["image"] & torch.tensor([True, False, True, True])[:, None]
    fast = fusion(inputs, masks)
    slow, info = fusion(inputs, masks, return_intermediates=True)
    torch.testing.assert_close(fast, slow)
    for key, w in info.attention.items():
        assert w.shape[:3] == (B, 3, inputs[key.split("->")[0]].shape[1]), key
    if mode == "query":
        assert set(info.attention) == {"audio->image+text"}
        assert info.attention["audio->image+text"].shape == (B, 3, 3, 6)
    assert fusion.dim == 6


@pytest.mark.parametrize("zero_attn", [False, True])
def test_multihead_context_missing_is_finite_and_carried_by_the_query(zero_attn: bool) -> None:
    fusion = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2, add_zero_attn=zero_attn).eval()
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=10)
    gone = torch.tensor([True, False, False, True])
    for name in ("image", "text"):
        masks[name] = masks[name] & ~gone[:, None]
    for need in (False, True):
        out = fusion(inputs, masks, return_intermediates=need)
        out, info = out if need else (out, None)
        assert torch.isfinite(out).all()
        q, q_mask = project(fusion, inputs, masks, ["audio"])
        with torch.no_grad():
            expected = fusion.out(masked_mean(fusion.norms["audio"](q), q_mask))
        torch.testing.assert_close(out[gone], expected[gone])
        if info is not None:
            assert bool((info.attention["audio->image+text"][gone] == 0).all())
    nan_ctx = {k: (torch.where(gone[:, None, None], float("nan"), v) if k != "audio" else v) for k, v in inputs.items()}
    torch.testing.assert_close(fusion(nan_ctx, masks), fusion(inputs, masks))
    # the fused kernel's path must not leave NaN in the gradients either
    fusion.train()
    fusion(inputs, masks).sum().backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_multihead_query_missing_queries_with_the_projected_running_mean_and_pool_false_shape() -> None:
    fusion = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2, query="image").eval()
    mu = torch.randn(DIMS["image"], generator=torch.Generator().manual_seed(31))
    fusion.input_mean.assign("image", mu)
    inputs, masks = sequences({"audio": 3, "image": 5, "text": 4}, seed=11)
    present = torch.tensor([False, True, True, False])
    masks["image"] = masks["image"] & present[:, None]
    out = fusion(inputs, masks)
    k, k_mask = project(fusion, inputs, masks, ["audio", "text"])
    mha = copy_to_mha(fusion.attn["image"])
    mha.add_zero_attn = True
    with torch.no_grad():  # p = W_q mu + c_q; y = LN(p + MHA(p, ctx)), the same at every token; W_out
        p = fusion.proj["image"](mu).expand(B, 1, 4)
        y = fusion.norms["image"](p + mha(p, k, k, key_padding_mask=~k_mask, need_weights=False)[0])
        expected = fusion.out(y[:, 0])
    torch.testing.assert_close(out[~present], expected[~present])
    changed = dict(inputs, image=inputs["image"] + 100 * (~present)[:, None, None])
    torch.testing.assert_close(fusion(changed, masks), out)

    tokens = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2, query="image", pool=False)
    tokens.load_state_dict(fusion.state_dict())
    seq = tokens.eval()(inputs, masks)
    assert seq.shape == (B, 5, 4)
    torch.testing.assert_close(seq[~present], expected[~present, None, :].expand(-1, 5, -1))
    assert bool((seq[present][~masks["image"][present]] == 0).all())


@pytest.mark.parametrize("zero_attn", [False, True])
def test_null_attention_completes_each_querys_weights(zero_attn: bool) -> None:
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=12)
    gone = torch.tensor([False, True, False, False])  # sample 1: no context at all
    for name in ("image", "text"):
        masks[name] = masks[name] & ~gone[:, None]
    for fusion in (
        MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2, add_zero_attn=zero_attn),
        MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2, mode="all", add_zero_attn=zero_attn),
        CrossAttentionFusion(input_dims=DIMS, output_dim=4, mode="bidirectional", add_zero_attn=zero_attn),
    ):
        _, info = fusion(inputs, masks, return_intermediates=True)
        null = info.extras["null_attention"]
        assert set(null) == set(info.attention)
        for key, w in info.attention.items():
            assert null[key].shape == w.shape[:-1]
            torch.testing.assert_close(w.sum(-1) + null[key], torch.ones_like(null[key]))
            if not zero_attn and key.startswith("audio->"):
                assert bool((null[key][~gone] == 0).all()) and bool((null[key][gone] == 1).all())
    # parity with nn.MultiheadAttention, whose weights include the zero slot as a last key
    core = MultiheadCrossAttention(8, 2, add_zero_attn=True).eval()
    mha = copy_to_mha(core)
    q, kv = torch.randn(B, 3, 8), torch.randn(B, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [1, 0, 0, 0, 1]], dtype=torch.bool)
    _, _, slot = core(q, kv, mask, need_weights=True, return_null=True)
    _, ref_w = mha(q, kv, kv, key_padding_mask=~mask, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(slot, ref_w[..., -1])


def test_vector_inputs_are_one_token_each_and_samples_do_not_mix() -> None:
    fusion = MultiheadCrossAttentionFusion(input_dims=DIMS, output_dim=4, num_heads=2).eval()
    inputs = {k: torch.randn(B, d) for k, d in DIMS.items()}
    _, info = fusion(inputs, return_intermediates=True)
    assert info.attention["audio->image+text"].shape == (B, 2, 1, 2)
    out = fusion(inputs)
    alone = fusion({k: v[1:2] for k, v in inputs.items()})
    torch.testing.assert_close(alone[0], out[1])


CONSTRUCTION_ERRORS = [
    ("cross_attention", {"mode": "both"}, "mode: expected one of"),
    ("cross_attention", {"query": "video"}, r"query: expected one of \['audio', 'image', 'text'\], got 'video'"),
    ("cross_attention", {"mode": "all", "query": "audio"}, "expected None with mode='all'"),
    ("cross_attention", {"mode": "all", "pool": False}, "pool=False: expected mode='query'"),
    ("cross_attention", {"dim": 0}, "dim: expected a positive int or None, got 0"),
    ("cross_attention", {"hidden_dim": -2}, "hidden_dim: expected a positive int or None, got -2"),
    ("multihead_cross_attention", {"dim": 10, "num_heads": 4}, "num_heads: expected a divisor of dim=10, got 4"),
    ("multihead_cross_attention", {"num_heads": 0}, "num_heads: expected a positive int, got 0"),
    ("multihead_cross_attention", {"mode": "bidirectional"}, "mode: expected one of"),
    ("multihead_cross_attention", {"dropout": 1.5}, r"dropout: expected a float in \[0, 1\)"),
    ("multihead_cross_attention", {"mode": "all", "pool": False}, "pool=False: expected mode='query'"),
]


@pytest.mark.parametrize(("name", "options", "message"), CONSTRUCTION_ERRORS)
def test_bad_options_raise(name: str, options: dict, message: str) -> None:
    with pytest.raises(FusionError, match=message):
        mmfuse.create_fusion(name, input_dims=DIMS, output_dim=4, **options)


@pytest.mark.parametrize("name", ["cross_attention", "multihead_cross_attention"])
def test_one_modality_is_refused(name: str) -> None:
    with pytest.raises(FusionError, match="at least 2 modalities"):
        mmfuse.create_fusion(name, input_dims={"audio": 3}, output_dim=4)


def test_default_dim_rounds_up_to_the_heads() -> None:
    fusion = mmfuse.create_fusion("multihead_cross_attention", input_dims=DIMS, output_dim=10, num_heads=4)
    assert fusion.dim == 12
    assert fusion(sequences({"audio": 2, "image": 3, "text": 1})[0]).shape == (B, 10)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cross_attention", {"mode": "all", "add_zero_attn": False}),
        ("multihead_cross_attention", {"pool": False, "add_zero_attn": False}),
    ],
)
def test_non_default_modes_compile(name: str, options: dict) -> None:
    fusion = mmfuse.create_fusion(name, input_dims=DIMS, output_dim=4, **options).eval()
    inputs, masks = sequences({"audio": 3, "image": 2, "text": 4}, seed=12)
    masks["image"] = masks["image"] & torch.tensor([True, False, True, True])[:, None]
    expected = fusion(inputs, masks)
    compiled = torch.compile(fusion, backend="aot_eager")
    torch.testing.assert_close(compiled(inputs, masks), expected, rtol=1e-5, atol=1e-5)
