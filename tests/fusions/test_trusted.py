"""Trusted fusion (TMC/ETMC): the Dempster-Shafer fold against the authors' two-view rule
written out here, the opinions' algebra, the missing modality as the identity, and the
evidential loss against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from _fusion_helpers import check_contract
from torch import Tensor

import mmfuse
from mmfuse import FusionError
from mmfuse.fusions.trusted import combine_opinions, dirichlet_loss, opinion

K = 4
DIMS = {"text": 4, "audio": 3, "image": 5}  # sorted order: audio, image, text
MODS = ("audio", "image", "text")
B = 6


# ----------------------------------------------------------- references
def ds_combin_two(alpha1: Tensor, alpha2: Tensor) -> Tensor:
    """The two-view combination of hanmenghan/TMC (``DS_Combin_two``), step by step:
    Dirichlet parameters in, combined Dirichlet parameters out; ``C`` from the full
    outer product of the beliefs minus its diagonal."""
    k = alpha1.shape[-1]
    b, u = [], []
    for alpha in (alpha1, alpha2):
        s = alpha.sum(dim=1, keepdim=True)
        b.append((alpha - 1) / s)
        u.append(k / s)
    bb = torch.bmm(b[0].view(-1, k, 1), b[1].view(-1, 1, k))
    c = bb.sum(dim=(1, 2)) - torch.diagonal(bb, dim1=-2, dim2=-1).sum(-1)
    b_a = (b[0] * b[1] + b[0] * u[1] + b[1] * u[0]) / (1 - c).view(-1, 1)
    u_a = u[0] * u[1] / (1 - c).view(-1, 1)
    s_a = k / u_a
    return b_a * s_a + 1


def ds_combin(alphas: list[Tensor]) -> Tensor:
    out = alphas[0]
    for alpha in alphas[1:]:
        out = ds_combin_two(out, alpha)
    return out


def random_alphas(n: int, seed: int, b: int = 32, k: int = K) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    # evidence over several orders of magnitude, some classes with almost none
    return [torch.rand(b, k, generator=g, dtype=torch.float64) ** 3 * 10 ** (3 * torch.rand(b, 1, generator=g,
            dtype=torch.float64)) + 1 for _ in range(n)]


def fold(alphas: list[Tensor]) -> tuple[Tensor, Tensor]:
    b, u = opinion(alphas[0] - 1)
    for alpha in alphas[1:]:
        b, u = combine_opinions(b, u, *opinion(alpha - 1))
    return b, u


def to_alpha(b: Tensor, u: Tensor) -> Tensor:
    return b * (b.shape[-1] / u).unsqueeze(-1) + 1


# ------------------------------------------------------------- the rule
@pytest.mark.parametrize("n", [2, 3, 6])
def test_fold_matches_the_authors_rule(n: int) -> None:
    alphas = random_alphas(n, seed=n)
    expected = ds_combin(alphas)
    b, u = fold(alphas)
    torch.testing.assert_close(to_alpha(b, u), expected, rtol=1e-12, atol=1e-12)
    # and the uncertainty is k / S of that Dirichlet
    torch.testing.assert_close(u, K / expected.sum(-1), rtol=1e-12, atol=1e-12)


def test_belief_and_uncertainty_sum_to_one_after_every_fold() -> None:
    alphas = random_alphas(5, seed=7)
    b, u = opinion(alphas[0] - 1)
    torch.testing.assert_close(b.sum(-1) + u, torch.ones(32, dtype=torch.float64), rtol=0, atol=1e-14)
    for alpha in alphas[1:]:
        b, u = combine_opinions(b, u, *opinion(alpha - 1))
        assert (b >= 0).all() and (u > 0).all() and (u <= 1).all()
        torch.testing.assert_close(b.sum(-1) + u, torch.ones(32, dtype=torch.float64), rtol=0, atol=1e-13)


def test_folding_order_does_not_change_the_result() -> None:
    alphas = random_alphas(4, seed=3)
    b0, u0 = fold(alphas)
    for order in itertools.permutations(range(4)):
        b, u = fold([alphas[i] for i in order])
        torch.testing.assert_close(b, b0, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(u, u0, rtol=1e-12, atol=1e-13)


def test_the_vacuous_opinion_is_the_identity() -> None:
    b, u = opinion(random_alphas(1, seed=5)[0] - 1)
    vb, vu = torch.zeros_like(b), torch.ones_like(u)
    for got_b, got_u in (combine_opinions(b, u, vb, vu), combine_opinions(vb, vu, b, u)):
        # to rounding: 1 - C is u + 1 - u there
        torch.testing.assert_close(got_b, b, rtol=1e-15, atol=0)
        torch.testing.assert_close(got_u, u, rtol=1e-15, atol=0)


def test_combining_never_raises_the_uncertainty() -> None:
    """u = u1 u2 / (1 - C) <= min(u1, u2): a second opinion can only add evidence."""
    (b1, u1), (b2, u2) = (opinion(a - 1) for a in random_alphas(2, seed=11))
    _, u = combine_opinions(b1, u1, b2, u2)
    assert (u <= torch.minimum(u1, u2) + 1e-15).all()


# ----------------------------------------------------------- the module
def make(**options: object) -> mmfuse.Fusion:
    torch.manual_seed(0)
    return mmfuse.create_fusion("trusted", input_dims=DIMS, output_dim=K, hidden_dims=(8,), **options).eval()


def vectors(seed: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


def expected_log_probs(fusion: mmfuse.Fusion, x: dict[str, Tensor], present: dict[str, Tensor],
                       pseudo: bool = False) -> Tensor:
    """Per sample: the authors' fold over the present modalities' Dirichlets (float64),
    then log(alpha / S)."""
    alphas = {m: F.softplus(fusion.heads[m](x[m])).double() + 1 for m in MODS}
    if pseudo:
        alphas["pseudo"] = F.softplus(fusion.pseudo_head(torch.cat([x[m] for m in MODS], -1))).double() + 1
    rows = []
    for i in range(B):
        chosen = [alphas[m][i : i + 1] for m in alphas if m == "pseudo" or bool(present[m][i])]
        alpha = ds_combin(chosen)
        rows.append(torch.log(alpha / alpha.sum(-1, keepdim=True)))
    return torch.cat(rows).float()


def test_output_is_the_log_expected_probability_of_the_fold() -> None:
    fusion = make()
    x = vectors()
    present = {m: torch.ones(B, dtype=torch.bool) for m in MODS}
    out = fusion(x)
    torch.testing.assert_close(out, expected_log_probs(fusion, x, present), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(B))
    assert fusion.outputs_logits


def test_a_missing_modality_takes_no_part() -> None:
    fusion = make()
    x = vectors()
    present = {"audio": torch.tensor([True, False, True, True, False, True]),
               "image": torch.tensor([True, True, False, True, False, True]),
               "text": torch.tensor([False, True, True, True, True, True])}
    out, info = fusion(x, present, return_intermediates=True)
    torch.testing.assert_close(out, expected_log_probs(fusion, x, present), rtol=1e-5, atol=1e-6)
    # the missing modality's own opinion is the vacuous one
    for j, m in enumerate(MODS):
        gone = ~present[m]
        assert torch.equal(info.extras["modality_uncertainty"][gone, j], torch.ones(int(gone.sum())))
        assert torch.equal(info.extras["modality_belief"][gone, j], torch.zeros(int(gone.sum()), K))
    # and losing a modality never lowers the combined uncertainty
    _, full = fusion(x, return_intermediates=True)
    assert (info.extras["uncertainty"] >= full.extras["uncertainty"] - 1e-7).all()


def test_intermediates_are_the_opinions() -> None:
    fusion = make()
    x = vectors()
    _, info = fusion(x, return_intermediates=True)
    ex = info.extras
    assert ex["uncertainty"].shape == (B,) and ex["belief"].shape == (B, K)
    assert ex["modality_uncertainty"].shape == (B, 3) and ex["modality_belief"].shape == (B, 3, K)
    for j, m in enumerate(MODS):
        e = F.softplus(fusion.heads[m](x[m]))
        s = e.sum(-1) + K
        torch.testing.assert_close(ex["modality_belief"][:, j], e / s[:, None])
        torch.testing.assert_close(ex["modality_uncertainty"][:, j], K / s)
    torch.testing.assert_close(ex["belief"].sum(-1) + ex["uncertainty"], torch.ones(B))


def test_pseudo_view_is_one_more_opinion() -> None:
    fusion = make(pseudo_view=True)
    x = vectors()
    present = {"audio": torch.tensor([True, False, True, True, False, True])}
    full = {m: present.get(m, torch.ones(B, dtype=torch.bool)) for m in MODS}
    out, info = fusion(x, present, return_intermediates=True)
    xz = {**x, "audio": torch.where(present["audio"][:, None], x["audio"], 0.0)}  # the contract's zeros
    torch.testing.assert_close(out, expected_log_probs(fusion, xz, full, pseudo=True), rtol=1e-5, atol=1e-6)
    assert {"pseudo_belief", "pseudo_uncertainty"} <= set(info.extras)
    check_contract(fusion, x, {}, missing="image")
    # weight names do not depend on the option, beyond the head it adds
    plain = set(make().state_dict())
    assert plain <= set(fusion.state_dict()) and {k.split(".")[0] for k in set(fusion.state_dict()) - plain} == {
        "pseudo_head"}


def test_contract_with_sequences_and_a_missing_modality() -> None:
    fusion = make()
    g = torch.Generator().manual_seed(2)
    x = {m: torch.randn(B, 3, d, generator=g) for m, d in DIMS.items()}
    masks = {m: torch.rand(B, 3, generator=g) > 0.3 for m in DIMS}
    for m in masks:
        masks[m][:, 0] = True
    check_contract(fusion, x, masks, missing="text")


def test_bad_options_raise() -> None:
    with pytest.raises(FusionError, match="expected at least 2, got 1"):
        mmfuse.create_fusion("trusted", input_dims=DIMS, output_dim=1)
    with pytest.raises(FusionError, match="annealing_epochs: expected a positive int, got 0"):
        mmfuse.create_fusion("trusted", input_dims=DIMS, output_dim=3, annealing_epochs=0)


# ------------------------------------------------------------- the loss
def test_loss_of_one_dirichlet_by_hand() -> None:
    """alpha = (3, 1, 2), y = 0: S = 6, E-CE = psi(6) - psi(3) = 1/3 + 1/4 + 1/5;
    alpha~ = (1, 1, 2): Dir(1, 1, 2) has density 6 p_3 against Dir(1)'s 2, so
    KL = log 3 + E[log p_3] with p_3 ~ Beta(2, 2): E[log p_3] = psi(2) - psi(4) = -(1/2 + 1/3)."""
    alpha = torch.tensor([[3.0, 1.0, 2.0], [1.0, 5.0, 1.0]], dtype=torch.float64)
    s = alpha.sum(-1)
    b, u = (alpha - 1) / s[:, None], 3 / s
    y = torch.tensor([0, 1])
    ce0 = 1 / 3 + 1 / 4 + 1 / 5
    kl0 = math.log(3) - (1 / 2 + 1 / 3)
    # second row: alpha~ = (1, 1, 1) is Dir(1) itself: KL 0; E-CE = psi(7) - psi(5) = 1/5 + 1/6
    ce1 = 1 / 5 + 1 / 6
    for lam in (0.0, 0.3, 1.0):
        got = dirichlet_loss(b, u, y, lam)
        torch.testing.assert_close(got, torch.tensor([ce0 + lam * kl0, ce1], dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)


def authors_loss(y: Tensor, alpha: Tensor, step: int, annealing_step: int) -> Tensor:
    """hanmenghan/TMC's per-sample ``ce_loss`` (with its ``KL``), float64."""
    c = alpha.shape[-1]
    s = alpha.sum(1, keepdim=True)
    label = F.one_hot(y, c).double()
    a = (label * (torch.digamma(s) - torch.digamma(alpha))).sum(1, keepdim=True)
    coef = min(1, step / annealing_step)
    alp = (alpha - 1) * (1 - label) + 1
    beta = torch.ones((1, c), dtype=torch.float64)
    s_alpha, s_beta = alp.sum(1, keepdim=True), beta.sum(1, keepdim=True)
    ln_b = torch.lgamma(s_alpha) - torch.lgamma(alp).sum(1, keepdim=True)
    ln_b_uni = torch.lgamma(beta).sum(1, keepdim=True) - torch.lgamma(s_beta)
    kl = ((alp - beta) * (torch.digamma(alp) - torch.digamma(s_alpha))).sum(1, keepdim=True) + ln_b + ln_b_uni
    return (a + coef * kl)[:, 0]


@pytest.mark.parametrize("pseudo", [False, True], ids=["tmc", "etmc"])
def test_training_loss_is_the_papers_sum_over_views_and_combination(pseudo: bool) -> None:
    fusion = make(pseudo_view=pseudo, annealing_epochs=4)
    x = vectors()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    present = {"image": torch.tensor([True, False, True, True, False, True])}
    _, info = fusion(x, present, return_intermediates=True)
    xz = {**x, "image": torch.where(present["image"][:, None], x["image"], 0.0)}
    alphas = {m: F.softplus(fusion.heads[m](xz[m])).double() + 1 for m in MODS}
    if pseudo:
        alphas["pseudo"] = F.softplus(fusion.pseudo_head(torch.cat([xz[m] for m in MODS], -1))).double() + 1
    for epoch in (0, 1, 3, 10):
        step = epoch + 1  # the authors count epochs from 1
        expected = torch.zeros(B, dtype=torch.float64)
        for i in range(B):
            views = [m for m in alphas if m != "image" or bool(present["image"][i])]
            chosen = [alphas[m][i : i + 1] for m in views]
            for alpha in [*chosen, ds_combin(chosen)]:
                expected[i] += authors_loss(y[i : i + 1], alpha, step, 4)[0]
        got = fusion.training_loss(info, y, epoch=epoch)
        torch.testing.assert_close(got.double(), expected.mean(), rtol=1e-5, atol=1e-5)


def test_the_loss_trains_the_evidence_toward_the_target() -> None:
    fusion = make()
    fusion.train()
    x = vectors()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    opt = torch.optim.Adam(fusion.parameters(), lr=0.05)
    for _ in range(60):
        _, info = fusion(x, return_intermediates=True)
        loss = fusion.training_loss(info, y, epoch=20)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out, info = fusion.eval()(x, return_intermediates=True)
    assert torch.equal(out.argmax(-1), y)
    assert (info.extras["uncertainty"] < 0.5).all()
