"""From run records to the comparison table: mean and spread over seeds, gain over the best unimodal baseline.

One :class:`SummaryRow` per dataset x model x training variant. Scores are the
ranking metric of the measurements (``--metric``; by default the task's main metric,
macro-F1 on a classification target whose majority class exceeds 70 %: see
:func:`mmfuse.training.metrics.choose_metric`). The *best unimodal baseline* of a dataset
is the unimodal model with the best mean score; every row's ``gain`` is how much
better its mean score is than that baseline's (negative: fusion did not help), in the
metric's own direction (for an error such as RMSE, a lower value is a positive gain).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmfuse.experiment.results import Measurement, RunRecord
from mmfuse.training.calibration import CalibrationStats

__all__ = ["METRIC_ORDER", "SummaryRow", "best_unimodal", "datasets_of", "mean_std", "other_metrics", "summarize"]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the non-missing values; std is None below 2 values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _mean(values: Iterable[float | None]) -> float | None:
    return mean_std(values)[0]


@dataclass
class SummaryRow:
    """One dataset x model x variant of the comparison, over its seeds.

    Attributes:
        metric, higher_is_better: the task's main metric and its direction.
        score_mean, score_std: that metric over the seeds (std None below 2 seeds).
        metrics: the mean of every test metric; metrics_std likewise.
        gain: mean score better (>0) or worse (<0) than the best unimodal baseline's.
        missing: per modality, the mean score with it missing; missing_worst the worst.
        noise_mean: per noise scale, the mean over noised modalities; noise: per modality.
        calibration: for classification, the mean over seeds of the clean test split's
            ``ece``, ``nll``, ``brier``, ``aurc`` and the selective accuracy ``acc@90``,
            ``acc@80``, ``acc@50`` (coverage in percent; :mod:`mmfuse.training.calibration`).
        calibration_missing: per modality, ``ece``/``nll``/``brier`` with it missing.
        temperature: the mean fitted temperature of calibrated models (``calibrate=temperature``);
            uncalibrated: then their ``ece``/``nll``/``brier`` before scaling (``T = 1``).
    """

    dataset: str
    model: str
    variant: str
    unimodal: bool
    metric: str
    higher_is_better: bool
    seeds: list[int]
    n_ok: int
    n_failed: int
    errors: list[str]
    score_mean: float | None
    score_std: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    metrics_std: dict[str, float | None] = field(default_factory=dict)
    params: float | None = None
    fusion_params: float | None = None
    train_time_s: float | None = None
    epochs_run: float | None = None
    throughput_sps: float | None = None
    memory_mb: float | None = None
    missing: dict[str, float | None] = field(default_factory=dict)
    missing_worst: float | None = None
    noise_mean: dict[str, float | None] = field(default_factory=dict)
    noise: dict[str, dict[str, float | None]] = field(default_factory=dict)
    probe: dict[str, float | None] = field(default_factory=dict)
    best_unimodal: str | None = None
    best_unimodal_score: float | None = None
    gain: float | None = None
    majority_rate: float | None = None
    one_class_seeds: int = 0
    calibration: dict[str, float | None] = field(default_factory=dict)
    calibration_missing: dict[str, dict[str, float | None]] = field(default_factory=dict)
    temperature: float | None = None
    uncalibrated: dict[str, float | None] = field(default_factory=dict)

    @property
    def standard(self) -> bool:
        """Trained the standard way (a fusion without modality dropout, or a unimodal baseline)."""
        return self.variant in ("standard", "unimodal")

    @property
    def training(self) -> str:
        """How it was trained, in words."""
        if self.variant == "modality_dropout":
            return "modality dropout"
        if self.variant.startswith("balance:"):
            return f"balanced: {self.variant[8:]}"
        return "standard"

    def majority_note(self, tol: float = 0.005) -> str | None:
        """A phrase after the model's name for a classifier no better than the majority class
        (its accuracy within ``tol`` of the test split's majority-class rate ``majority_rate``:
        "is at the majority-class rate (0.82): it predicts one class"), or with seeds whose
        every test prediction is one class (``one_class_seeds``); else None."""
        if self.majority_rate is None or self.n_ok == 0:
            return None
        acc = self.metrics.get("accuracy")
        at_rate = acc is not None and abs(acc - self.majority_rate) <= tol
        one = ("predicts one class" if self.one_class_seeds == self.n_ok else
               f"predicts one class in {self.one_class_seeds} of {self.n_ok} seeds" if self.one_class_seeds else "")
        if at_rate:
            return f"is at the majority-class rate ({self.majority_rate:.2f})" + (f": it {one}" if one else "")
        return one or None

    def better(self, a: float, b: float) -> bool:
        """``a`` is better than ``b`` in this row's metric."""
        return a > b if self.higher_is_better else a < b

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(records: Sequence[RunRecord]) -> list[SummaryRow]:
    """Summary rows (see the module docstring), in the order the runs first appear."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for rec in records:
        groups.setdefault((rec.dataset, rec.label, rec.spec.variant_label), []).append(rec)

    rows: list[SummaryRow] = []
    for (dataset, label, variant), recs in groups.items():
        ok = [r for r in recs if r.ok]
        ms = [r.measurement for r in ok if r.measurement is not None]
        ts = [r.training for r in ok if r.training is not None]
        metric = ms[0].metric if ms else "accuracy"
        higher = ms[0].higher_is_better if ms else True
        score_m, score_s = mean_std(m.score for m in ms)
        names = sorted({k for m in ms for k in m.metrics})
        stats = {k: mean_std(m.metrics.get(k) for m in ms) for k in names}
        mods = sorted({k for m in ms for k in m.missing})
        scales = sorted({s for m in ms for s in m.noise_mean}, key=float)
        noise_mods = sorted({k for m in ms for k in m.noise})
        missing = {k: _mean(m.missing.get(k) for m in ms) for k in mods}
        present = [v for v in missing.values() if v is not None]
        worst = (min(present) if higher else max(present)) if present else None
        rows.append(SummaryRow(
            dataset=dataset,
            model=label,
            variant=variant,
            unimodal=recs[0].spec.model.unimodal is not None,
            metric=metric,
            higher_is_better=higher,
            seeds=sorted(r.spec.seed for r in ok),
            n_ok=len(ok),
            n_failed=len(recs) - len(ok),
            errors=[r.error or "" for r in recs if not r.ok],
            score_mean=score_m,
            score_std=score_s,
            metrics={k: v[0] for k, v in stats.items()},
            metrics_std={k: v[1] for k, v in stats.items()},
            params=_mean(t.params for t in ts),
            fusion_params=_mean(t.fusion_params for t in ts),
            train_time_s=_mean(t.train_time_s for t in ts),
            epochs_run=_mean(t.epochs_run for t in ts),
            throughput_sps=_mean(m.throughput_sps for m in ms),
            memory_mb=_mean(m.memory_mb for m in ms),
            missing=missing,
            missing_worst=worst,
            noise_mean={s: _mean(m.noise_mean.get(s) for m in ms) for s in scales},
            noise={k: {s: _mean(m.noise.get(k, {}).get(s) for m in ms) for s in scales} for k in noise_mods},
            probe={k: _mean(m.probe.get(k) for m in ms if m.probe is not None)
                   for k in sorted({k for m in ms if m.probe is not None for k in m.probe})},
            majority_rate=next((_majority(m.sample_labels) for m in ms if m.sample_labels), None),
            one_class_seeds=sum(1 for m in ms if m.sample_predictions and len(set(m.sample_predictions)) == 1),
            **_calibration_fields(ms),
        ))

    best = best_unimodal(rows)
    for row in rows:
        ref = best.get(row.dataset)
        if ref is None:
            continue
        row.best_unimodal = ref.model
        row.best_unimodal_score = ref.score_mean
        if row.score_mean is not None and ref.score_mean is not None:
            diff = row.score_mean - ref.score_mean
            row.gain = diff if row.higher_is_better else -diff
    return rows


#: the order in which tables show the metrics beside the ranking one
METRIC_ORDER = ("accuracy", "macro_f1", "auroc", "micro_f1", "map", "rmse", "mae", "r2")


def other_metrics(rows: Sequence[SummaryRow]) -> list[str]:
    """The test metrics of ``rows`` other than their ranking metric (``rows[0].metric``), in
    :data:`METRIC_ORDER`: e.g. macro-F1 and AUROC beside accuracy."""
    present = {k for r in rows for k, v in r.metrics.items() if v is not None}
    ranked = rows[0].metric if rows else None
    return [k for k in METRIC_ORDER if k in present and k != ranked]


def _majority(labels: Sequence[int]) -> float:
    """The share of the most frequent class in ``labels`` (non-empty)."""
    return max(Counter(labels).values()) / len(labels)
def _mean_of(values: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    names = list(dict.fromkeys(k for v in values for k in v))
    return {k: _mean(v.get(k) for v in values) for k in names}


def _flat(stats: CalibrationStats | None) -> dict[str, float | None]:
    return stats.flat() if stats is not None else {}


def _calibration_fields(ms: Sequence[Measurement]) -> dict[str, Any]:
    """The calibration fields of a :class:`SummaryRow`: means over the seeds that have them."""
    mods = sorted({k for m in ms for k in m.calibration_missing})
    temps = [m.temperature for m in ms if m.temperature is not None]
    return {
        "calibration": _mean_of([_flat(m.calibration) for m in ms if m.calibration is not None]),
        "calibration_missing": {mod: _mean_of([_flat(m.calibration_missing[mod]) for m in ms
                                               if m.calibration_missing.get(mod) is not None]) for mod in mods},
        "temperature": _mean(temps),
        "uncalibrated": _mean_of([_flat(m.uncalibrated) for m in ms if m.uncalibrated is not None]),
    }


def datasets_of(rows: Sequence[SummaryRow]) -> list[str]:
    """The datasets of ``rows``, in the order they first appear."""
    return list(dict.fromkeys(r.dataset for r in rows))


def best_unimodal(rows: Sequence[SummaryRow]) -> dict[str, SummaryRow]:
    """Per dataset, the unimodal row with the best mean score."""
    best: dict[str, SummaryRow] = {}
    for row in rows:
        if not row.unimodal or row.score_mean is None:
            continue
        cur = best.get(row.dataset)
        if cur is None or row.better(row.score_mean, cur.score_mean or 0.0):
            best[row.dataset] = row
    return best
