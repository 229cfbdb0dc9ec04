"""Per dataset: what the data holds (interaction diagnosis), which strategy to use and why.

Shape legend: ``s`` seeds, ``n`` test samples.

:func:`diagnose` estimates the dataset's redundancy, uniqueness and synergy
(:func:`mmfuse.bench.interactions.diagnose_interactions`), cached in the results
folder by the data's identity. :func:`verdicts` turns the run records of a comparison
into one :class:`DatasetVerdict` per dataset: the recommendation of
:func:`mmfuse.bench.recommend.recommend` over the fusions trained the standard way
(a paired bootstrap over seeds and test samples decides which are not significantly
worse than the best; among those, cost and robustness pick one), a sentence when those
tied strategies differ clearly in calibration (:func:`calibration_sentence`), with the
diagnosis and the strategies the grid skipped, with their reasons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.bench.interactions import InteractionDiagnosis
from mmfuse.bench.recommend import Recommendation, StrategyResult, recommend
from mmfuse.bench.summary import SummaryRow
from mmfuse.experiment.results import RunRecord
from mmfuse.experiment.specs import DataSpec, stable_hash
from mmfuse.io import atomic_write

__all__ = ["DatasetVerdict", "Skipped", "calibration_sentence", "diagnose", "majority_sentence", "verdicts"]


@dataclass(frozen=True)
class Skipped:
    """A strategy the grid did not run on a dataset, and why."""

    dataset: str
    model: str
    reason: str


@dataclass
class DatasetVerdict:
    """What the comparison says about one dataset."""

    dataset: str
    recommendation: Recommendation | None = None
    diagnosis: InteractionDiagnosis | None = None
    skipped: list[Skipped] = field(default_factory=list)
    problem: str | None = None
    majority: str | None = None
    calibration: str | None = None

    def sentences(self) -> str:
        """The recommendation, how the tied strategies' calibration differs, and the diagnosis, in plain words."""
        parts = []
        if self.recommendation is not None:
            parts.append(self.recommendation.sentence)
            if self.calibration:
                parts.append(self.calibration)
        elif self.problem:
            parts.append(f"No recommendation: {self.problem}.")
        if self.diagnosis is not None and (self.recommendation is None or self.diagnosis.sentence().lower()
                                           not in self.recommendation.sentence.lower()):
            parts.append(f"Interactions in the data: {self.diagnosis.sentence()}.")
        if self.majority:
            parts.append(self.majority)
        for s in self.skipped:
            parts.append(f"{s.model} was not run: {s.reason}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset,
                "recommendation": self.recommendation.to_json() if self.recommendation else None,
                "diagnosis": self.diagnosis.to_json() if self.diagnosis else None,
                "skipped": [{"model": s.model, "reason": s.reason} for s in self.skipped],
                "problem": self.problem, "majority": self.majority, "calibration": self.calibration}


def diagnose(data: DataSpec, folder: str | Path) -> InteractionDiagnosis | None:
    """The interaction diagnosis of ``data`` (cached under ``folder``), or None where it
    does not apply (one modality, or not a classification task)."""
    from mmfuse.bench.interactions import diagnose_interactions
    from mmfuse.experiment import load_data

    path = Path(folder) / f"{stable_hash(data.identity())}.json"
    if path.is_file():
        try:
            return InteractionDiagnosis.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # a damaged entry is computed again
    import torch

    splits = load_data(data)
    if len(splits.modalities) < 2 or splits.task not in ("binary", "multiclass"):
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # it runs beside the grid's workers
    try:
        result = diagnose_interactions(splits)
    finally:
        torch.set_num_threads(threads)
    atomic_write(path, json.dumps(result.to_json(), indent=1))
    return result


def _ranked_by(metric: str) -> tuple[str, bool]:
    """The metric the test compares and its direction: a regression ranked by RMSE is compared
    through R^2 (the same order on one test split; the measurement keeps R^2's per-sample terms)."""
    from mmfuse.training.metrics import HIGHER_IS_BETTER

    return ("r2", True) if metric == "rmse" else (metric, HIGHER_IS_BETTER.get(metric, True))


def _strategy_results(records: Sequence[RunRecord], rows: Mapping[str, SummaryRow]) -> list[StrategyResult]:
    """One StrategyResult per fusion, over the seeds every fusion has, in the measurements'
    metric (see :func:`_ranked_by`); robustness only where that metric is the one measured
    and higher is better."""
    by_model: dict[str, dict[int, RunRecord]] = {}
    for r in records:
        if r.ok and r.measurement is not None and r.measurement.sample_scores is not None:
            by_model.setdefault(r.label, {})[r.spec.seed] = r
    if not by_model:
        return []
    seeds = sorted(set.intersection(*(set(v) for v in by_model.values())))
    if not seeds:
        return []
    out = []
    for name, recs in by_model.items():
        row = rows.get(name)
        ms = [recs[s].measurement for s in seeds]
        key, higher = _ranked_by(ms[0].metric)  # type: ignore[union-attr]
        robust = higher and key == ms[0].metric  # type: ignore[union-attr]
        noise = None
        if row is not None and row.noise_mean and robust:
            noise = row.noise_mean[max(row.noise_mean, key=float)]
        preds = [m.sample_predictions for m in ms]  # type: ignore[union-attr]
        probs = [m.sample_probabilities for m in ms]  # type: ignore[union-attr]
        ts = [recs[s].training for s in seeds]
        out.append(StrategyResult(
            name=name,
            seed_scores=[float(m.metrics[key]) for m in ms],  # type: ignore[union-attr]
            sample_scores=[m.sample_scores for m in ms],  # type: ignore[union-attr, misc]
            params=int(ts[0].params),  # type: ignore[union-attr]
            train_time_s=sum(t.train_time_s for t in ts) / len(ts),  # type: ignore[union-attr]
            worst_missing=row.missing_worst if row is not None and robust else None,
            noise=noise,
            throughput_sps=row.throughput_sps if row is not None else None,
            memory_mb=row.memory_mb if row is not None else None,
            predictions=preds if all(p is not None for p in preds) else None,
            probabilities=probs if all(p is not None for p in probs) else None,
        ))
    return out


def _labels(records: Sequence[RunRecord]) -> list[int] | None:
    """The test split's classes, as the measurements recorded them (the same for every run)."""
    return next((r.measurement.sample_labels for r in records
                 if r.ok and r.measurement is not None and r.measurement.sample_labels is not None), None)


def majority_sentence(rows: Sequence[SummaryRow]) -> str | None:
    """One sentence naming the standard-trained models no better than the majority class
    (:meth:`~mmfuse.bench.summary.SummaryRow.majority_note`), or None."""
    marked = [f"{r.model} {note}" for r in rows if r.standard and (note := r.majority_note())]
    return f"Note: {'; '.join(marked)}." if marked else None
#: tied strategies "differ in calibration" when the worst ECE is at least this many times the best
#: one and at least ``_ECE_GAP`` above it (ECE has no paired test here: a clear gap only)
_ECE_RATIO = 2.0
_ECE_GAP = 0.02


def calibration_sentence(tied: Sequence[str], rows: Mapping[str, SummaryRow], pick: str | None = None) -> str | None:
    """A sentence when the strategies in ``tied`` (not significantly worse than the best)
    differ clearly in calibration: the worst test ECE is at least twice the best and 0.02
    above it. ``None`` when they do not, or fewer than two have an ECE."""
    ece = {m: rows[m].calibration.get("ece") for m in tied if m in rows and rows[m].calibration}
    ece = {m: v for m, v in ece.items() if v is not None}
    if len(ece) < 2:
        return None
    best, worst = min(ece, key=ece.__getitem__), max(ece, key=ece.__getitem__)
    if not (ece[worst] >= _ECE_RATIO * ece[best] and ece[worst] - ece[best] >= _ECE_GAP):
        return None
    nll = {m: rows[m].calibration.get("nll") for m in (best, worst)}
    text = (f"Their probabilities differ: {best} is the best calibrated of them (test ECE {ece[best]:.3f}, NLL "
            f"{nll[best]:.3f}), {worst} the least (ECE {ece[worst]:.3f}, NLL {nll[worst]:.3f})")
    if pick is not None and pick != best and pick in ece:
        text += f"; where the probabilities are used (thresholds, abstaining), prefer {best} to {pick}"
    return text + "."


def verdicts(
    records: Sequence[RunRecord],
    rows: Sequence[SummaryRow],
    *,
    diagnoses: Mapping[str, InteractionDiagnosis | None],
    skipped: Sequence[Skipped] = (),
) -> dict[str, DatasetVerdict]:
    """One :class:`DatasetVerdict` per dataset of ``records`` (see the module docstring)."""
    datasets: list[str] = []
    for r in records:
        if r.dataset not in datasets:
            datasets.append(r.dataset)
    out: dict[str, DatasetVerdict] = {}
    for ds in datasets:
        diag = diagnoses.get(ds)
        v = DatasetVerdict(dataset=ds, diagnosis=diag, skipped=[s for s in skipped if s.dataset == ds])
        fused = [r for r in records if r.dataset == ds and r.spec.model.unimodal is None
                 and r.spec.variant.value == "standard"]
        row_of = {row.model: row for row in rows if row.dataset == ds and row.standard}
        results = _strategy_results(fused, row_of)
        metric, higher = _ranked_by(next((r.measurement.metric for r in fused if r.measurement is not None),
                                         "accuracy"))
        v.majority = majority_sentence([row for row in rows if row.dataset == ds])
        one = [s for s in v.skipped if s.reason.startswith("the data has one modality")]
        if not results and one:
            v.problem = (f"{one[0].reason}: the unimodal baseline is the model (give the table another "
                         "modality, e.g. a text, image or embedding column, to compare fusions)")
        elif not results:
            v.problem = "no fusion has per-sample test scores (failed runs, or a task without them)"
        else:
            try:
                v.recommendation = recommend(results, diagnosis=diag.sentence() if diag else None, metric=metric,
                                             higher_is_better=higher, labels=_labels(fused))
            except Exception as exc:  # noqa: BLE001 - the report says why there is none
                v.problem = f"{type(exc).__name__}: {exc}"
            if v.recommendation is not None:
                v.calibration = calibration_sentence(v.recommendation.tied, row_of, v.recommendation.pick)
        out[ds] = v
    return out
