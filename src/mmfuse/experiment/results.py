"""Typed results of one experiment: what training produced, what was measured, and the record of a run.

Shape legend: ``b`` batch, ``t_q``/``t_k`` query/key tokens of an attention map (kept
as nested lists here: records are JSON).

A :class:`RunRecord` is what the bench's store, summary, plots, report and console
read; it has ``to_json``/``from_json`` with its version (:data:`RECORD_VERSION`, the
spec schema: a record holds a spec and its keys), and ``from_json`` is the only place
that reads a record's JSON. A record of another version (mmfuse 0.1 wrote none) raises
:class:`~mmfuse.records.RecordVersionError`: its keys are not this version's, so the
bench trains its run again rather than re-use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.experiment.specs import (
    SPEC_SCHEMA,
    ExperimentSpec,
    MeasureConfig,
    fields_of,
    measure_key,
)
from mmfuse.records import check_format, stamp
from mmfuse.training.calibration import CalibrationStats

#: the version of a run record: that of the spec it holds (its keys change with it)
RECORD_VERSION = SPEC_SCHEMA

__all__ = [
    "RECORD_VERSION",
    "AttentionSummary",
    "GateSummary",
    "Learned",
    "Measurement",
    "RunRecord",
    "TrainingFacts",
]


def _finite(x: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``None``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _build(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from the mapping ``data``, refusing unknown names."""
    return cls(**fields_of(cls, data, where))


@dataclass(frozen=True)
class TrainingFacts:
    """What training produced (or, for a model re-used from its checkpoint, what it had produced).

    Attributes:
        params: parameters of the whole model; fusion_params: of its fusion alone.
        train_time_s: wall seconds of the fit; epochs_run; best_epoch (0-based, -1
            without validation).
        val_metrics: metrics of the best weights on the validation split.
        threads: torch intra-op threads the fit ran with.
        trained_now: False when the weights were loaded from a saved checkpoint.
    """

    params: int
    fusion_params: int | None
    train_time_s: float
    epochs_run: int
    best_epoch: int
    val_metrics: dict[str, float]
    threads: int
    trained_now: bool = True

    def to_json(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: Any) -> TrainingFacts:
        return _build(cls, data, "training")


@dataclass(frozen=True)
class GateSummary:
    """A gate over the first test samples: per modality (mean over features), or its per-sample mean."""

    shape: list[int]
    per_modality: dict[str, list[float]] | None = None
    mean: list[float] | None = None


@dataclass(frozen=True)
class AttentionSummary:
    """An attention map averaged over heads: a few single samples and the mean, ``(t_q, t_k)`` each."""

    samples: list[Any]
    mean: list[Any]
    query_tokens: list[str] | None = None
    key_tokens: list[str] | None = None


@dataclass(frozen=True)
class Learned:
    """What a fusion computed on the first test samples, reduced for plotting."""

    modalities: list[str]
    modality_weights: dict[str, list[float]] = field(default_factory=dict)
    gates: dict[str, GateSummary] = field(default_factory=dict)
    attention: dict[str, AttentionSummary] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: Any) -> Learned:
        if not isinstance(data, Mapping):
            raise ConfigError(f"learned: expected a mapping, got {type(data).__name__}")
        d = dict(data)
        gates = {k: _build(GateSummary, v, f"learned.gates.{k}") for k, v in dict(d.pop("gates", {})).items()}
        att = {k: _build(AttentionSummary, v, f"learned.attention.{k}")
               for k, v in dict(d.pop("attention", {})).items()}
        return _build(cls, {**d, "gates": gates, "attention": att}, "learned")


@dataclass(frozen=True)
class Measurement:
    """Everything computed on the test split of one trained model.

    Attributes:
        metric: the task's main metric (e.g. ``accuracy``); higher_is_better: its direction.
        metrics: every clean test metric; n_test: test samples.
        missing: the main metric with each modality missing in turn, on the test samples
            that keep another modality (``missing_n`` counts them); ``None`` where it failed.
        noise: per modality, per noise scale (as ``"0.5"``), the main metric with that
            modality noised; noise_mean: the mean over modalities per scale.
        errors: measurements that failed, with their reason.
        throughput_sps: test samples per second of the forward pass alone.
        memory_mb: the model's own memory for one training step: parameters, their
            gradients and AdamW's two moments, plus the activations autograd saves for
            one batch (the training batch size); not the process's memory.
        learned: gates, modality weights and attention maps (when asked for).
        shapley: each modality's Shapley value for the main metric and each pair's
            interaction index, on the test samples with every modality present
            (:func:`mmfuse.bench.attribution.modality_shapley`), when asked for.
        sample_scores: each test sample's score (1/0 correct for classification; for
            regression the term ``1 - e^2 / var`` whose mean is R^2, or the absolute
            error when ``metric`` is ``mae``), in test order, when asked for.
        probe: per modality, the test accuracy of a linear probe on its encoder's
            output inside the fused model, when asked for.
        sample_labels, sample_predictions: each test sample's class and the model's
            predicted class (its argmax), in test order, with ``sample_scores`` for a
            ``binary``/``multiclass`` task: a metric that is not a mean over samples
            (macro-F1) is recomputed from them on every resample of the significance test,
            and they tell a model that predicts one class.
        sample_probabilities: the model's probability of class 1 per test sample for a
            ``binary`` task; for ``multiclass`` only when ``metric`` is ``auroc``, every
            class's probability per sample (``(n, k)``); rounded to 4 decimals.
        calibration: for classification tasks, the clean test split's ECE (15
            equal-width top-label bins), NLL, Brier score, AURC, selective accuracy
            at 100/90/80/50 % coverage and the reliability diagram's per-bin data
            (:mod:`mmfuse.training.calibration`); ``None`` for other tasks and for
            records written before it existed.
        calibration_missing: per modality, ECE/NLL/Brier with it missing (the samples
            of ``missing``); calibration_noise: per modality and noise scale, the same
            under noise.
        temperature: the model's temperature ``T`` when it was calibrated
            (``calibrate="temperature"``), else ``None``; uncalibrated: then the clean
            test split's calibration at ``T = 1`` (before scaling), for comparison, and
            uncalibrated_missing the same with each modality missing.
    """

    metric: str
    higher_is_better: bool
    metrics: dict[str, float]
    n_test: int
    missing: dict[str, float | None] = field(default_factory=dict)
    missing_n: dict[str, int] = field(default_factory=dict)
    noise: dict[str, dict[str, float | None]] = field(default_factory=dict)
    noise_mean: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    throughput_sps: float | None = None
    memory_mb: float | None = None
    learned: Learned | None = None
    shapley: dict[str, Any] | None = None
    sample_scores: list[float] | None = None
    probe: dict[str, float] | None = None
    sample_labels: list[int] | None = None
    sample_predictions: list[int] | None = None
    sample_probabilities: list[float] | list[list[float]] | None = None
    calibration: CalibrationStats | None = None
    calibration_missing: dict[str, CalibrationStats | None] = field(default_factory=dict)
    calibration_noise: dict[str, dict[str, CalibrationStats | None]] = field(default_factory=dict)
    temperature: float | None = None
    uncalibrated: CalibrationStats | None = None
    uncalibrated_missing: dict[str, CalibrationStats | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def number(v: Any, what: str, none: bool = False) -> None:
            if (v is None and none) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                return
            raise ConfigError(f"measurement: {what}: expected a number, got {v!r}")

        if not isinstance(self.metric, str) or not isinstance(self.metrics, Mapping):
            raise ConfigError(f"measurement: metric/metrics: expected a name and a mapping, got {self.metric!r}")
        for k, v in self.metrics.items():
            number(v, f"metrics.{k}")
        for k, v in self.missing.items():
            number(v, f"missing.{k}", none=True)
        for k, v in self.noise_mean.items():
            number(v, f"noise_mean.{k}", none=True)
        for mod, per in self.noise.items():
            for k, v in dict(per).items():
                number(v, f"noise.{mod}.{k}", none=True)
        number(self.throughput_sps, "throughput_sps", none=True)
        number(self.memory_mb, "memory_mb", none=True)
        number(self.n_test, "n_test")
        number(self.temperature, "temperature", none=True)
        stats = [self.calibration, self.uncalibrated, *self.calibration_missing.values(),
                 *self.uncalibrated_missing.values(),
                 *(c for per in self.calibration_noise.values() for c in per.values())]
        for c in stats:
            if c is not None and not isinstance(c, CalibrationStats):
                raise ConfigError(f"measurement: calibration: expected CalibrationStats, got {type(c).__name__}")

    @property
    def score(self) -> float | None:
        return self.metrics.get(self.metric)

    @property
    def missing_worst(self) -> float | None:
        vals = [v for v in self.missing.values() if v is not None]
        if not vals:
            return None
        return min(vals) if self.higher_is_better else max(vals)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["learned"] = self.learned.to_json() if self.learned is not None else None
        return _finite(d)

    @classmethod
    def from_json(cls, data: Any) -> Measurement:
        if not isinstance(data, Mapping):
            raise ConfigError(f"measurement: expected a mapping, got {type(data).__name__}")
        d = dict(data)
        learned = d.pop("learned", None)
        d["learned"] = Learned.from_json(learned) if learned is not None else None

        def stats(v: Any) -> CalibrationStats | None:
            return CalibrationStats.from_json(v) if v is not None else None

        for name in ("calibration", "uncalibrated"):
            d[name] = stats(d.get(name))
        for name in ("calibration_missing", "uncalibrated_missing"):
            d[name] = {k: stats(v) for k, v in dict(d.get(name) or {}).items()}
        d["calibration_noise"] = {m: {k: stats(v) for k, v in dict(per).items()}
                                  for m, per in dict(d.get("calibration_noise") or {}).items()}
        return _build(cls, d, "measurement")


@dataclass(frozen=True)
class RunRecord:
    """One run of the bench (or of ``mmfuse train``), ok or failed.

    Attributes:
        spec: the trained model's settings; measure: what was measured.
        status: ``"ok"`` or ``"failed"``.
        training, measurement: the results (``None`` when the run failed before them).
        error, traceback: why it failed.
        started_at, finished_at (ISO times), wall_s, host, pid: where and when.
        code: which code produced it (``mmfuse`` version, git commit, dirty flag).
    """

    spec: ExperimentSpec
    measure: MeasureConfig
    status: str
    training: TrainingFacts | None = None
    measurement: Measurement | None = None
    error: str | None = None
    traceback: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    wall_s: float | None = None
    host: str | None = None
    pid: int | None = None
    code: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "failed"):
            raise ConfigError(f"record status: expected 'ok' or 'failed', got {self.status!r}")

    @property
    def train_key(self) -> str:
        return self.spec.key

    @property
    def key(self) -> str:
        """The measurement key: training key plus measure settings."""
        return measure_key(self.spec.key, self.measure)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.measurement is not None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def dataset(self) -> str:
        return self.spec.data.display

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return stamp("run_record", RECORD_VERSION, {
            "key": self.key,
            "train_key": self.train_key,
            "status": self.status,
            "label": self.label,
            "dataset": self.dataset,
            "spec": self.spec.to_json(),
            "measure": self.measure.to_json(),
            "training": self.training.to_json() if self.training else None,
            "measurement": self.measurement.to_json() if self.measurement else None,
            "error": self.error,
            "traceback": self.traceback,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_s": self.wall_s,
            "host": self.host,
            "pid": self.pid,
            "code": self.code,
        })

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        if not isinstance(data, Mapping):
            raise ConfigError(f"run record: expected a mapping, got {type(data).__name__}")
        check_format(data, "run_record", RECORD_VERSION, legacy="schema")
        d = {k: v for k, v in data.items() if k not in ("format", "schema", "key", "train_key", "label", "dataset")}
        d["spec"] = ExperimentSpec.from_json(d.get("spec"))
        d["measure"] = MeasureConfig.from_json(d.get("measure"))
        d["training"] = TrainingFacts.from_json(d["training"]) if d.get("training") is not None else None
        d["measurement"] = Measurement.from_json(d["measurement"]) if d.get("measurement") is not None else None
        rec = _build(cls, d, "run record")
        if "key" in data and data["key"] != rec.key:
            raise ConfigError(f"run record {data['key']!r}: its key does not match its settings ({rec.key}): "
                              "the record was edited or written by another version; re-run it")
        return rec
