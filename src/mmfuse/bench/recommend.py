"""Recommend a strategy for one dataset from its measured results.

Shape legend: ``s`` seeds, ``n`` test samples.

1. *Which strategies are as good as the best.* The best is the highest mean over
   seeds of the main metric. Every other strategy is compared with it by a **paired
   bootstrap over test samples and seeds**: each of ``num_bootstrap`` resamples draws
   ``n`` test-sample indices and ``s`` seed indices with replacement, the same
   indices for both strategies (samples and seeds are paired: the same test split and
   the same seed numbers), and computes the difference of the mean per-sample score
   (correctness 0/1 for accuracy). The one-sided p-value is the fraction of resamples
   in which the other strategy is at least as good as the best. A strategy is *not
   significantly worse* when that p-value is at least ``alpha`` (default 0.05). With
   one seed the seed axis is not resampled.
2. *Which of those to use.* Among the tied set, robustness first, then cost: keep
   the strategies whose robustness (the lower of the worst missing-modality metric and
   the noise metric that were measured) is within ``robust_tol`` of the most robust
   tied one; among them take the fewest parameters (then the shortest train time).
   Without robustness numbers, cost alone decides.
3. *What to say.* One or two sentences citing the numbers and the interaction
   diagnosis. When several strategies are tied the sentence says so and calls the
   pick a choice by cost/robustness, never a win. A seed at or below ``chance`` is
   named, so a mean cannot hide a run stuck at chance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse.errors import MmfuseError

__all__ = ["SCHEMA_VERSION", "Recommendation", "StrategyResult", "recommend"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StrategyResult:
    """What the recommendation needs to know about one strategy on one dataset.

    Attributes:
        name: the strategy (as shown to the user).
        seed_scores: main metric per seed, ``(s,)``.
        sample_scores: ``(s, n)`` per-test-sample score per seed (correctness 0/1
            for accuracy), seeds in the same order for every strategy.
        params: trainable parameters.
        train_time_s: mean training time in seconds.
        worst_missing: the lowest main metric with one modality missing, or None.
        noise: the main metric under the noise corruption, or None.
    """

    name: str
    seed_scores: Sequence[float]
    sample_scores: Sequence[Sequence[float]] | np.ndarray
    params: int
    train_time_s: float
    worst_missing: float | None = None
    noise: float | None = None

    def robustness(self) -> float | None:
        vals = [v for v in (self.worst_missing, self.noise) if v is not None]
        return min(vals) if vals else None


@dataclass(frozen=True)
class Recommendation:
    """The outcome of :func:`recommend`.

    Attributes:
        best: the strategy with the highest mean main metric.
        tied: strategies not significantly worse than ``best`` (``best`` first, then
            by mean metric).
        pick: the one to use among ``tied``.
        decisive: True only when ``best`` is significantly better than every other.
        means: strategy -> mean main metric over seeds.
        p_values: strategy -> one-sided bootstrap p-value against ``best``.
        test: the significance test, in words.
        sentence: the recommendation in one or two plain sentences.
    """

    best: str
    tied: tuple[str, ...]
    pick: str
    decisive: bool
    means: dict[str, float]
    p_values: dict[str, float]
    test: str
    sentence: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "best": self.best, "tied": list(self.tied), "pick": self.pick,
                "decisive": self.decisive, "means": dict(self.means), "p_values": dict(self.p_values),
                "test": self.test, "sentence": self.sentence, "notes": list(self.notes)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Recommendation:
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise MmfuseError(f"Recommendation: expected schema_version {SCHEMA_VERSION}, got {raw.get('schema_version')!r}")
        return cls(best=raw["best"], tied=tuple(raw["tied"]), pick=raw["pick"], decisive=bool(raw["decisive"]),
                   means={k: float(v) for k, v in raw["means"].items()},
                   p_values={k: float(v) for k, v in raw["p_values"].items()}, test=raw["test"],
                   sentence=raw["sentence"], notes=tuple(raw.get("notes", ())))


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _p(p: float, num_bootstrap: int) -> str:
    return f"p < {1 / num_bootstrap:.2g}" if p == 0 else f"p = {p:.3f}"


def recommend(
    results: Sequence[StrategyResult],
    *,
    diagnosis: str | None = None,
    chance: float | None = None,
    alpha: float = 0.05,
    robust_tol: float = 0.02,
    num_bootstrap: int = 2000,
    seed: int = 0,
    metric: str = "accuracy",
) -> Recommendation:
    """Choose a strategy (see the module docstring).

    Args:
        results: one :class:`StrategyResult` per strategy (at least one), all with
            the same ``(s, n)`` sample scores.
        diagnosis: a clause on the dataset's interactions, e.g.
            :meth:`mmfuse.bench.interactions.InteractionDiagnosis.sentence`.
        chance: the metric of a chance predictor; seeds at or below it are named.
        alpha: significance level of the one-sided paired bootstrap.
        robust_tol: robustness within this of the most robust tied strategy counts
            as equally robust.
        num_bootstrap: bootstrap resamples.
        seed: seed of the resampling.
        metric: the main metric's name, for the sentence.
    """
    if not results:
        raise MmfuseError("results: expected at least one StrategyResult, got none")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise MmfuseError(f"results: expected distinct strategy names, got {names}")
    if not 0 < alpha < 1:
        raise MmfuseError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    scores = {r.name: np.asarray(r.sample_scores, dtype=np.float64) for r in results}
    shape = scores[names[0]].shape
    for r in results:
        a = scores[r.name]
        if a.ndim != 2 or a.shape != shape or a.size == 0:
            raise MmfuseError(f"{r.name}: sample_scores: expected shape {shape} (seeds, test samples) like "
                              f"{names[0]!r}, got {a.shape}")
        if len(r.seed_scores) != shape[0]:
            raise MmfuseError(f"{r.name}: seed_scores: expected {shape[0]} seeds, got {len(r.seed_scores)}")
    by_name = {r.name: r for r in results}
    means = {r.name: float(np.mean(r.seed_scores)) for r in results}
    best = max(names, key=lambda n: (means[n], -by_name[n].params))
    s, n = shape
    rng = np.random.default_rng(seed)
    sample_idx = rng.integers(0, n, size=(num_bootstrap, n))
    seed_idx = rng.integers(0, s, size=(num_bootstrap, s)) if s > 1 else np.zeros((num_bootstrap, 1), dtype=np.int64)

    def resampled(a: np.ndarray) -> np.ndarray:
        per_seed_sample = a[seed_idx[:, :, None], sample_idx[:, None, :]]  # (B, s, n)
        return per_seed_sample.mean(axis=(1, 2))

    boot_best = resampled(scores[best])
    p_values: dict[str, float] = {best: 1.0}
    for name in names:
        if name != best:
            diff = boot_best - resampled(scores[name])
            p_values[name] = float((diff <= 0).mean())
    tied = tuple([best] + sorted((x for x in names if x != best and p_values[x] >= alpha), key=lambda x: -means[x]))
    decisive = len(tied) == 1 and len(names) > 1

    robust = {x: by_name[x].robustness() for x in tied}
    known = [v for v in robust.values() if v is not None]
    pool = list(tied)
    if known:
        top = max(known)
        pool = [x for x in tied if robust[x] is not None and robust[x] >= top - robust_tol]
    pick = min(pool, key=lambda x: (by_name[x].params, by_name[x].train_time_s))

    test = (f"paired bootstrap over test samples and seeds ({num_bootstrap} resamples, "
            f"one-sided, alpha={alpha})")
    p = by_name[pick]
    lead = f"{diagnosis[0].upper()}{diagnosis[1:]}; " if diagnosis else ""
    rob = ""
    if p.worst_missing is not None:
        rob = f", keeps {p.worst_missing:.2f} with a modality missing"
    if p.noise is not None:
        rob += f", {p.noise:.2f} under noise"
    cost = f"{_params(p.params)} parameters, {p.train_time_s:.1f}s to train"
    if len(names) == 1:
        sentence = f"{lead}only {pick} was run: {metric} {means[pick]:.3f} ({cost}{rob})."
    elif decisive:
        runner = max((x for x in names if x != best), key=means.__getitem__)
        sentence = (f"{lead}{best} is significantly better than every other strategy: {metric} "
                    f"{means[best]:.3f} vs {means[runner]:.3f} for {runner} ({_p(p_values[runner], num_bootstrap)}); "
                    f"use it ({cost}{rob}).")
    else:
        others = ", ".join(x for x in tied)
        why = []
        if known and len(pool) < len(tied):
            why.append("the most robust")
        if len(pool) > 1 or not why:
            why.append("the cheapest")
        if pick == best:
            frac = ""
        else:
            frac = f", {by_name[pick].params / max(1, by_name[best].params):.2g}x the parameters of {best}"
        sentence = (f"{lead}{len(tied)} strategies are not significantly worse than the best ({best}, "
                    f"{metric} {means[best]:.3f}): {others}; among these ties, {pick} is "
                    f"{' and '.join(why)} ({metric} {means[pick]:.3f}, {cost}{frac}{rob}).")
    notes: list[str] = []
    if chance is not None:
        for r in results:
            stuck = [i for i, v in enumerate(r.seed_scores) if v <= chance]
            if stuck:
                notes.append(f"{r.name}: seed(s) {stuck} at or below chance ({chance:.3f})")
        stuck_pick = [x for x in notes if x.startswith(f"{pick}:")]
        if stuck_pick:
            sentence += f" Note: {stuck_pick[0]}."
    return Recommendation(best=best, tied=tied, pick=pick, decisive=decisive, means=means, p_values=p_values,
                          test=test, sentence=sentence, notes=tuple(notes))
