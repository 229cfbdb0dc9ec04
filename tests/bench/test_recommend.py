"""Recommendation: a clear winner, ties never called decisive, a robust-and-cheaper pick."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.bench.recommend import Recommendation, StrategyResult, recommend
from mmfuse.errors import MmfuseError


def _result(name: str, acc: float, *, seeds: int = 3, n: int = 400, params: int = 1000, t: float = 1.0,
            missing: float | None = None, noise: float | None = None, rng_seed: int = 0) -> StrategyResult:
    rng = np.random.default_rng(rng_seed)
    correct = (rng.random((seeds, n)) < acc).astype(float)
    return StrategyResult(name, correct.mean(1).tolist(), correct, params, t, missing, noise)


def test_clear_winner_is_decisive() -> None:
    res = [_result("tensor", 0.95, rng_seed=1), _result("late", 0.70, rng_seed=2), _result("early", 0.72, rng_seed=3)]
    r = recommend(res, diagnosis="synergy dominates (R 0.00, U 0.01, S 0.40 bits)")
    assert r.best == r.pick == "tensor" and r.decisive and r.tied == ("tensor",)
    assert r.p_values["late"] < 0.01
    assert "significantly better" in r.sentence and r.sentence.startswith("Synergy dominates")
    assert f"{r.means['tensor']:.3f} vs {r.means['early']:.3f} for early (p < 0.0005)" in r.sentence
    assert Recommendation.from_json(r.to_json()) == r


def test_ties_are_never_called_decisive() -> None:
    # the same correctness for two strategies but one flipped sample: no real difference
    base = _result("a", 0.8, rng_seed=4)
    other = np.array(base.sample_scores, copy=True)
    other[0, 0] = 1 - other[0, 0]
    b = StrategyResult("b", other.mean(1).tolist(), other, params=500, train_time_s=0.5)
    a = StrategyResult("a", base.seed_scores, base.sample_scores, params=2000, train_time_s=2.0)
    r = recommend([a, b])
    assert set(r.tied) == {"a", "b"} and not r.decisive
    assert r.pick == "b"  # cheaper among ties
    assert "not significantly worse" in r.sentence and "significantly better" not in r.sentence
    assert "cheapest" in r.sentence


def test_robust_but_cheaper_pick() -> None:
    shared = _result("x", 0.9, rng_seed=5)
    def clone(name, params, missing):
        return StrategyResult(name, shared.seed_scores, shared.sample_scores, params, 1.0, missing, None)
    res = [clone("big_robust", 9000, 0.85), clone("small_fragile", 1000, 0.40), clone("mid_robust", 3000, 0.84),
           _result("bad", 0.6, rng_seed=6)]
    r = recommend(res)
    assert "bad" not in r.tied and not r.decisive
    assert r.pick == "mid_robust"  # within robust_tol of the most robust, and cheaper than big_robust
    assert "0.84 with a modality missing" in r.sentence and "most robust" in r.sentence


def test_bootstrap_p_value_agrees_with_the_paired_normal_approximation() -> None:
    """Checked against an independent computation, not the implementation's own draws: with one
    seed the bootstrap p-value of a paired mean difference approaches the normal approximation
    Phi(-(sum(d) - 1/2) / (sd(d) sqrt(n)))."""
    from math import erf, sqrt

    rng = np.random.default_rng(11)
    n = 2000
    a = (rng.random((1, n)) < 0.80).astype(float)
    flip = rng.random((1, n)) < 0.04  # b differs from a on a few samples, slightly worse on balance
    b = np.where(flip, (rng.random((1, n)) < 0.72).astype(float), a)
    ra = StrategyResult("a", a.mean(1).tolist(), a, 1, 1.0)
    rb = StrategyResult("b", b.mean(1).tolist(), b, 1, 1.0)
    r = recommend([ra, rb], num_bootstrap=20000, seed=0)
    assert r.best == "a"
    d = (a - b)[0]
    # the bootstrap counts a resampled difference of exactly 0 as "not better": on integer sums of d
    # that is P(sum <= 0), so the normal approximation takes the continuity correction of 1/2
    z = (d.sum() - 0.5) / (d.std(ddof=0) * sqrt(n))
    normal_p = 0.5 * (1 + erf(-z / sqrt(2)))
    assert 0.005 < normal_p < 0.5  # a case where the p-value is neither 0 nor 1
    assert abs(r.p_values["b"] - normal_p) < 0.02, (r.p_values["b"], normal_p)


def test_bootstrap_p_values_are_calibrated_under_the_null() -> None:
    """Two strategies of the same accuracy: a one-sided test at alpha = 0.05 rejects about 5 % of the
    time (the larger mean is always 'best', so the best-vs-other p-value is checked at 2 x alpha)."""
    rejections = 0
    reps = 300
    for k in range(reps):
        rng = np.random.default_rng(1000 + k)
        a = (rng.random((1, 300)) < 0.7).astype(float)
        b = (rng.random((1, 300)) < 0.7).astype(float)
        r = recommend([StrategyResult("a", a.mean(1).tolist(), a, 1, 1.0),
                       StrategyResult("b", b.mean(1).tolist(), b, 1, 1.0)], num_bootstrap=400, seed=k)
        other = "b" if r.best == "a" else "a"
        rejections += r.p_values[other] < 0.025  # one-sided 0.025 after choosing the best: 5 % two-sided
    rate = rejections / reps
    assert 0.01 <= rate <= 0.11, rate


def test_stuck_seed_is_named_and_bad_input_raises() -> None:
    s = np.ones((3, 10))
    s[2] = 0.0
    r = recommend([StrategyResult("only", [1.0, 1.0, 0.0], s, 10, 0.1)], chance=0.5)
    assert "seed(s) [2]" in r.sentence and not r.decisive
    with pytest.raises(MmfuseError, match="shape"):
        recommend([StrategyResult("a", [1.0], np.ones((1, 5)), 1, 1.0), StrategyResult("b", [1.0], np.ones((1, 4)), 1, 1.0)])
    with pytest.raises(MmfuseError, match="at least one"):
        recommend([])
