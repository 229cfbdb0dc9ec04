"""Shapley attribution of modalities: parity with hand computation, the axioms, sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mmfuse.bench.attribution import (
    ShapleyResult,
    modality_shapley,
    prior_value,
    shapley_values,
)
from mmfuse.data import ModalitySpec, MultimodalDataset
from mmfuse.errors import MmfuseError

# A 3-player game written out: v(empty)=0.5, singletons, pairs, all.
GAME = {
    "": 0.5, "a": 0.6, "b": 0.7, "c": 0.5,
    "a+b": 0.9, "a+c": 0.6, "b+c": 0.75, "a+b+c": 0.95,
}


def _v(s: frozenset[str]) -> float:
    return GAME["+".join(sorted(s))]


def test_exact_matches_hand_computed_values() -> None:
    r = shapley_values(_v, ["c", "a", "b"])
    # phi_a = 1/3 [v(a)-v()] + 1/6 [v(ab)-v(b)] + 1/6 [v(ac)-v(c)] + 1/3 [v(abc)-v(bc)]
    phi_a = (0.6 - 0.5) / 3 + (0.9 - 0.7) / 6 + (0.6 - 0.5) / 6 + (0.95 - 0.75) / 3
    phi_b = (0.7 - 0.5) / 3 + (0.9 - 0.6) / 6 + (0.75 - 0.5) / 6 + (0.95 - 0.6) / 3
    phi_c = (0.5 - 0.5) / 3 + (0.6 - 0.6) / 6 + (0.75 - 0.7) / 6 + (0.95 - 0.9) / 3
    assert r.exact and r.modalities == ("a", "b", "c")
    assert r.values["a"] == pytest.approx(phi_a)
    assert r.values["b"] == pytest.approx(phi_b)
    assert r.values["c"] == pytest.approx(phi_c)
    # I_ab = 1/2 [v(ab)-v(a)-v(b)+v()] + 1/2 [v(abc)-v(ac)-v(bc)+v(c)]
    i_ab = 0.5 * (0.9 - 0.6 - 0.7 + 0.5) + 0.5 * (0.95 - 0.6 - 0.75 + 0.5)
    assert r.interactions["a|b"] == pytest.approx(i_ab)
    assert r.v_empty == 0.5 and r.v_full == 0.95
    assert ShapleyResult.from_json(r.to_json()) == r


def test_efficiency_and_symmetry_on_a_random_game() -> None:
    gen = torch.Generator().manual_seed(0)
    mods = ["p", "q", "r", "s", "t"]
    table = {frozenset(c): float(torch.rand((), generator=gen))
             for r in range(6) for c in itertools.combinations(mods, r)}
    # make q and r interchangeable: v(S + q) = v(S + r) for S without both
    for s, val in list(table.items()):
        if "q" in s and "r" not in s:
            table[(s - {"q"}) | {"r"}] = val
    r = shapley_values(table.__getitem__, mods)
    assert sum(r.values.values()) == pytest.approx(r.v_full - r.v_empty)
    assert r.values["q"] == pytest.approx(r.values["r"])
    # a dummy player (adds nothing anywhere) gets 0
    dummy = shapley_values(lambda s: table[s - {"z"}], mods + ["z"])
    assert dummy.values["z"] == pytest.approx(0.0, abs=1e-12)
    assert dummy.interactions["p|z"] == pytest.approx(0.0, abs=1e-12)


def test_sampled_estimate_is_close_to_exact_and_efficient() -> None:
    gen = torch.Generator().manual_seed(1)
    mods = [f"m{i}" for i in range(6)]
    w = torch.rand(6, generator=gen)

    def v(s: frozenset[str]) -> float:  # additive part + a synergy of m0 and m1
        idx = [int(m[1:]) for m in s]
        return float(w[idx].sum()) + (0.5 if {"m0", "m1"} <= s else 0.0)

    exact = shapley_values(v, mods)
    sampled = shapley_values(v, mods, exact_max=3, num_permutations=400, seed=0)
    assert not sampled.exact and sampled.num_permutations == 400
    assert sum(sampled.values.values()) == pytest.approx(exact.v_full - exact.v_empty)
    for m in mods:
        # float sums in set order (string hashing varies per process): allow rounding, not error
        assert abs(sampled.values[m] - exact.values[m]) <= 4 * sampled.stderr[m] + 1e-6
    assert exact.values["m0"] == pytest.approx(float(w[0]) + 0.25)
    assert exact.interactions["m0|m1"] == pytest.approx(0.5)
    assert sampled.interactions["m0|m1"] == pytest.approx(0.5)  # the pair term is constant here
    assert abs(sampled.interactions["m2|m3"]) < 1e-6


class _SubsetModel(nn.Module):
    """Predicts class 1 for the first ``good[S]`` fraction of samples, where S is the set
    of modalities present (read from the masks), class 0 for the rest."""

    modalities = ("x0", "x1")

    def __init__(self, good: dict[str, int]) -> None:
        super().__init__()
        self.good = good
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, inputs, masks=None):
        present = [m for m in self.modalities if bool(masks[m].any())]
        n = inputs["x0"].shape[0]
        k = self.good["+".join(present)]
        logits = torch.zeros(n, 2)
        logits[:k, 1] = 1.0
        logits[k:, 0] = 1.0
        return logits + 0 * self.w


def _dataset(n: int, labels: torch.Tensor) -> MultimodalDataset:
    spec = ModalitySpec("vector", (3,))
    return MultimodalDataset("toy", {"x0": torch.zeros(n, 3), "x1": torch.zeros(n, 3)}, labels,
                             specs={"x0": spec, "x1": spec}, num_classes=2)


def test_model_game_masks_modalities_and_uses_the_prior_for_empty() -> None:
    test = _dataset(10, torch.ones(10, dtype=torch.long))
    train = _dataset(10, torch.tensor([0] * 7 + [1] * 3))  # majority class 0: prior accuracy 0
    model = _SubsetModel({"x0": 6, "x1": 2, "x0+x1": 9})
    r = modality_shapley(model, train, test, num_permutations=8)
    assert prior_value(train, test) == 0.0
    assert r.coalitions == pytest.approx({"": 0.0, "x0": 0.6, "x1": 0.2, "x0+x1": 0.9})
    assert r.values["x0"] == pytest.approx(0.5 * 0.6 + 0.5 * (0.9 - 0.2))
    assert r.values["x1"] == pytest.approx(0.5 * 0.2 + 0.5 * (0.9 - 0.6))
    assert r.interactions["x0|x1"] == pytest.approx(0.9 - 0.6 - 0.2 + 0.0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(MmfuseError, match="distinct"):
        shapley_values(_v, ["a", "a"])
    with pytest.raises(MmfuseError, match="num_permutations"):
        shapley_values(_v, ["a", "b", "c"], num_permutations=1)
    test = _dataset(4, torch.ones(4, dtype=torch.long))
    with pytest.raises(MmfuseError, match="metric"):
        prior_value(test, test, metric="nope")
    assert math.isclose(prior_value(test, test, metric="auroc"), 0.5)
