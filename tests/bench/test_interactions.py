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
def _degenerate(n: int = 240):
    """Three modalities of 240 samples: ``const`` never varies, ``label`` holds two distinct
    points (the label itself, so it tells everything), ``noise`` is noise."""
    import torch

    from mmfuse.data import DatasetSplits, ModalitySpec, MultimodalDataset

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    inputs = {"const": torch.ones(n, 5), "label": torch.as_tensor(np.repeat(y[:, None], 3, 1), dtype=torch.float32),
              "noise": torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32)}
    specs = {m: ModalitySpec("vector", (int(x.shape[1]),)) for m, x in inputs.items()}
    full = MultimodalDataset("degenerate", inputs, torch.as_tensor(y), specs=specs, num_classes=2)
    parts = [torch.arange(0, n // 2), torch.arange(n // 2, 3 * n // 4), torch.arange(3 * n // 4, n)]
    return DatasetSplits("degenerate", *(full.subset(p) for p in parts))


def _entropy_bits(y: np.ndarray) -> float:
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize("method", ["kmeans", "joint"])
def test_degenerate_modalities_are_diagnosed_without_scipy_warnings(method: str) -> None:
    """A constant modality (zero variance: k-means++ divided 0 by 0) and one with fewer distinct
    points than clusters ("One of the clusters is empty") are handled, not warned about."""
    import warnings

    splits = _degenerate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = diagnose_interactions(splits, method=method, num_clusters=4)
    y = (splits.train if method == "kmeans" else splits.test).labels.numpy()
    p = d.pairs["const|label"]  # const tells nothing; label tells H(Y), written out here
    assert (p.redundancy, p.unique1, p.synergy) == pytest.approx((0.0, 0.0, 0.0), abs=1e-5)
    assert p.unique2 == pytest.approx(_entropy_bits(y), abs=1e-4) and p.total == pytest.approx(_entropy_bits(y), abs=1e-4)
    q = d.pairs["const|noise"]  # whatever the noise's clusters say by chance, the constant adds nothing to it
    assert (q.redundancy, q.unique1, q.synergy) == pytest.approx((0.0, 0.0, 0.0), abs=1e-5)
    assert q.unique2 == pytest.approx(q.total, abs=1e-5)


def test_fewer_distinct_points_than_clusters_give_one_cluster_each() -> None:
    import warnings

    from mmfuse.bench.interactions import _kmeans_codes

    x = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]), 10, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = _kmeans_codes(x, x, num_clusters=6, seed=0)
        assert _kmeans_codes(np.ones((20, 3)), np.ones((4, 3)), num_clusters=4, seed=0).tolist() == [0] * 4
    # three clusters, one per distinct point: equal points share a code, different ones do not
    assert len(set(codes.tolist())) == 3
    assert all(len(set(codes[i * 10:(i + 1) * 10].tolist())) == 1 for i in range(3))
