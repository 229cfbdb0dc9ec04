"""Balanced training (mmfuse.training.balance) against its equations on tiny models:
OGM-GE's coefficients, gradient scaling and noise; G-Blending's weights; MMPareto's
two-gradient min-norm weights and rescaled encoder gradients; the auxiliary loss; one
fit with every method and every registered strategy; the probe diagnostic."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mmfuse import list_fusions
from mmfuse.data import DatasetSplits, MultimodalDataset, load_dataset
from mmfuse.errors import ConfigError
from mmfuse.fusions import fusion_class, has_own_loss
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, TrainConfigError, fit
from mmfuse.training.balance import (
    Balancer,
    balance_methods,
    gblend_weights,
    modality_probe_accuracy,
    ogm_coefficients,
    pareto_weights,
)
from mmfuse.training.config import BalanceOptions
from mmfuse.training.metrics import take


@pytest.fixture(scope="module")
def two() -> DatasetSplits:
    return load_dataset("synthetic", task="redundancy", n=200, dim=6, num_classes=3, seed=1)


@pytest.fixture(scope="module")
def three_seq() -> DatasetSplits:
    return load_dataset("synthetic", task="redundancy", n=64, dim=4, num_modalities=3, form="sequence",
                        seq_len=4, val_fraction=0.25, test_fraction=0.25, seed=2)


def tiny(splits, fusion="gated", seed=0):
    torch.manual_seed(seed)
    model = build_model(splits, fusion=fusion, hidden_dim=8, dropout=0.0)
    return model.eval()  # no dropout anywhere: the gradients below are deterministic


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 32, "progress": False, "patience": 100}
    base.update(kw)
    return TrainConfig(**base)


def batch_with_missing(splits, n=16, missing=None):
    batch = take(splits.train, slice(0, n))
    if missing is not None:
        name, rows = missing
        mask = torch.ones(n, dtype=torch.bool)
        mask[rows] = False
        batch["masks"] = {**batch["masks"], name: mask}
    return batch


def encoder_grads(model, m):
    return [p.grad.clone() for p in model.encoders[m].parameters()]


# ------------------------------------------------------------------------- config
@pytest.mark.parametrize(("balance", "named"), [
    ("ogm", "balance.method"), ("", "balance.method"), ({"weight": 0.0}, "balance.weight"),
    ({"alpha": -1.0}, "balance.alpha"), ({"alpha": float("inf")}, "balance.alpha"), ({"gamma": True}, "balance.gamma"),
    ({"every": 0}, "balance.every"), ({"every": 1.5}, "balance.every"), ({"floor": 0.0}, "balance.floor"),
    ({"weigth": 2.0}, "unknown balance option 'weigth'"), (3, "balance: expected a method name"),
])
def test_bad_balance_settings_raise(balance, named) -> None:
    with pytest.raises(TrainConfigError, match=named):
        TrainConfig(balance=balance)


@pytest.mark.parametrize(("old", "new"), [("balance_weight", "balance.weight"), ("ogm_alpha", "balance.alpha"),
                                          ("gblend_every", "balance.every"), ("gblend_floor", "balance.floor"),
                                          ("pareto_gamma", "balance.gamma")])
def test_the_flat_names_of_before_are_refused_with_their_new_names(old, new) -> None:
    from mmfuse.experiment.config import train_config

    with pytest.raises(TrainConfigError, match=f"{old!r} is now {new!r}"):
        TrainConfig().replace(**{old: 2})
    with pytest.raises(ConfigError, match=f"{new}=2"):
        train_config({f"train.{old}": 2})


def test_balance_options_are_given_as_a_name_a_mapping_or_options_and_merge() -> None:
    assert TrainConfig().balance == BalanceOptions() and BalanceOptions().method is None
    on = TrainConfig(balance="gblend")
    assert on.balance == BalanceOptions(method="gblend")
    tuned = TrainConfig(balance={"method": "aux", "weight": 2})
    assert tuned.balance.weight == 2.0 and isinstance(tuned.balance.weight, float)  # 2 and 2.0: one key
    # a name keeps the options, a mapping changes only what it names, None turns balancing off
    assert tuned.replace(balance="mmpareto").balance == BalanceOptions(method="mmpareto", weight=2.0)
    assert tuned.replace(balance={"gamma": 3}).balance == BalanceOptions(method="aux", weight=2.0, gamma=3.0)
    assert tuned.replace(balance=None).balance.method is None
    assert TrainConfig.from_json(tuned.to_json()) == tuned


def test_train_config_is_frozen_and_normalises_through_its_copy() -> None:
    import dataclasses

    cfg = TrainConfig(accelerator="CPU", precision="bf16")
    assert (cfg.accelerator, cfg.precision) == ("cpu", "bf16-mixed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.balance.weight = 2.0  # type: ignore[misc]
    again = cfg.replace(lr=0.5)
    assert again.lr == 0.5 and cfg.lr == 1e-3 and again.precision == "bf16-mixed"


def test_every_listed_method_changes_the_training_step(two) -> None:
    """Each method the config accepts does something to a step: its loss or its encoder gradients
    differ from plain training's (so a listed method that does nothing fails here), and a name
    not listed is refused."""
    batch = batch_with_missing(two, missing=("x1", [2]))
    y = batch["label"]
    assert len(balance_methods()) == len(set(balance_methods())) >= 1
    for method in balance_methods():
        assert TrainConfig(balance=method).balance.method == method
        model = tiny(two, "late")
        bal = Balancer(model, cfg(balance=method))
        with torch.no_grad():  # heads of different confidence, so OGM-GE's ratio is not 1
            bal.heads["x0"].weight.mul_(8.0)
        if method == "gblend":  # two measurements: weights away from the start's uniform ones
            bal.gblend_update(torch.tensor([0.5, 0.6, 0.7]), torch.tensor([0.8, 0.9, 1.0]))
            bal.gblend_update(torch.tensor([0.3, 0.5, 0.6]), torch.tensor([0.7, 0.85, 1.05]))
        plain = F.cross_entropy(model(batch["inputs"], batch["masks"]), y)
        params = list(model.encoders["x0"].parameters())
        want = torch.autograd.grad(plain, params)
        model.zero_grad()
        bal.zero_grad()
        loss = bal.training_loss(model, batch)
        loss.backward()
        torch.manual_seed(0)
        bal.after_backward(model)
        got = [p.grad for p in params]
        same_loss = torch.allclose(loss, plain)
        same_grads = all(torch.allclose(g, w) for g, w in zip(got, want, strict=True))
        assert not (same_loss and same_grads), f"balance={method!r} trained exactly as no balancing does"
    with pytest.raises(TrainConfigError, match="balance"):
        TrainConfig(balance="not_a_method")


def test_a_method_registered_at_run_time_is_accepted_listed_and_keyed(monkeypatch) -> None:
    """The settings take their methods from the registry: a new method is one registration
    (accepted by TrainConfig and the bench, listed in BALANCE_METHODS, its options keyed)."""
    import mmfuse.training.balance as balance
    import mmfuse.training.config as config
    from mmfuse.bench.config import BenchConfig
    from mmfuse.experiment import DataSpec, ExperimentSpec, ModelSpec
    from mmfuse.training.balance import BalanceMethod, register_balance_method

    with pytest.raises(TrainConfigError, match="'halfaux'"):
        TrainConfig(balance="halfaux")
    monkeypatch.setattr(balance, "_METHODS", dict(balance._METHODS))  # the registry as it was, after the test

    @register_balance_method
    class HalfAux(BalanceMethod):
        name = "halfaux"
        options = ("weight",)

        def loss(self, balancer, model, fused, uni, logits, present, y):  # type: ignore[no-untyped-def]
            return fused + 0.5 * balancer.weight * sum(uni.values())

    assert config.BALANCE_METHODS[-1] == "halfaux" and "halfaux" in balance_methods()
    assert TrainConfig(balance="halfaux").balance.method == "halfaux"
    assert BenchConfig(balance=["halfaux"]).balance == ["halfaux"]
    spec = ExperimentSpec(data=DataSpec("synthetic"), model=ModelSpec(),
                          train=TrainConfig(balance={"method": "halfaux", "weight": 3, "gamma": 9}))
    assert spec.weights_identity()["train"]["balance"] == {"method": "halfaux", "weight": 3.0}
    with pytest.raises(TrainConfigError, match="unknown options"):
        @register_balance_method
        class Bad(BalanceMethod):
            name = "bad"
            options = ("beta",)


def test_ogm_ge_refuses_three_modalities_and_unimodal_models(three_seq, two) -> None:
    with pytest.raises(TrainConfigError, match="exactly 2 modalities, got 3"):
        Balancer(tiny(three_seq), cfg(balance="ogm_ge"))
    uni = build_unimodal_model(two, modality="x0", hidden_dim=8)
    with pytest.raises(TrainConfigError, match="expected a MultimodalModel"):
        fit(uni, two, cfg(balance="aux"))
    with pytest.raises(TrainConfigError, match="precision"):
        Balancer(tiny(two), cfg(balance="mmpareto", precision="16-mixed"))


def test_a_strategy_with_its_own_loss_is_refused_before_training(two, tmp_path) -> None:
    """trusted trains on its evidential loss; a balancing method would train it on cross-entropy
    instead, with nothing said (the balancer's loss replaces the fusion's in the training step)."""
    for method in ("aux", "gblend", "mmpareto", "ogm_ge"):
        with pytest.raises(TrainConfigError, match="'trusted' trains on a loss of its own"):
            fit(tiny(two, fusion="trusted"), two, cfg(balance=method), out_dir=tmp_path / method)
        assert not (tmp_path / method / "model.safetensors").exists()


def test_regression_task_refused() -> None:
    splits = load_dataset("synthetic", task="redundancy", n=40, dim=4, seed=0)
    val = splits.val
    reg = MultimodalDataset(val.name, val.inputs, val.labels.float(), specs=val.specs, num_classes=1,
                            masks=val.masks, task="regression")
    bad = DatasetSplits("reg", reg, reg, reg)
    model = tiny(splits)
    with pytest.raises(TrainConfigError, match="classification"):
        modality_probe_accuracy(model, bad)


def test_encode_then_classify_is_forward(three_seq) -> None:
    model = tiny(three_seq, "multihead_cross_attention")
    batch = batch_with_missing(three_seq, missing=("x1", [0, 3]))
    feats, masks = model.encode(batch["inputs"], batch["masks"])
    torch.testing.assert_close(model.classify(feats, masks), model(batch["inputs"], batch["masks"]))


# ---------------------------------------------------------------------------- aux
def test_aux_adds_the_weighted_per_modality_cross_entropy(two) -> None:
    model = tiny(two)
    bal = Balancer(model, cfg(balance={"method": "aux", "weight": 0.3}))
    batch = batch_with_missing(two, missing=("x1", [1, 2, 5]))
    y = batch["label"]
    got = bal.training_loss(model, batch)
    fused = F.cross_entropy(model(batch["inputs"], batch["masks"]), y)
    # by hand: x0 present everywhere; x1 missing in rows 1, 2, 5 -> mean over the other 13
    feats, _ = model.encode(batch["inputs"], batch["masks"])
    ce0 = -torch.log_softmax(bal.heads["x0"](feats["x0"]), -1)[torch.arange(16), y].mean()
    keep = torch.tensor([i not in (1, 2, 5) for i in range(16)])
    ce1 = -torch.log_softmax(bal.heads["x1"](feats["x1"]), -1)[torch.arange(16), y][keep].sum() / 13
    torch.testing.assert_close(got, fused + 0.3 * (ce0 + ce1))
    # the main prediction is the plain model's: the heads are not part of it
    assert not any(n.startswith("heads") for n, _ in model.named_parameters())


def test_aux_pools_tokens_with_their_mask(three_seq) -> None:
    model = tiny(three_seq, "late")
    bal = Balancer(model, cfg(balance={"method": "aux", "weight": 1.0}))
    batch = batch_with_missing(three_seq)
    y = batch["label"]
    feats, masks = model.encode(batch["inputs"], batch["masks"])
    total = F.cross_entropy(model(batch["inputs"], batch["masks"]), y)
    for m in model.modalities:
        tok = masks[m].float().unsqueeze(-1)
        pooled = (feats[m] * tok).sum(1) / tok.sum(1).clamp_min(1)
        total = total + F.cross_entropy(bal.heads[m](pooled), y)
    torch.testing.assert_close(bal.training_loss(model, batch), total)


# ------------------------------------------------------------------------- OGM-GE
def test_ogm_coefficients_equation_10() -> None:
    # Eq. 10: the modality whose score ratio rho = s_i / s_j exceeds 1 gets k = 1 - tanh(alpha * rho)
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        s_a, s_b = (float(v) for v in torch.rand(2, generator=rng) * 10 + 0.1)
        alpha = float(torch.rand(1, generator=rng))
        k = ogm_coefficients({"audio": s_a, "image": s_b}, alpha=alpha)
        dom, other = ("audio", "image") if s_a > s_b else ("image", "audio")
        rho = max(s_a, s_b) / min(s_a, s_b)
        assert k == {dom: pytest.approx(1 - (math.exp(2 * alpha * rho) - 1) / (math.exp(2 * alpha * rho) + 1)),
                     other: 1.0}
        assert 0 < k[dom] < 1  # the dominant one is slowed, never stopped or reversed
    # a larger lead is slowed more
    assert ogm_coefficients({"a": 8.0, "b": 2.0}, 0.3)["a"] < ogm_coefficients({"a": 4.0, "b": 2.0}, 0.3)["a"]
    assert ogm_coefficients({"a": 3.0, "b": 3.0}, alpha=1.0) == {"a": 1.0, "b": 1.0}
    with pytest.raises(TrainConfigError, match="2 modalities"):
        ogm_coefficients({"a": 1.0, "b": 1.0, "c": 1.0}, alpha=1.0)


def test_ogm_ge_modulates_the_dominant_encoder_on_a_hand_computed_batch(two) -> None:
    model = tiny(two, "late")
    alpha = 0.7
    bal = Balancer(model, cfg(balance={"method": "ogm_ge", "alpha": alpha}))
    with torch.no_grad():  # make the heads differ in confidence, so that rho is far from 1
        bal.heads["x0"].weight.mul_(8.0)
    batch = batch_with_missing(two, missing=("x1", [0, 7]))
    y = batch["label"]
    loss = bal.training_loss(model, batch)

    # scores by hand: summed softmax probability of the true class, over rows 1-6, 8-15 (both present)
    feats, _ = model.encode(batch["inputs"], batch["masks"])
    both = torch.tensor([i not in (0, 7) for i in range(16)])
    s = {m: torch.softmax(bal.heads[m](feats[m]), -1)[torch.arange(16), y][both].sum() for m in ("x0", "x1")}
    rho = float(s["x0"].detach() / s["x1"].detach())
    assert abs(rho - 1) > 0.05
    dom = "x0" if rho > 1 else "x1"
    k_dom = 1 - math.tanh(alpha * (rho if rho > 1 else 1 / rho))
    assert bal.coeffs[dom] == pytest.approx(k_dom, rel=1e-5)
    assert bal.coeffs["x1" if dom == "x0" else "x0"] == 1.0

    model.zero_grad()
    bal.zero_grad()
    loss.backward()
    # the encoders get the fused loss alone (the heads read detached features)
    fused = F.cross_entropy(model(batch["inputs"], batch["masks"]), y)
    for m in ("x0", "x1"):
        want = torch.autograd.grad(fused, list(model.encoders[m].parameters()), allow_unused=True,
                                   retain_graph=True)
        for g, w in zip(encoder_grads(model, m), want, strict=True):
            torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w)
    before = {m: encoder_grads(model, m) for m in ("x0", "x1")}
    rest = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders.")}
    torch.manual_seed(123)
    bal.after_backward(model)
    torch.manual_seed(123)  # the same noise draws, in the same order: x0's parameters, then x1's
    for m in ("x0", "x1"):
        k = bal.coeffs[m]
        for g, p in zip(before[m], model.encoders[m].parameters(), strict=True):
            want = k * g
            if want.numel() > 1:
                want = want + torch.randn_like(want) * (want.std() + 1e-8)
            torch.testing.assert_close(p.grad, want)
    for n, p in model.named_parameters():  # fusion and head untouched
        if not n.startswith("encoders."):
            torch.testing.assert_close(p.grad, rest[n])


# ---------------------------------------------------------------------- G-Blending
def _gblend_reference(prev_train, prev_val, train, val, floor=0.01):
    """Wang et al. 2020, written out per output: generalisation G_i = drop of the validation loss,
    overfitting O_i = growth of the validation-train gap, w_i proportional to G_i / O_i^2 (G_i > 0
    only, |O_i| at least ``floor``); None when no validation loss fell."""
    raw = []
    for pt, pv, t, v in zip(prev_train.tolist(), prev_val.tolist(), train.tolist(), val.tolist(), strict=True):
        g = pv - v
        o = (v - t) - (pv - pt)
        raw.append(g / max(abs(o), floor) ** 2 if g > 0 else 0.0)
    total = sum(raw)
    return None if total <= 0 else torch.tensor([r / total for r in raw])


def test_gblend_weights_match_the_equations_written_out() -> None:
    rng = torch.Generator().manual_seed(0)
    for _ in range(50):
        losses = [torch.rand(4, generator=rng) for _ in range(4)]
        got, want = gblend_weights(*losses), _gblend_reference(*losses)
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want.to(got.dtype))


def test_gblend_weights_from_given_losses() -> None:
    # outputs [fused, a, b] at checkpoints n and n+N
    prev_train, prev_val = torch.tensor([0.5, 0.6, 0.7]), torch.tensor([0.8, 0.9, 1.0])
    train, val = torch.tensor([0.3, 0.5, 0.6]), torch.tensor([0.7, 0.85, 1.05])
    # G = [0.1, 0.05, -0.05]; O = (val - train) - (prev_val - prev_train) = [0.1, 0.05, 0.15]
    # G / O^2 = [10, 20, (G<0) 0] -> [1/3, 2/3, 0]
    w = gblend_weights(prev_train, prev_val, train, val)
    torch.testing.assert_close(w, torch.tensor([1 / 3, 2 / 3, 0.0]))
    # no output generalised better: keep the old weights
    assert gblend_weights(prev_train, prev_val, train, prev_val + 0.01) is None
    # |O| below the floor counts as the floor: O = [0.001, 0.2] -> [0.01, 0.2] at floor 0.01
    prev_train, prev_val = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])
    train, val = torch.tensor([0.899, 0.7]), torch.tensor([0.9, 0.9])  # G = [0.1, 0.1]
    w = gblend_weights(prev_train, prev_val, train, val, floor=0.01)
    torch.testing.assert_close(w, torch.tensor([0.1 / 1e-4, 0.1 / 0.04]) / (0.1 / 1e-4 + 0.1 / 0.04))
    w = gblend_weights(prev_train, prev_val, train, val, floor=1e-4)
    torch.testing.assert_close(w, torch.tensor([0.1 / 1e-6, 0.1 / 0.04]) / (0.1 / 1e-6 + 0.1 / 0.04))


def test_gblend_loss_uses_the_estimated_weights(two) -> None:
    model = tiny(two)
    bal = Balancer(model, cfg(balance="gblend"))
    torch.testing.assert_close(bal.blend, torch.full((3,), 1 / 3))
    bal.gblend_update(torch.tensor([0.5, 0.6, 0.7]), torch.tensor([0.8, 0.9, 1.0]))
    torch.testing.assert_close(bal.blend, torch.full((3,), 1 / 3))  # one measurement: nothing to compare
    bal.gblend_update(torch.tensor([0.3, 0.5, 0.6]), torch.tensor([0.7, 0.85, 1.05]))
    w = _gblend_reference(torch.tensor([0.5, 0.6, 0.7]), torch.tensor([0.8, 0.9, 1.0]),
                          torch.tensor([0.3, 0.5, 0.6]), torch.tensor([0.7, 0.85, 1.05]))
    torch.testing.assert_close(bal.blend, w)
    batch = batch_with_missing(two)
    y = batch["label"]
    feats, _ = model.encode(batch["inputs"], batch["masks"])
    want = (w[0] * F.cross_entropy(model(batch["inputs"], batch["masks"]), y)
            + w[1] * F.cross_entropy(bal.heads["x0"](feats["x0"]), y)
            + w[2] * F.cross_entropy(bal.heads["x1"](feats["x1"]), y))
    torch.testing.assert_close(bal.training_loss(model, batch), want)


class Grab(L.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.balancer = pl_module.balancer


def test_gblend_reestimates_on_validation_and_resumes_exactly(two, tmp_path) -> None:
    config = cfg(balance="gblend", epochs=4)
    grab = Grab()
    full = fit(tiny(two).train(), two, config, callbacks=[grab])
    w = grab.balancer.blend
    assert bool(grab.balancer.measured) and w.sum().item() == pytest.approx(1.0) and bool((w >= 0).all())
    assert not torch.allclose(w, torch.full((3,), 1 / 3))  # re-estimated during the fit
    out = tmp_path / "run"
    fit(tiny(two).train(), two, config.replace(epochs=2), out)
    grab2 = Grab()
    resumed = fit(tiny(two).train(), two, config, out, resume=True, callbacks=[grab2])
    torch.testing.assert_close(grab2.balancer.blend, w)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)


def test_gblend_needs_a_validation_split(two) -> None:
    empty = two.val.subset([])
    with pytest.raises(TrainConfigError, match="validation split"):
        fit(tiny(two), DatasetSplits(two.name, two.train, empty, two.test), cfg(balance="gblend"))


# ------------------------------------------------------------------------ MMPareto
def test_pareto_weights_two_gradient_closed_form() -> None:
    g_f, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    a, b = pareto_weights(g_f, g_u)
    # min over a of |a g_f + (1 - a) g_u|^2: a = (|g_u|^2 - g_f.g_u) / |g_f - g_u|^2 = 3 / 5
    assert (a, b) == (pytest.approx(0.6), pytest.approx(0.4))
    d = a * g_f + b * g_u
    assert float(d @ (g_f - g_u)) == pytest.approx(0.0, abs=1e-6)  # the min-norm point is orthogonal to the edge
    assert pareto_weights(torch.tensor([1.0, 1.0]), torch.tensor([1.0, -0.5])) == (0.5, 0.5)  # no conflict
    assert pareto_weights(torch.zeros(2), torch.tensor([1.0, 0.0])) == (0.5, 0.5)
    # conflicting random gradients: the weight is the minimum-norm point, found here by a search
    rng = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    checked = 0
    while checked < 10:
        g_f, g_u = torch.randn(2, 6, generator=rng, dtype=torch.float64)
        if float(g_f @ g_u) >= 0:
            continue
        norms = ((grid[:, None] * g_f + (1 - grid[:, None]) * g_u) ** 2).sum(1)
        a, b = pareto_weights(g_f, g_u)
        assert a == pytest.approx(float(grid[norms.argmin()]), abs=1e-4) and a + b == pytest.approx(1.0)
        checked += 1


def test_mmpareto_replaces_encoder_gradients(three_seq) -> None:
    model = tiny(three_seq, "tensor")
    gamma = 1.5
    bal = Balancer(model, cfg(balance={"method": "mmpareto", "gamma": gamma}))
    batch = batch_with_missing(three_seq, missing=("x2", [3]))
    y = batch["label"]
    # the two objectives of each encoder, by hand
    feats, masks = model.encode(batch["inputs"], batch["masks"])
    fused = F.cross_entropy(model.classify(feats, masks), y)
    expected = {}
    for m in model.modalities:
        params = list(model.encoders[m].parameters())
        tok = masks[m].float().unsqueeze(-1)
        pooled = (feats[m] * tok).sum(1) / tok.sum(1).clamp_min(1)
        keep = masks[m].any(1).float()
        uni = (F.cross_entropy(bal.heads[m](pooled), y, reduction="none") * keep).sum() / keep.sum()
        g_f = torch.autograd.grad(fused, params, retain_graph=True)
        g_u = torch.autograd.grad(uni, params, retain_graph=True)
        ff = sum((g * g).sum() for g in g_f)
        uu = sum((g * g).sum() for g in g_u)
        fu = sum((g * h).sum() for g, h in zip(g_f, g_u, strict=True))
        a = 0.5 if fu > 0 else float(((uu - fu) / (ff + uu - 2 * fu)).clamp(0, 1))
        want = []
        for gf, gu in zip(g_f, g_u, strict=True):
            new = 2 * a * gf + 2 * (1 - a) * gu
            scale = max(1.0, float((gf + gu).norm() / new.norm())) if new.norm() > 0 else 1.0
            want.append(gamma * scale * new)
        expected[m] = want

    model.zero_grad()
    loss = bal.training_loss(model, batch)
    loss.backward()
    rest = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders.")}
    bal.after_backward(model)
    for m in model.modalities:
        for g, w in zip(encoder_grads(model, m), expected[m], strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    for n, p in model.named_parameters():  # fusion and head keep the plain gradient of L_f + sum L_i
        if not n.startswith("encoders."):
            torch.testing.assert_close(p.grad, rest[n])


# -------------------------------------------------- every method, every strategy
#: the strategies trained on cross-entropy (a strategy with a loss of its own is refused, tested above)
CE_FUSIONS = [f for f in list_fusions() if not has_own_loss(fusion_class(f))]


@pytest.mark.parametrize("method", balance_methods())
@pytest.mark.parametrize("fusion", CE_FUSIONS)
def test_every_method_fits_with_every_strategy(fusion, method, two, three_seq) -> None:
    splits = two if method == "ogm_ge" else three_seq  # OGM-GE is two-modality only
    model = tiny(splits, fusion).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grab = Grab()
    result = fit(model, splits, cfg(balance=method, batch_size=64), callbacks=[grab])
    assert math.isfinite(result.history[-1]["val_loss"])
    for m in model.modalities:  # every encoder was trained
        assert any(not torch.equal(p, before[f"encoders.{m}.{n}"]) for n, p in model.encoders[m].named_parameters())
    bal = grab.balancer
    if method == "ogm_ge":
        assert set(bal.coeffs) == {"x0", "x1"} and min(bal.coeffs.values()) < 1.0 <= max(bal.coeffs.values())
    if method == "gblend":
        assert bool(bal.measured) and bal.last_val.shape == (len(splits.modalities) + 1,)


# ---------------------------------------------------------------- the diagnostic
def test_probe_accuracy_reads_each_modality_inside_the_model() -> None:
    # uniqueness: x0 alone determines the label, x1 alone is at chance (0.5)
    splits = load_dataset("synthetic", task="uniqueness", n=600, dim=8, seed=3)
    model = tiny(splits, "gated")
    acc = modality_probe_accuracy(model, splits)
    assert set(acc) == {"x0", "x1"}
    assert acc["x0"] > 0.7 and 0.35 < acc["x1"] < 0.62
    # samples missing a modality are left out of its probe
    test = splits.test
    masks = {**test.masks, "x1": torch.zeros(len(test), dtype=torch.bool)}
    masked = MultimodalDataset(test.name, test.inputs, test.labels, specs=test.specs,
                               num_classes=test.num_classes, masks=masks)
    acc2 = modality_probe_accuracy(model, DatasetSplits(splits.name, splits.train, splits.val, masked))
    assert acc2["x0"] == pytest.approx(acc["x0"]) and math.isnan(acc2["x1"])
    with pytest.raises(TrainConfigError, match="split"):
        modality_probe_accuracy(model, splits, split="train")
