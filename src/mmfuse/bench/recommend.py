"""Recommend a strategy for one dataset from its measured results.

Shape legend: ``s`` seeds, ``n`` test samples, ``k`` classes.

1. *Which strategies are as good as the best.* The best is the best mean over seeds
   of the ranking metric (``metric``: the bench's ``--metric``). Every other strategy
   is compared with it by a **paired bootstrap over test samples and seeds**: each of
   ``num_bootstrap`` resamples draws ``n`` test-sample indices and ``s`` seed indices
   with replacement, the same indices for both strategies (samples and seeds are
   paired: the same test split and the same seed numbers), and recomputes the metric
   of each drawn seed on the drawn samples, averaged over the drawn seeds. A metric
   that is a mean over samples (accuracy: correctness 0/1; R^2: its per-sample terms;
   MAE) is the mean of ``sample_scores``; ``macro_f1`` is recomputed from each sample's
   class and predicted class, ``auroc`` from each sample's class and probabilities.
   The one-sided p-value is the fraction of resamples in which the other strategy is
   at least as good as the best. A strategy is *not significantly worse* when that
   p-value is at least ``alpha`` (default 0.05). With one seed the seed axis is not
   resampled.
2. *Which of those to use*, from what was measured, in this order:

   a. a tied strategy that another tied one *dominates* (better on the metric's
      mean, on robustness where both were measured, and on training time) is dropped:
      a strategy worse on the metric, on robustness and on time is never preferred
      for its fewer parameters;
   b. robustness (the lower of the worst missing-modality metric and the noise
      metric that were measured): keep those within ``robust_tol`` of the most robust;
   c. measured cost, each in turn where every remaining strategy has it: training
      time, then inference throughput, then training-step memory; keep those within
      a factor ``cost_tol`` (1.2) of the best on it (measured times are noisy);
   d. parameters last: the fewest.
3. *What to say.* One or two sentences citing the numbers and the interaction
   diagnosis. When several strategies are tied the sentence says so and calls the
   pick a choice among ties, never a win. Every adjective is true of the table:
   "the most robust" only for the most robust tied strategy (else "among the most
   robust", with the most robust named), "the fastest to train" only for the fastest
   of the set it names, and so on. A seed at or below ``chance`` is named, so a mean
   cannot hide a run stuck at chance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse.errors import MmfuseError

__all__ = ["Recommendation", "StrategyResult", "recommend"]

#: the version key Recommendation wrote of its own before it was nested without one (still read)
LEGACY_VERSION = 1


@dataclass(frozen=True)
class StrategyResult:
    """What the recommendation needs to know about one strategy on one dataset.

    Attributes:
        name: the strategy (as shown to the user).
        seed_scores: the ranking metric per seed, ``(s,)``.
        sample_scores: ``(s, n)`` per-test-sample score per seed (correctness 0/1
            for accuracy), seeds in the same order for every strategy.
        params: trainable parameters.
        train_time_s: mean training time in seconds.
        worst_missing: the lowest metric with one modality missing, or None.
        noise: the metric under the noise corruption, or None.
        throughput_sps: test samples per second of the forward pass, or None.
        memory_mb: training-step memory in MiB, or None.
        predictions: ``(s, n)`` predicted class per seed and test sample (for ``macro_f1``).
        probabilities: ``(s, n)`` probability of class 1 (binary) or ``(s, n, k)`` of
            every class, per seed and test sample (for ``auroc``).
    """

    name: str
    seed_scores: Sequence[float]
    sample_scores: Sequence[Sequence[float]] | np.ndarray
    params: int
    train_time_s: float
    worst_missing: float | None = None
    noise: float | None = None
    throughput_sps: float | None = None
    memory_mb: float | None = None
    predictions: Sequence[Sequence[int]] | np.ndarray | None = None
    probabilities: Sequence[Any] | np.ndarray | None = None

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
        """No version of its own: it is stored in the bench's results (``results.json``'s verdicts)."""
        return {"best": self.best, "tied": list(self.tied), "pick": self.pick,
                "decisive": self.decisive, "means": dict(self.means), "p_values": dict(self.p_values),
                "test": self.test, "sentence": self.sentence, "notes": list(self.notes)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Recommendation:
        if raw.get("schema_version", LEGACY_VERSION) != LEGACY_VERSION:
            raise MmfuseError(f"Recommendation: expected schema_version {LEGACY_VERSION} or none, got "
                              f"{raw.get('schema_version')!r}")
        return cls(best=raw["best"], tied=tuple(raw["tied"]), pick=raw["pick"], decisive=bool(raw["decisive"]),
                   means={k: float(v) for k, v in raw["means"].items()},
                   p_values={k: float(v) for k, v in raw["p_values"].items()}, test=raw["test"],
                   sentence=raw["sentence"], notes=tuple(raw.get("notes", ())))


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _p(p: float, num_bootstrap: int) -> str:
    return f"p < {1 / num_bootstrap:.2g}" if p == 0 else f"p = {p:.3f}"


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, starts, values)``: the samples sorted by ``keys``, where each run of equal
    keys starts in that order, and its key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return order, starts, k[starts]


def resampled_macro_f1(counts: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Macro-F1 of ``predictions`` against ``labels`` (``(n,)`` classes each) on resamples given
    by ``counts`` (``(B, n)``: how many times each sample is drawn): per class ``c``,
    ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)`` over the drawn samples, averaged over the
    classes that occur in the drawn labels or predictions (as :func:`mmfuse.training.metrics.task_metrics`).
    Returns ``(B,)``."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    k = int(max(labels.max(), predictions.max())) + 1
    order, starts, codes = _groups(labels * k + predictions)
    conf = np.add.reduceat(counts[:, order], starts, axis=1)  # (B, g): drawn samples per (label, prediction)
    t, p = codes // k, codes % k
    hit = (t == p).astype(np.float64)
    onehot_t, onehot_p = np.eye(k)[t], np.eye(k)[p]  # (g, k): each group's class and predicted class
    tp = conf @ (onehot_t * hit[:, None])
    fn = conf @ (onehot_t * (1 - hit)[:, None])
    fp = conf @ (onehot_p * (1 - hit)[:, None])
    den = 2 * tp + fp + fn
    seen = den > 0
    f1 = np.where(seen, 2 * tp / np.where(seen, den, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(seen.sum(axis=1), 1)


def resampled_binary_auroc(counts: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` for the 0/1 targets ``positive`` (``(n,)`` each) on resamples given by
    ``counts`` (``(B, n)``): P(score of a drawn positive > score of a drawn negative), ties
    counting 1/2, each sample weighted by how often it is drawn. NaN where a resample has
    no positive or no negative. Returns ``(B,)``."""
    positive = np.asarray(positive, dtype=bool)
    order, starts, _ = _groups(np.asarray(scores, dtype=np.float64))
    c = counts[:, order]
    pos = np.add.reduceat(c * positive[order], starts, axis=1)  # (B, g) drawn positives per score value
    neg = np.add.reduceat(c * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # drawn negatives with a lower score
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def resampled_auroc(counts: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """AUROC on resamples (``counts``, ``(B, n)``): of the class-1 probability ``(n,)`` for two
    classes; for ``(n, k)`` probabilities the mean one-vs-rest AUROC over the classes with
    both outcomes drawn (as :func:`mmfuse.training.metrics.task_metrics`). Returns ``(B,)``."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        return resampled_binary_auroc(counts, labels == 1, probabilities)
    per = np.stack([resampled_binary_auroc(counts, labels == c, probabilities[:, c])
                    for c in range(probabilities.shape[1])], axis=1)
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(per)
        return np.where(ok.any(axis=1), np.where(ok, per, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), np.nan)


def _statistic(metric: str, results: Sequence[StrategyResult], labels: np.ndarray | None) -> str:
    """How the bootstrap recomputes ``metric``: ``mean`` of the sample scores, ``macro_f1`` or ``auroc``."""
    if metric == "macro_f1" and all(r.predictions is not None for r in results) and labels is not None:
        return "macro_f1"
    if metric == "auroc" and all(r.probabilities is not None for r in results) and labels is not None:
        return "auroc"
    if metric in ("macro_f1", "auroc", "micro_f1", "map", "rmse"):
        raise MmfuseError(f"metric {metric!r}: the significance test recomputes it on resampled test samples and "
                          "needs each sample's class and the models' predictions"
                          + (" (probabilities)" if metric == "auroc" else "") + "; they were not recorded "
                          "(re-measure the runs with this version of mmfuse)")
    return "mean"


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
    higher_is_better: bool = True,
    labels: Sequence[int] | np.ndarray | None = None,
    cost_tol: float = 1.2,
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
        metric: the ranking metric's name: ``macro_f1`` and ``auroc`` are recomputed on
            each resample from ``labels`` and each result's ``predictions`` /
            ``probabilities``; any other is the mean of ``sample_scores``.
        higher_is_better: the metric's direction (robustness is then in the same
            direction; for a metric where lower is better it is not used).
        labels: ``(n,)`` class of each test sample (for ``macro_f1`` and ``auroc``).
        cost_tol: a measured cost (training time, throughput, memory) within this
            factor of the best on it counts as equally cheap.
    """
    if not results:
        raise MmfuseError("results: expected at least one StrategyResult, got none")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise MmfuseError(f"results: expected distinct strategy names, got {names}")
    if not 0 < alpha < 1:
        raise MmfuseError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    if not cost_tol >= 1:
        raise MmfuseError(f"cost_tol: expected a factor >= 1, got {cost_tol!r}")
    scores = {r.name: np.asarray(r.sample_scores, dtype=np.float64) for r in results}
    shape = scores[names[0]].shape
    for r in results:
        a = scores[r.name]
        if a.ndim != 2 or a.shape != shape or a.size == 0:
            raise MmfuseError(f"{r.name}: sample_scores: expected shape {shape} (seeds, test samples) like "
                              f"{names[0]!r}, got {a.shape}")
        if len(r.seed_scores) != shape[0]:
            raise MmfuseError(f"{r.name}: seed_scores: expected {shape[0]} seeds, got {len(r.seed_scores)}")
    lab = None if labels is None else np.asarray(labels, dtype=np.int64)
    if lab is not None and lab.shape != (shape[1],):
        raise MmfuseError(f"labels: expected ({shape[1]},) (one class per test sample), got {lab.shape}")
    stat = _statistic(metric, results, lab)
    sign = 1.0 if higher_is_better else -1.0
    by_name = {r.name: r for r in results}
    means = {r.name: float(np.mean(r.seed_scores)) for r in results}
    best = max(names, key=lambda n: (sign * means[n], -by_name[n].params))
    s, n = shape
    rng = np.random.default_rng(seed)
    sample_idx = rng.integers(0, n, size=(num_bootstrap, n))
    seed_idx = rng.integers(0, s, size=(num_bootstrap, s)) if s > 1 else np.zeros((num_bootstrap, 1), dtype=np.int64)
    # how often each seed is drawn per resample, as a weight: the resampled metric is the mean
    # over the drawn seeds of each seed's metric on the drawn samples
    seed_w = np.stack([(seed_idx == j).sum(axis=1) for j in range(s)], axis=1) / seed_idx.shape[1]  # (B, s)

    # every strategy's metric per resample and seed, one block of resamples at a time: the counts
    # of a block, (b, n), are drawn once for all strategies
    per_seed = {name: np.empty((num_bootstrap, s)) for name in names}
    preds = {name: np.asarray(by_name[name].predictions) for name in names} if stat == "macro_f1" else {}
    probs = {name: np.asarray(by_name[name].probabilities) for name in names} if stat == "auroc" else {}
    for lo in range(0, num_bootstrap, 256):
        idx = sample_idx[lo:lo + 256]
        b = idx.shape[0]
        counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
        counts = counts.astype(np.float64)
        for name in names:
            out = per_seed[name]
            if stat == "mean":
                out[lo:lo + b] = counts @ scores[name].T / n
                continue
            for j in range(s):
                if stat == "macro_f1":
                    out[lo:lo + b, j] = resampled_macro_f1(counts, lab, preds[name][j])  # type: ignore[arg-type]
                else:
                    out[lo:lo + b, j] = resampled_auroc(counts, lab, probs[name][j])  # type: ignore[arg-type]
    boot = {name: (seed_w * per_seed[name]).sum(axis=1) for name in names}
    p_values: dict[str, float] = {best: 1.0}
    for name in names:
        if name != best:
            diff = sign * (boot[best] - boot[name])
            ok = ~np.isnan(diff)  # a resample without both classes has no AUROC
            # a difference within rounding of 0 is "not better" (equal sums computed in two orders)
            p_values[name] = float((diff[ok] <= 1e-12).mean()) if ok.any() else 1.0
    tied = tuple([best] + sorted((x for x in names if x != best and p_values[x] >= alpha),
                                 key=lambda x: -sign * means[x]))
    decisive = len(tied) == 1 and len(names) > 1
    pick, why = _choose(tied, by_name, means, sign, higher_is_better, robust_tol, cost_tol, metric)

    test = (f"paired bootstrap over test samples and seeds ({num_bootstrap} resamples, "
            f"one-sided, alpha={alpha})")
    p = by_name[pick]
    lead = f"{diagnosis[0].upper()}{diagnosis[1:]}; " if diagnosis else ""
    rob = _robust_text(p)
    cost = f"{_params(p.params)} parameters, {p.train_time_s:.1f}s to train"
    if len(names) == 1:
        sentence = f"{lead}only {pick} was run: {metric} {means[pick]:.3f} ({cost}{rob and ', ' + rob})."
    elif decisive:
        runner = max((x for x in names if x != best), key=lambda x: sign * means[x])
        sentence = (f"{lead}{best} is significantly better than every other strategy: {metric} "
                    f"{means[best]:.3f} vs {means[runner]:.3f} for {runner} ({_p(p_values[runner], num_bootstrap)}); "
                    f"use it ({cost}{rob and ', ' + rob}).")
    else:
        others = ", ".join(x for x in tied)
        vs_best = "" if pick == best else (
            f"; {best}'s {means[best]:.3f} is not significantly better ({_p(p_values[pick], num_bootstrap)})")
        sentence = (f"{lead}{len(tied)} strategies are not significantly worse than the best ({best}, "
                    f"{metric} {means[best]:.3f}): {others}; among these ties, {pick} ({metric} "
                    f"{means[pick]:.3f}, {cost}) is {why}{vs_best}.")
    notes: list[str] = []
    if chance is not None:
        for r in results:
            stuck = [i for i, v in enumerate(r.seed_scores) if sign * v <= sign * chance]
            if stuck:
                notes.append(f"{r.name}: seed(s) {stuck} at or below chance ({chance:.3f})")
        stuck_pick = [x for x in notes if x.startswith(f"{pick}:")]
        if stuck_pick:
            sentence += f" Note: {stuck_pick[0]}."
    return Recommendation(best=best, tied=tied, pick=pick, decisive=decisive, means=means, p_values=p_values,
                          test=test, sentence=sentence, notes=tuple(notes))


def _robust_text(r: StrategyResult) -> str:
    parts = []
    if r.worst_missing is not None:
        parts.append(f"keeps {r.worst_missing:.2f} with a modality missing")
    if r.noise is not None:
        parts.append(f"{r.noise:.2f} under noise")
    return ", ".join(parts)


#: the measured costs of the tie-break, in order: (attribute, lower is better, how it is said, unit)
_COSTS = (("train_time_s", True, "the fastest to train", "as fast to train as", "training time", "s"),
          ("throughput_sps", False, "the fastest at inference", "as fast at inference as", "inference speed",
           " samples/s"),
          ("memory_mb", True, "the lightest in training-step memory", "as light in training-step memory as",
           "memory", " MiB"))


def _fmt(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 1e4 else f"{v / 1e3:.0f}k" if abs(v) < 1e7 else f"{v:.3g}"


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` as :func:`_fmt` writes them, with up to three decimals where one would
    print two different numbers alike ("0.7s vs 0.7s")."""
    if a != b and abs(a) < 1e4 and abs(b) < 1e4:
        for digits in (1, 2, 3):
            sa, sb = f"{a:.{digits}f}", f"{b:.{digits}f}"
            if sa != sb:
                return sa, sb
    return _fmt(a), _fmt(b)


def _choose(tied: Sequence[str], by_name: Mapping[str, StrategyResult], means: Mapping[str, float], sign: float,
            higher_is_better: bool, robust_tol: float, cost_tol: float, metric: str) -> tuple[str, str]:
    """The pick among ``tied`` and why, in words that are true of the numbers (module docstring, 2.)."""
    def rob(x: str) -> float | None:
        return by_name[x].robustness() if higher_is_better else None

    def dominates(a: str, b: str) -> bool:
        """a is better than b on the metric's mean, on robustness (where both have it) and on
        training time."""
        ra, rb = rob(a), rob(b)
        pairs = [(sign * means[a], sign * means[b]), (-by_name[a].train_time_s, -by_name[b].train_time_s)]
        if ra is not None and rb is not None:
            pairs.append((ra, rb))
        return all(u > v for u, v in pairs)

    pool = [x for x in tied if not any(dominates(y, x) for y in tied if y != x)]
    known = {x: r for x in pool if (r := rob(x)) is not None}
    top_name = max(known, key=known.__getitem__) if known else None
    if top_name is not None:
        pool = [x for x in pool if x in known and known[x] >= known[top_name] - robust_tol]
    robust_pool = list(pool)
    steps: list[tuple[str, list[str]]] = []  # (cost attribute, the pool it chose from)
    for attr, lower, *_ in _COSTS:
        if len(pool) < 2:
            break
        vals = {x: getattr(by_name[x], attr) for x in pool}
        if any(v is None for v in vals.values()):
            continue
        best_v = min(vals.values()) if lower else max(vals.values())
        steps.append((attr, pool))
        pool = [x for x in pool if (vals[x] <= best_v * cost_tol if lower else vals[x] * cost_tol >= best_v)]
    pick = min(pool, key=lambda x: (by_name[x].params, by_name[x].train_time_s))

    clauses: list[str] = []
    beaten = [x for x in tied if x != pick and dominates(pick, x)]
    if beaten:
        with_rob = rob(pick) is not None and all(rob(x) is not None for x in beaten)
        on = f"{metric}, robustness and training time" if with_rob else f"{metric} and training time"
        times = ", ".join(f"{by_name[x].train_time_s:.1f}s for {x}" for x in beaten)
        clauses.append(f"better than {', '.join(beaten)} on {on} ({by_name[pick].train_time_s:.1f}s to train "
                       f"vs {times})")
    if top_name is not None:
        if known[pick] >= known[top_name]:
            clauses.append(f"the most robust ({_robust_text(by_name[pick])})")
        else:
            # three decimals: two can round both to one number
            clauses.append(f"among the most robust ({_robust_text(by_name[pick])}; its {known[pick]:.3f} is within "
                           f"{robust_tol:g} of {top_name}'s {known[top_name]:.3f})")
    def add(text: str) -> None:
        """A cost clause, saying which set it is true of."""
        if not clauses:
            clauses.append(text)
        elif top_name is not None and len(robust_pool) > 1 and len(clauses) == 1 + bool(beaten):
            clauses.append(f"of the equally robust, {text}")
        else:
            clauses.append(f"of those, {text}")

    near: list[str] = []  # costs on which the pick is not the best but within cost_tol of it

    def flush() -> None:
        if near:
            listed = near[0] if len(near) == 1 else ", ".join(near[:-1]) + " and " + near[-1]
            add(f"within {cost_tol:g}x of the best on {listed}")
            near.clear()

    for attr, before in steps:
        lower, best_word, same_word, noun, unit = next(c[1:] for c in _COSTS if c[0] == attr)
        sgn = 1 if lower else -1
        vals = {x: getattr(by_name[x], attr) for x in before}
        if sgn * vals[pick] <= min(sgn * v for v in vals.values()):
            flush()
            nxt = min((x for x in before if x != pick), key=lambda x: sgn * vals[x])
            if vals[nxt] == vals[pick]:
                add(f"{same_word} {nxt} ({_fmt(vals[pick])}{unit})")
            else:
                mine, theirs = _fmt_pair(vals[pick], vals[nxt])
                add(f"{best_word} ({mine}{unit} vs {theirs}{unit} for {nxt})")
        else:
            leader = min(before, key=lambda x: sgn * vals[x])
            mine, theirs = _fmt_pair(vals[pick], vals[leader])
            near.append(f"{noun} ({mine}{unit} vs {theirs}{unit} for {leader})")
    flush()
    if len(pool) > 1:
        nxt = min((x for x in pool if x != pick), key=lambda x: by_name[x].params)
        of = "of those, " if clauses else ""
        if by_name[nxt].params == by_name[pick].params:
            clauses.append(f"{of}with as few parameters as {nxt}")
        else:
            clauses.append(f"{of}the one with the fewest parameters "
                           f"({by_name[pick].params / max(1, by_name[nxt].params):.2g}x those of {nxt})")
    if not clauses:
        clauses.append("the best on the metric")
    return pick, "; ".join(clauses)
