"""How far to trust a classifier's probabilities: calibration, selective prediction, temperature scaling.

Shape legend: ``n`` samples, ``k`` classes. ``logits`` are a model's ``(n, k)`` outputs
(logits, or log-probabilities for decision-level fusion: the softmax of either is the
predicted distribution ``p``); ``labels`` are ``(n,)`` class indices. Classification
tasks only (``binary``, ``multiclass``): a multilabel model's per-label probabilities
and a regression model's point predictions have no single top-label confidence.

The metrics (all in pure torch, float64):

- **ECE** (expected calibration error, top-label, Guo et al. 2017): the confidence
  ``c_i = max_j p_ij`` is put into :data:`N_BINS` = 15 **equal-width** bins
  ``(0, 1/15], (1/15, 2/15], ..., (14/15, 1]``; ``ECE = sum_b n_b / n * |acc_b - conf_b|``
  over the non-empty bins, ``acc_b`` the fraction of bin ``b``'s samples whose top
  class is right and ``conf_b`` their mean confidence. The per-bin counts, mean
  confidences and accuracies are kept (:class:`ReliabilityBins`) to draw a
  reliability diagram.
- **NLL**: ``-1/n sum_i log p_{i, y_i}`` (nats).
- **Brier score**: ``1/n sum_i sum_j (p_ij - [j = y_i])^2`` (Brier 1950, over all
  ``k`` classes: in ``[0, 2]``; for two classes it is twice the one-column score
  ``(p_i1 - y_i)^2``).
- **Selective accuracy** at coverage ``c``: the accuracy on the ``ceil(c n)`` samples
  of highest confidence (ties kept in test order).
- **AURC** (area under the risk-coverage curve, Geifman et al. 2019): the samples
  sorted by confidence, highest first; the risk at coverage ``j/n`` is the error rate
  of the first ``j``; AURC is the mean of those risks over ``j = 1..n``. Samples of
  equal confidence cannot be separated, so inside a tie group every ``j`` takes the
  risk at the group's end. Lower is better; a model whose errors are all less
  confident than its right answers reaches the minimum for its error rate.

**Temperature scaling** (Guo et al. 2017): one ``T > 0`` for the whole model, fitted
after training by minimising the NLL of ``softmax(z / T)`` on the validation split
(:func:`fit_temperature`: a golden-section search on ``log T`` in ``[1e-2, 1e2]``), then stored in the model's
``temperature`` buffer, which its ``forward`` divides the output by. Dividing every
logit by one positive number does not change the argmax, so accuracy is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import MmfuseError
from mmfuse.training.config import CALIBRATE_METHODS, TrainConfigError
from mmfuse.training.threads import torch_threads

__all__ = [
    "CALIBRATE_METHODS",
    "COVERAGES",
    "N_BINS",
    "CalibrationStats",
    "ReliabilityBins",
    "TEMPERATURE_BOUNDS",
    "aurc",
    "brier_score",
    "calibrate_model",
    "calibration_stats",
    "check_calibrate",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "reliability_bins",
    "selective_accuracy",
    "set_temperature",
    "temperature_note",
]

#: equal-width confidence bins of the ECE and the reliability diagram
N_BINS = 15
#: coverages of the selective accuracy (fraction of samples answered, most confident first)
COVERAGES = (1.0, 0.9, 0.8, 0.5)


def _check(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise MmfuseError(f"calibration: expected (n, k) logits and (n,) labels, got {tuple(logits.shape)} "
                          f"and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise MmfuseError("calibration: expected at least one sample, got none")
    return logits.detach().double().cpu(), labels.detach().long().cpu()


def _confidence(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(n,)`` top-label confidence and ``(n,)`` 0/1 correctness of the top label."""
    conf, pred = probs.max(dim=1)
    return conf, (pred == labels).double()


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin (equal width over ``[0, 1]``): sample count, mean confidence and
    accuracy (``None`` for an empty bin)."""

    counts: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]

    @property
    def n_bins(self) -> int:
        return len(self.counts)


def reliability_bins(logits: Tensor, labels: Tensor, n_bins: int = N_BINS) -> ReliabilityBins:
    """The :class:`ReliabilityBins` of ``softmax(logits)``: bin ``b`` (0-based) holds the
    confidences in ``(b / n_bins, (b + 1) / n_bins]`` (a confidence of exactly 0 cannot
    occur: the top of ``k`` probabilities is at least ``1 / k``)."""
    z, y = _check(logits, labels)
    conf, correct = _confidence(torch.softmax(z, dim=1), y)
    # ceil(c * n_bins) - 1, with a confidence within 1e-9 of an edge kept below it (float rounding)
    idx = (torch.ceil(conf * n_bins - 1e-9).long() - 1).clamp(0, n_bins - 1)
    counts = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    return ReliabilityBins(
        counts=[int(c) for c in counts.tolist()],
        confidence=[float(s / c) if c > 0 else None for s, c in zip(conf_sum.tolist(), counts.tolist(), strict=True)],
        accuracy=[float(s / c) if c > 0 else None for s, c in zip(acc_sum.tolist(), counts.tolist(), strict=True)],
    )


def _ece_of(bins: ReliabilityBins) -> float:
    n = sum(bins.counts)
    rows = zip(bins.counts, bins.accuracy, bins.confidence, strict=True)
    return float(sum(c / n * abs(a - p) for c, a, p in rows if c > 0 and a is not None and p is not None))


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (see the module docstring)."""
    return _ece_of(reliability_bins(logits, labels, n_bins))


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of the true class under ``softmax(logits)``, in nats."""
    z, y = _check(logits, labels)
    return float(-torch.log_softmax(z, dim=1).gather(1, y[:, None]).mean())


def brier_score(logits: Tensor, labels: Tensor) -> float:
    """``1/n sum_i sum_j (p_ij - [j = y_i])^2`` over all ``k`` classes."""
    z, y = _check(logits, labels)
    p = torch.softmax(z, dim=1)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return float((p - onehot).pow(2).sum(dim=1).mean())


def _ordered(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Confidence and correctness sorted by confidence, highest first (ties in input order)."""
    z, y = _check(logits, labels)
    conf, correct = _confidence(torch.softmax(z, dim=1), y)
    order = torch.argsort(conf, descending=True, stable=True)
    return conf[order], correct[order]


def selective_accuracy(logits: Tensor, labels: Tensor, coverage: float) -> float:
    """Accuracy on the ``ceil(coverage * n)`` most confident samples (``0 < coverage <= 1``)."""
    if not 0 < coverage <= 1:
        raise MmfuseError(f"coverage: expected a fraction in (0, 1], got {coverage!r}")
    _, correct = _ordered(logits, labels)
    k = max(1, math.ceil(coverage * correct.numel() - 1e-9))
    return float(correct[:k].mean())


def aurc(logits: Tensor, labels: Tensor) -> float:
    """Area under the risk-coverage curve (see the module docstring; ties share the risk
    at the end of their group)."""
    conf, correct = _ordered(logits, labels)
    n = conf.numel()
    errors = torch.cumsum(1 - correct, 0)
    risk = errors / torch.arange(1, n + 1, dtype=torch.float64)
    last = torch.ones(n, dtype=torch.bool)  # the last position of each tie group
    last[:-1] = conf[1:] != conf[:-1]
    ends = last.nonzero().squeeze(1)
    sizes = torch.diff(ends, prepend=torch.tensor([-1]))
    return float((risk[ends] * sizes.double()).sum() / n)


@dataclass(frozen=True)
class CalibrationStats:
    """Calibration and selective prediction of a classifier on one split (see the module docstring).

    Attributes:
        ece: top-label expected calibration error (:data:`N_BINS` equal-width bins).
        nll: mean negative log-likelihood (nats). brier: Brier score over all classes.
        aurc: area under the risk-coverage curve.
        selective: accuracy at each coverage, keyed ``"100"``, ``"90"``, ``"80"``, ``"50"`` (percent).
        bins: the reliability diagram's per-bin data (kept for the clean test split only).
    """

    ece: float
    nll: float
    brier: float
    aurc: float | None = None
    selective: dict[str, float] = field(default_factory=dict)
    bins: ReliabilityBins | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, float | None]:
        """``ece``, ``nll``, ``brier``, and where measured ``aurc`` and the selective
        accuracy as ``acc@90``, ``acc@80``, ``acc@50`` (flat columns for tables)."""
        out: dict[str, float | None] = {"ece": self.ece, "nll": self.nll, "brier": self.brier}
        if self.aurc is not None:
            out["aurc"] = self.aurc
        out.update({f"acc@{k}": v for k, v in self.selective.items() if k != "100"})
        return out

    @classmethod
    def from_json(cls, data: Any) -> CalibrationStats:
        from mmfuse.experiment.specs import fields_of

        d = fields_of(cls, data, "calibration")
        if d.get("bins") is not None:
            d["bins"] = ReliabilityBins(**fields_of(ReliabilityBins, d["bins"], "calibration.bins"))
        return cls(**d)


def calibration_stats(logits: Tensor, labels: Tensor, *, bins: bool = True, selective: bool = True,
                      n_bins: int = N_BINS) -> CalibrationStats:
    """ECE, NLL and Brier score of ``softmax(logits)``; with ``selective`` also the AURC
    and the accuracy at each of :data:`COVERAGES`; with ``bins`` the reliability bins."""
    rel = reliability_bins(logits, labels, n_bins)
    sel = {f"{round(c * 100)}": selective_accuracy(logits, labels, c) for c in COVERAGES} if selective else {}
    return CalibrationStats(ece=_ece_of(rel), nll=nll(logits, labels), brier=brier_score(logits, labels),
                            aurc=aurc(logits, labels) if selective else None, selective=sel,
                            bins=rel if bins else None)


# ----------------------------------------------------------------- temperature scaling
#: the interval :func:`fit_temperature` searches by default
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def temperature_note(value: float, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> str | None:
    """What a fitted ``T`` at an end of the search interval means, or ``None`` inside it.

    At the upper end the validation NLL kept falling as the outputs flattened toward equal
    probabilities: the model's scores carry (almost) no information on validation (a model at
    chance); at the lower end it kept falling as they sharpened (a model right on every
    validation sample but underconfident), and the search stopped at its bound.
    """
    low, high = bounds
    if value >= high * (1 - 1e-3):
        return (f"T reached the search's upper bound {high:g}: on validation the outputs carry almost no "
                f"information, so scaling flattens them toward equal probabilities (is the model at chance?)")
    if value <= low * (1 + 1e-3):
        return (f"T reached the search's lower bound {low:g}: on validation the model is right on (nearly) every "
                f"sample and sharpening only lowers its NLL; T is as far as the search goes, not an optimum")
    return None


def fit_temperature(logits: Tensor, labels: Tensor, *, low: float = TEMPERATURE_BOUNDS[0],
                    high: float = TEMPERATURE_BOUNDS[1], iterations: int = 80) -> float:
    """The ``T`` in ``[low, high]`` minimising the NLL of ``softmax(logits / T)``.

    A golden-section search on ``log T``: the NLL is convex in ``1 / T`` (a log-sum-exp
    of a linear function minus a linear function), hence unimodal in ``log T``, so the
    bracket shrinks onto the minimum by a factor 0.618 per step (80 steps: to about
    1e-16 of its width, float64's resolution). No optimiser state and no first-call
    set-up: each step is one ``log_softmax`` of the ``(n, k)`` logits, on one thread.
    """
    z, y = _check(logits, labels)

    def loss(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))

    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    with torch_threads(1):  # more threads only wait for each other on (n, k) numbers
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        fc, fd = loss(c), loss(d)
        for _ in range(iterations):
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - ratio * (b - a)
                fc = loss(c)
            else:
                a, c, fc = c, d, fd
                d = a + ratio * (b - a)
                fd = loss(d)
    return math.exp((a + b) / 2)


def set_temperature(model: nn.Module, value: float) -> None:
    """Store ``value`` in ``model.temperature`` (the buffer its forward divides the output by)."""
    buf = getattr(model, "temperature", None)
    if not isinstance(buf, Tensor):
        raise MmfuseError(f"calibrate: {type(model).__name__} has no temperature buffer (build it with "
                          "build_model or build_unimodal_model)")
    with torch.no_grad():
        buf.fill_(float(value))


def calibrate_model(model: nn.Module, val: Any) -> float:
    """Fit the temperature of ``model`` (eval mode) on the split ``val`` and store it;
    returns ``T``. The fit reads the model's outputs at ``T = 1``."""
    from mmfuse.training.metrics import predict_logits

    set_temperature(model, 1.0)
    t = fit_temperature(predict_logits(model, val), val.labels)
    set_temperature(model, t)
    return t


def check_calibrate(method: str | None, *, task: str, has_val: bool) -> None:
    """Refuse a ``calibrate`` setting that the fit could not honour (before training starts)."""
    if method is None:
        return
    if task not in ("binary", "multiclass"):
        raise TrainConfigError(f"calibrate: {method!r} needs a classification task (binary or multiclass), "
                               f"got task {task!r}; leave calibrate unset")
    if not has_val:
        raise TrainConfigError(f"calibrate: {method!r} is fitted on the validation split, and this dataset "
                               "has none (an empty val split)")
