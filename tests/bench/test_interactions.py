"""PID (BROJA / CVX estimator): exact values on known distributions, and the synthetic suite."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cvxpy")

from mmfuse.bench.interactions import (  # noqa: E402
    PID,
    InteractionDiagnosis,
    diagnose_interactions,
    pid,
    pid_from_samples,
)
from mmfuse.data.synthetic import load_synthetic  # noqa: E402
from mmfuse.errors import MmfuseError  # noqa: E402


def _table(rule) -> np.ndarray:
    p = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            p[a, b, rule(a, b)] += 0.25
    return p


def _close(r: PID, red: float, u1: float, u2: float, syn: float) -> None:
    assert (r.redundancy, r.unique1, r.unique2, r.synergy) == pytest.approx((red, u1, u2, syn), abs=1e-5)
    assert r.redundancy + r.unique1 + r.unique2 + r.synergy == pytest.approx(r.total, abs=1e-5)


def test_xor_is_all_synergy() -> None:
    _close(pid(_table(lambda a, b: a ^ b)), 0, 0, 0, 1)


def test_copy_is_all_redundancy() -> None:
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = p[1, 1, 1] = 0.5  # X1 = X2 = Y, one bit
    _close(pid(p), 1, 0, 0, 0)


def test_unique_bit() -> None:
    _close(pid(_table(lambda a, b: a)), 0, 1, 0, 0)
    _close(pid(_table(lambda a, b: b)), 0, 0, 1, 0)


def test_and_gate_known_values() -> None:
    # BROJA on AND (Bertschinger et al. 2014): R = 3/4 log2(4/3) ... = 0.3113, S = 0.5
    r = pid(_table(lambda a, b: a & b))
    h = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))
    _close(r, h - 0.5, 0, 0, 0.5)


def test_samples_match_the_table_and_bad_input_raises() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
    r = pid_from_samples(a, b, a ^ b)
    assert r.dominant() == "synergy" and r.synergy > 0.99
    with pytest.raises(MmfuseError, match="probability table"):
        pid(np.ones((2, 2)))
    with pytest.raises(MmfuseError, match="one length"):
        pid_from_samples([0, 1], [0], [1, 0])


@pytest.mark.parametrize("task", ["redundancy", "uniqueness", "synergy", "groups"])
def test_synthetic_task_dominant_term(task: str) -> None:
    splits = load_synthetic(task=task, n=1500)
    d = diagnose_interactions(splits)
    expected = {"redundancy": "redundancy", "uniqueness": "uniqueness", "synergy": "synergy", "groups": "synergy"}
    assert d.dominant == expected[task], d.sentence()
    assert InteractionDiagnosis.from_json(d.to_json()) == d
    # four modalities: six pairs, and the sentence says the terms are their sums
    assert ("summed over 6 modality pairs" in d.sentence()) == (task == "groups")
    if task == "uniqueness":
        p = d.pairs["x0|x1"]
        assert p.unique1 > 5 * p.unique2


@pytest.mark.parametrize(("r", "u", "s", "says"), [
    (0.00, 0.01, 0.02, "no interaction term stands out: all are below 0.05 bits"),  # "Synergy dominates (S 0.02)"
    (0.01, 0.02, 0.41, "synergy dominates"),
    (0.02, 0.08, 0.12, "no interaction term stands out ("),  # above the floor but not twice the next
    (0.30, 0.15, 0.01, "redundancy dominates"),  # exactly twice the next
])
def test_a_term_dominates_only_clearly_and_above_the_floor(r: float, u: float, s: float, says: str) -> None:
    from mmfuse.bench.interactions import STANDS_OUT_FLOOR, STANDS_OUT_RATIO
    from mmfuse.bench.verdict import DatasetVerdict

    assert (STANDS_OUT_FLOOR, STANDS_OUT_RATIO) == (0.05, 2.0)  # the values README documents
    d = InteractionDiagnosis("x", {}, "synergy", "joint", {"redundancy": r, "uniqueness": u, "synergy": s})
    text = d.sentence()
    assert text.startswith(says), text
    assert ("dominates" in text) == ("dominates" in says)
    assert f"R {r:.2f}, U {u:.2f}, S {s:.2f} bits" in text
    # the verdict says the diagnosis once, whether it leads the recommendation or not
    from mmfuse.bench.recommend import StrategyResult, recommend

    rec = recommend([StrategyResult("early", [0.9], np.ones((1, 10)), 10, 1.0)], diagnosis=text)
    assert DatasetVerdict("x", recommendation=rec, diagnosis=d).sentences().lower().count(text.lower()) == 1
    assert DatasetVerdict("x", diagnosis=d).sentences().count(text) == 1
