"""Interaction diagnosis: partial information decomposition of what two modalities
say about the label (redundancy, uniqueness, synergy).

Shape legend: ``n`` samples, ``K`` discrete values of a modality (clusters), ``k``
classes.

Estimator: the CVX estimator of Liang et al. 2023, "Quantifying & Modeling Multimodal
Interactions: An Information Decomposition Framework" (NeurIPS), i.e. the BROJA
decomposition (Bertschinger et al. 2014) of the empirical joint distribution
``P(x1, x2, y)`` of two *discrete* variables and the label. With
``Delta_P = {Q : Q(x1, y) = P(x1, y), Q(x2, y) = P(x2, y)}`` and the convex program::

    Q* = argmin_{Q in Delta_P} I_Q(X1, X2; Y)
       = argmin sum_{x1,x2,y} Q log(Q / (Q(x1, x2) P(y)))      (rel_entr, cvxpy)

the four terms, in bits, are::

    R  = I_P(X1; Y) + I_P(X2; Y) - I_Q*(X1, X2; Y)
    U1 = I_Q*(X1, X2; Y) - I_P(X2; Y)
    U2 = I_Q*(X1, X2; Y) - I_P(X1; Y)
    S  = I_P(X1, X2; Y) - I_Q*(X1, X2; Y)

so ``R + U1 + U2 + S = I_P(X1, X2; Y)``, ``R + U1 = I(X1; Y)``, ``R + U2 = I(X2; Y)``.
``cvxpy`` solves the program (exponential-cone solver, Clarabel by default); tiny
negative values from solver tolerance are clipped to 0 and the clip is at most
``1e-6`` bits by the default tolerance.

Discretisation (:func:`discretise`): each modality's features (a sequence is the
mean of its valid tokens) are standardised (training-split mean and std) and
clustered by k-means (``scipy.cluster.vq.kmeans2``, ``k-means++`` init, fixed seed)
into ``num_clusters`` clusters fitted on the training split; the decomposition is
estimated on the samples given (the bench uses the training split, where there are
most). Alternatively the discrete variables are the class predictions of trained
unimodal models (:func:`pid_from_predictions`); note that predictions of a
unimodal model can only show what that modality says alone, so on a purely
synergistic task they sit at chance and the synergy term is invisible to them:
the data-side estimate is the one that diagnoses synergy.

Plug-in estimates of mutual information are biased upwards by about
``(|X1||X2| - 1)(k - 1) / (2 n ln 2)`` bits for ``I(X1, X2; Y)``; keep ``num_clusters``
small relative to ``n`` (``num_clusters**2 * k`` well below ``n``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse.data._base import DatasetSplits, MultimodalDataset
from mmfuse.errors import MmfuseError
from mmfuse.records import check_format, stamp

__all__ = [
    "InteractionDiagnosis",
    "PID",
    "diagnose_interactions",
    "discretise",
    "pid",
    "pid_from_predictions",
    "pid_from_samples",
]

#: the version of an :class:`InteractionDiagnosis` document (its own file in a bench's ``diagnosis/``)
DIAGNOSIS_VERSION = 1
TERMS = ("redundancy", "uniqueness", "synergy")


@dataclass(frozen=True)
class PID:
    """Partial information decomposition of ``I(X1, X2; Y)`` in bits.

    Attributes:
        redundancy: ``R``.
        unique1: ``U1``, information only ``X1`` has.
        unique2: ``U2``.
        synergy: ``S``.
        total: ``I(X1, X2; Y)``.
    """

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    total: float

    @property
    def uniqueness(self) -> float:
        return self.unique1 + self.unique2

    def dominant(self) -> str:
        """``"redundancy"``, ``"uniqueness"`` (``U1 + U2``) or ``"synergy"``, the largest."""
        terms = {"redundancy": self.redundancy, "uniqueness": self.uniqueness, "synergy": self.synergy}
        return max(terms, key=terms.__getitem__)

    def to_json(self) -> dict[str, float]:
        return {"redundancy": self.redundancy, "unique1": self.unique1, "unique2": self.unique2,
                "synergy": self.synergy, "total": self.total}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PID:
        return cls(**{k: float(raw[k]) for k in ("redundancy", "unique1", "unique2", "synergy", "total")})


def _mi(pxy: np.ndarray) -> float:
    """Mutual information in bits of a 2-d joint table."""
    px = pxy.sum(1, keepdims=True)
    py = pxy.sum(0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * np.log2(pxy[nz] / (px @ py)[nz])).sum())


def pid(joint: np.ndarray, *, solver: str | None = None) -> PID:
    """The BROJA/CVX decomposition of a joint distribution ``P[x1, x2, y]`` (see the
    module docstring).

    Args:
        joint: ``(K1, K2, k)`` non-negative table summing to 1.
        solver: a ``cvxpy`` solver name for exponential cones (default: cvxpy's choice).
    """
    import cvxpy as cp

    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 3 or (p < 0).any() or not np.isclose(p.sum(), 1.0, atol=1e-6):
        raise MmfuseError(f"joint: expected a (K1, K2, k) probability table, got shape {p.shape} summing to {p.sum():.4g}")
    # drop values that never occur (they only add variables)
    p = p[p.sum((1, 2)) > 0][:, p.sum((0, 2)) > 0][:, :, p.sum((0, 1)) > 0]
    k1, k2, ky = p.shape
    p = p / p.sum()
    py = p.sum((0, 1))
    i_x1y = _mi(p.sum(1))
    i_x2y = _mi(p.sum(0))
    i_all = _mi(p.reshape(k1 * k2, ky))
    if ky == 1:
        return PID(0.0, 0.0, 0.0, 0.0, 0.0)

    q = cp.Variable(k1 * k2 * ky, nonneg=True)  # index (x1, x2, y), C order
    idx = np.arange(k1 * k2 * ky).reshape(k1, k2, ky)
    # constraints as sparse matrix products: marginals (x1, y) and (x2, y) fixed
    def selector(groups: np.ndarray) -> np.ndarray:
        rows = groups.reshape(groups.shape[0], -1)
        mat = np.zeros((rows.shape[0], k1 * k2 * ky))
        for r, cols in enumerate(rows):
            mat[r, cols] = 1.0
        return mat

    a1 = selector(idx.transpose(0, 2, 1).reshape(k1 * ky, k2))
    a2 = selector(idx.transpose(1, 2, 0).reshape(k2 * ky, k1))
    b1 = p.sum(1).reshape(-1)
    b2 = p.sum(0).reshape(-1)
    # Q(x1, x2) repeated along y, times P(y): the product distribution's table
    a12 = selector(idx.reshape(k1 * k2, ky))  # (k1 k2, n)
    rep = np.repeat(np.eye(k1 * k2), ky, axis=0)  # (n, k1 k2)
    py_full = np.tile(py, k1 * k2)
    marg = cp.multiply(py_full, rep @ (a12 @ q))
    objective = cp.Minimize(cp.sum(cp.rel_entr(q, marg)) / np.log(2))
    problem = cp.Problem(objective, [a1 @ q == b1, a2 @ q == b2])
    problem.solve(solver=solver)
    if problem.status not in ("optimal", "optimal_inaccurate") or q.value is None:
        raise MmfuseError(f"pid: the convex program did not solve: status {problem.status!r}")
    qv = np.clip(q.value, 0, None).reshape(k1, k2, ky)
    qv = qv / qv.sum()
    i_q = min(_mi(qv.reshape(k1 * k2, ky)), i_all)  # I_Q* <= I_P: P is feasible
    def clip(v: float) -> float:
        return max(0.0, float(v))

    return PID(
        redundancy=clip(i_x1y + i_x2y - i_q),
        unique1=clip(i_q - i_x2y),
        unique2=clip(i_q - i_x1y),
        synergy=clip(i_all - i_q),
        total=i_all,
    )


def pid_from_samples(x1: Sequence[int] | np.ndarray, x2: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> PID:
    """PID of the empirical joint of three integer arrays of equal length ``n``."""
    a, b, c = (np.asarray(v).astype(np.int64).reshape(-1) for v in (x1, x2, y))
    if not (len(a) == len(b) == len(c)) or len(a) == 0:
        raise MmfuseError(f"pid_from_samples: expected three non-empty arrays of one length, got {len(a)}, {len(b)}, {len(c)}")
    if min(a.min(), b.min(), c.min()) < 0:
        raise MmfuseError("pid_from_samples: expected non-negative integer codes")
    joint = np.zeros((a.max() + 1, b.max() + 1, c.max() + 1))
    np.add.at(joint, (a, b, c), 1.0)
    return pid(joint / len(a))


def pid_from_predictions(pred1: Sequence[int] | np.ndarray, pred2: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> PID:
    """PID with the class predictions of two trained unimodal models as ``X1``, ``X2``
    (see the module docstring for what this can and cannot show)."""
    return pid_from_samples(pred1, pred2, y)


def _features(ds: MultimodalDataset, mod: str) -> np.ndarray:
    x = ds.inputs[mod].float()
    mask = ds.masks[mod]
    if x.dim() == 3:
        w = (mask if mask.dim() == 2 else mask[:, None].expand(-1, x.shape[1])).float().unsqueeze(-1)
        x = (x * w).sum(1) / w.sum(1).clamp_min(1.0)
    return x.reshape(len(ds), -1).numpy().astype(np.float64)


def joint_embeddings(
    splits: DatasetSplits, *, embed_dim: int = 2, hidden: int = 64, steps: int = 300, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each modality's ``(n, embed_dim)`` embedding of the training and test splits,
    learned for the label *jointly*: a linear map per modality (standardised
    features, a sequence's token mean) to ``embed_dim`` dimensions, concatenated, then
    an MLP (``hidden`` ReLU units) to the classes, trained full-batch with Adam for
    ``steps`` steps (weight decay 1e-3). A modality's embedding keeps the directions
    the label needs *together with the others*, so a synergistic direction (useless
    alone) is kept too."""
    import torch

    torch.manual_seed(seed)
    mods = splits.modalities
    tr = {m: _features(splits.train, m) for m in mods}
    te = {m: _features(splits.test, m) for m in mods}
    stats = {m: (tr[m].mean(0), tr[m].std(0) + 1e-8) for m in mods}
    def tens(f: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {m: torch.as_tensor((f[m] - stats[m][0]) / stats[m][1], dtype=torch.float32) for m in mods}

    xtr, xte = tens(tr), tens(te)
    enc = torch.nn.ModuleDict({m: torch.nn.Linear(xtr[m].shape[1], embed_dim) for m in mods})
    head = torch.nn.Sequential(torch.nn.Linear(embed_dim * len(mods), hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, splits.num_classes))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-2, weight_decay=1e-3)
    y = splits.train.labels
    for _ in range(steps):
        opt.zero_grad()
        logits = head(torch.cat([enc[m](xtr[m]) for m in mods], 1))
        torch.nn.functional.cross_entropy(logits, y).backward()
        opt.step()
    with torch.no_grad():
        return ({m: enc[m](xtr[m]).numpy().astype(np.float64) for m in mods},
                {m: enc[m](xte[m]).numpy().astype(np.float64) for m in mods})


def _kmeans_codes(fit_on: np.ndarray, data: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """``(n,)`` k-means cluster of each row of ``data``, the clusters fitted on ``fit_on``.

    Degenerate inputs are handled, not left to scipy's warnings: a modality with fewer
    distinct (standardised) points than ``num_clusters`` gets one cluster per distinct
    point, a constant one (zero variance: ``k-means++`` would divide 0 by 0) one cluster,
    code 0 for every row, since it tells nothing about the label; and a cluster that
    empties while Lloyd's iterations run means the data holds fewer clusters: k-means
    runs again with one fewer.
    """
    from scipy.cluster.vq import ClusterError, kmeans2, vq

    mu, sd = fit_on.mean(0), fit_on.std(0) + 1e-8
    x = (fit_on - mu) / sd
    k = min(num_clusters, len(np.unique(x, axis=0)))
    while k > 1:
        try:
            centroids, _ = kmeans2(x, k, minit="++", seed=seed, missing="raise")
            break
        except ClusterError:
            k -= 1
    if k <= 1:
        return np.zeros(len(data), dtype=np.int64)
    codes, _ = vq((data - mu) / sd, centroids)
    return codes.astype(np.int64)


def discretise(
    train: MultimodalDataset, data: MultimodalDataset, modality: str, *, num_clusters: int = 4, seed: int = 0
) -> np.ndarray:
    """``(n,)`` cluster index of each sample of ``data`` for one modality: k-means with
    ``num_clusters`` clusters fitted on ``train``'s standardised features (see the
    module docstring)."""
    return _kmeans_codes(_features(train, modality), _features(data, modality), num_clusters, seed)


@dataclass(frozen=True)
class InteractionDiagnosis:
    """PID of every pair of a dataset's modalities, and the term that dominates.

    Attributes:
        dataset: the dataset's name.
        pairs: ``"a|b"`` -> :class:`PID` (``unique1`` is ``a``'s).
        dominant: the largest of redundancy, uniqueness, synergy summed over pairs.
        method: how the discrete variables were made (e.g. ``"kmeans-4"``).
        totals: term -> its sum over pairs.
    """

    dataset: str
    pairs: dict[str, PID]
    dominant: str
    method: str
    totals: dict[str, float] = field(default_factory=dict)

    def stands_out(self) -> str | None:
        """The term that clearly exceeds the others, or None: it is named only when it is at
        least :data:`STANDS_OUT_FLOOR` (0.05 bits) and at least :data:`STANDS_OUT_RATIO` (2)
        times the next largest term. Below the floor a term is within the estimator's noise
        (the plug-in bias of the module docstring is about 0.01-0.05 bits for a few thousand
        samples and 4 clusters), and "dominates" is not said of 0.02 bits; a term only a
        little above the next one does not dominate either."""
        t = self.totals
        order = sorted(("redundancy", "uniqueness", "synergy"), key=lambda k: -t[k])
        top, nxt = t[order[0]], t[order[1]]
        return order[0] if top >= STANDS_OUT_FLOOR and top >= STANDS_OUT_RATIO * nxt else None

    def sentence(self) -> str:
        """One plain clause, e.g. ``"synergy dominates (R 0.01, U 0.02, S 0.41 bits)"``, or
        ``"no interaction term stands out (...)"`` (see :meth:`stands_out`)."""
        t = self.totals
        # with more than two modalities the terms are sums of pairwise PIDs: an interaction
        # of three or more modalities at once is not in them
        over = f", summed over {len(self.pairs)} modality pairs" if len(self.pairs) > 1 else ""
        terms = f"(R {t['redundancy']:.2f}, U {t['uniqueness']:.2f}, S {t['synergy']:.2f} bits{over})"
        top = self.stands_out()
        if top is not None:
            return f"{top} dominates {terms}"
        if max(t.values()) < STANDS_OUT_FLOOR:
            return f"no interaction term stands out: all are below {STANDS_OUT_FLOOR:g} bits {terms}"
        return f"no interaction term stands out {terms}"

    def to_json(self) -> dict[str, Any]:
        return stamp("interaction_diagnosis", DIAGNOSIS_VERSION, {
            "dataset": self.dataset, "pairs": {k: v.to_json() for k, v in self.pairs.items()},
            "dominant": self.dominant, "method": self.method, "totals": dict(self.totals)})

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> InteractionDiagnosis:
        check_format(raw, "interaction_diagnosis", DIAGNOSIS_VERSION, legacy="schema_version")
        return cls(dataset=str(raw["dataset"]), pairs={k: PID.from_json(v) for k, v in raw["pairs"].items()},
                   dominant=str(raw["dominant"]), method=str(raw["method"]),
                   totals={k: float(v) for k, v in raw["totals"].items()})


#: a term is said to dominate only from this many bits (see :meth:`InteractionDiagnosis.stands_out`)
STANDS_OUT_FLOOR = 0.05
#: ... and at least this many times the next largest term
STANDS_OUT_RATIO = 2.0


def _diagnosis(name: str, pairs: dict[str, PID], method: str) -> InteractionDiagnosis:
    totals = {
        "redundancy": sum(p.redundancy for p in pairs.values()),
        "uniqueness": sum(p.uniqueness for p in pairs.values()),
        "synergy": sum(p.synergy for p in pairs.values()),
    }
    return InteractionDiagnosis(name, pairs, max(totals, key=totals.__getitem__), method, totals)


def diagnose_interactions(
    splits: DatasetSplits,
    *,
    num_clusters: int = 4,
    seed: int = 0,
    method: str = "joint",
    unimodal_predictions: Mapping[str, Sequence[int] | np.ndarray] | None = None,
) -> InteractionDiagnosis:
    """PID of every pair of ``splits``' modalities about the label.

    Args:
        splits: a classification dataset (binary or multiclass).
        num_clusters: k-means clusters per modality.
        seed: seed of the embedding fit and of k-means.
        method: ``"joint"`` (default): k-means of each modality's
            :func:`joint_embeddings` (fitted on the training split, PID on the test
            split); ``"kmeans"``: k-means of the raw standardised features
            (:func:`discretise`, PID on the training split).
        unimodal_predictions: modality -> ``(n_test,)`` class predictions of its
            trained unimodal model on the *test* split; when given, those are the
            discrete variables (on the test split) instead of the clusters.
    """
    if splits.task not in ("binary", "multiclass"):
        raise MmfuseError(f"{splits.name}: interaction diagnosis needs a classification task, got {splits.task!r}")
    mods = splits.modalities
    if len(mods) < 2:
        raise MmfuseError(f"{splits.name}: expected at least 2 modalities, got {list(mods)}")
    if unimodal_predictions is not None:
        missing = [m for m in mods if m not in unimodal_predictions]
        if missing:
            raise MmfuseError(f"unimodal_predictions: expected one per modality, missing {missing[0]!r}")
        codes = {m: np.asarray(unimodal_predictions[m]) for m in mods}
        y = splits.test.labels.numpy()
        method = "unimodal-predictions"
    elif method == "joint":
        emb_tr, emb_te = joint_embeddings(splits, seed=seed)
        codes = {m: _kmeans_codes(emb_tr[m], emb_te[m], num_clusters, seed) for m in mods}
        y = splits.test.labels.numpy()
        method = f"joint-embedding-kmeans-{num_clusters}"
    elif method == "kmeans":
        codes = {m: discretise(splits.train, splits.train, m, num_clusters=num_clusters, seed=seed) for m in mods}
        y = splits.train.labels.numpy()
        method = f"kmeans-{num_clusters}"
    else:
        raise MmfuseError(f"method: expected 'joint' or 'kmeans', got {method!r}")
    pairs = {f"{a}|{b}": pid_from_samples(codes[a], codes[b], y) for a, b in itertools.combinations(mods, 2)}
    return _diagnosis(splits.name, pairs, method)
