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


def test_bootstrap_p_value_parity_with_a_hand_loop() -> None:
    a, b = _result("a", 0.8, seeds=2, n=50, rng_seed=7), _result("b", 0.75, seeds=2, n=50, rng_seed=8)
    r = recommend([a, b], num_bootstrap=300, seed=3)
    rng = np.random.default_rng(3)
    si = rng.integers(0, 50, size=(300, 50))
    se = rng.integers(0, 2, size=(300, 2))
    sa, sb = np.asarray(a.sample_scores), np.asarray(b.sample_scores)
    best, other = (sa, sb) if r.best == "a" else (sb, sa)
    diffs = [best[se[i]][:, si[i]].mean() - other[se[i]][:, si[i]].mean() for i in range(300)]
    assert r.p_values["b" if r.best == "a" else "a"] == pytest.approx(np.mean(np.array(diffs) <= 0))


def test_stuck_seed_is_named_and_bad_input_raises() -> None:
    s = np.ones((3, 10))
    s[2] = 0.0
    r = recommend([StrategyResult("only", [1.0, 1.0, 0.0], s, 10, 0.1)], chance=0.5)
    assert "seed(s) [2]" in r.sentence and not r.decisive
    with pytest.raises(MmfuseError, match="shape"):
        recommend([StrategyResult("a", [1.0], np.ones((1, 5)), 1, 1.0), StrategyResult("b", [1.0], np.ones((1, 4)), 1, 1.0)])
    with pytest.raises(MmfuseError, match="at least one"):
        recommend([])
