"""Typed, frozen descriptions of one experiment: what data, what model, how to train, how to measure.

Shape legend: none (no tensors here).

An :class:`ExperimentSpec` is everything that decides a trained model's weights:
its :class:`DataSpec`, its :class:`ModelSpec` and one
:class:`~mmfuse.training.TrainConfig` (nested, never re-declared; the seed is
``train.seed``). Its :attr:`~ExperimentSpec.key` hashes only those settings, so two
runs with the same key train the same weights and a finished model can be re-used.
A :class:`MeasureConfig` says what is computed on the test split afterwards; a
measurement is keyed by the training key plus the measure settings
(:func:`measure_key`), so a new noise scale re-measures the saved model without
retraining it.

Every spec has ``to_json`` / ``from_json``; an :class:`ExperimentSpec` document carries its
version as ``"format": "mmfuse.experiment_spec/<SPEC_SCHEMA>"`` (:mod:`mmfuse.records`),
which covers the specs nested in it; unknown or missing fields raise
:class:`~mmfuse.errors.ConfigError` naming them. A spec of schema 2 (``"schema": 2``, the
five flat balance settings) is read as the same settings; its training key was another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from mmfuse.errors import ConfigError
from mmfuse.records import check_format, stamp
from mmfuse.space import Categorical, Distribution, Float
from mmfuse.training.config import RENAMED_BALANCE_SETTINGS, TrainConfig, TrainConfigError

__all__ = [
    "SPEC_SCHEMA",
    "flat_keys",
    "DataSpec",
    "ExperimentSpec",
    "MeasureConfig",
    "ModelSpec",
    "Variant",
    "measure_key",
    "stable_hash",
]

#: schema version of the JSON form of specs and records. 3: the balance options are one
#: nested ``train.balance`` (:class:`~mmfuse.training.config.BalanceOptions`), in the
#: training key only with balancing on, so every training key differs from schema 2's
SPEC_SCHEMA = 3
#: the schema whose specs :meth:`ExperimentSpec.from_json` still reads (upgraded; their
#: records and run folders are not re-used: their keys are not this version's)
_UPGRADABLE = (2,)

#: TrainConfig fields that say how a run is shown or where it reads data from, not what it
#: learns: they are left out of the training key
_DISPLAY_ONLY = ("progress", "verbose", "num_workers")


def stable_hash(obj: Any) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists (JSON's own types)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fields_of(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``, refusing unknown names."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}: expected one of {sorted(names)}")
    return dict(data)


class Variant(str, Enum):
    """How a run's model was trained, as the bench groups runs."""

    STANDARD = "standard"
    UNIMODAL = "unimodal"
    MODALITY_DROPOUT = "modality_dropout"
    BALANCED = "balanced"


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, with which loader options and split seed.

    Attributes:
        name: a registered dataset (:func:`mmfuse.data.list_datasets`).
        options: keyword options of its loader (``{"task": "synergy", "n": 2000}``).
        seed: seed of the splits (fixed across model seeds).
        root: folder of the real datasets' files; it says where, not what, so it is
            not part of any key.
        label: the name shown in tables (default: ``name``, or ``name/task``).
        encoders: per modality, a pretrained encoder (``hf:<model or folder>``,
            ``timm:<model>``, with options such as ``,finetune_last=2``; see
            :mod:`mmfuse.encoders.pretrained`). Frozen ones turn the modality into
            cached embeddings, so they are part of what the data is.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    root: str | None = None
    label: str | None = None
    encoders: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.encoders, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.encoders.items()
        ):
            raise ConfigError(f"data: encoders: expected modality -> encoder name, got {self.encoders!r}")
        object.__setattr__(self, "encoders", dict(self.encoders))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"data: name: expected a dataset name, got {self.name!r}")
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"data: options: expected a mapping, got {self.options!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"data: seed: expected an int in [0, 2**32), got {self.seed!r}")
        object.__setattr__(self, "options", _plain(self.options))

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        task = self.options.get("task")
        return f"{self.name}/{task}" if isinstance(task, str) else self.name

    def identity(self) -> dict[str, Any]:
        """What decides the data (the root and label left out)."""
        ident: dict[str, Any] = {"name": self.name, "options": self.options, "seed": self.seed}
        if self.encoders:
            ident["encoders"] = dict(sorted(self.encoders.items()))
        return ident

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options, "seed": self.seed, "root": self.root,
                "label": self.label, "encoders": dict(self.encoders)}

    @classmethod
    def from_json(cls, data: Any) -> DataSpec:
        return cls(**fields_of(cls, data, "data"))


@dataclass(frozen=True)
class ModelSpec:
    """Which model: a fusion strategy (or a unimodal baseline) and its sizes and options.

    Attributes:
        fusion: a registered strategy (:func:`mmfuse.list_fusions`); ``None`` for a
            unimodal baseline.
        unimodal: the modality of a unimodal baseline, else ``None``.
        hidden_dim: encoder and fusion width.
        dropout: dropout of encoders and head.
        modalities: the modalities to use (default: all of the dataset's).
        fusion_options: keyword options of the strategy.
        encoder_options: per modality, keyword options of its encoder.
    """

    fusion: str | None = "gated"
    unimodal: str | None = None
    hidden_dim: int = 64
    dropout: float = 0.1
    modalities: tuple[str, ...] | None = None
    fusion_options: Mapping[str, Any] = field(default_factory=dict)
    encoder_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    #: what ``mmfuse bench --tune`` tries for every model's sizes, a strategy's or a
    #: baseline's (see :mod:`mmfuse.space`); a strategy's own options are in its class
    search_space: ClassVar[dict[str, Distribution]] = {
        "hidden_dim": Categorical((32, 64, 128)),
        "dropout": Float(0.0, 0.5),
    }

    def __post_init__(self) -> None:
        from mmfuse.errors import check_fraction

        if (self.fusion is None) == (self.unimodal is None):
            raise ConfigError(f"model: expected exactly one of fusion and unimodal, got fusion={self.fusion!r}, "
                              f"unimodal={self.unimodal!r}")
        if isinstance(self.hidden_dim, bool) or not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ConfigError(f"model: hidden_dim: expected a positive int, got {self.hidden_dim!r}")
        check_fraction("model: dropout", self.dropout)
        if isinstance(self.modalities, str):
            object.__setattr__(self, "modalities", (self.modalities,))
        if self.modalities is not None:
            if not all(isinstance(m, str) and m for m in self.modalities) or not self.modalities:
                raise ConfigError(f"model: modalities: expected a list of names, got {self.modalities!r}")
            object.__setattr__(self, "modalities", tuple(self.modalities))
        for name in ("fusion_options", "encoder_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"model: {name}: expected a mapping, got {getattr(self, name)!r}")
            object.__setattr__(self, name, _plain(getattr(self, name)))
        if self.unimodal is not None and self.fusion_options:
            raise ConfigError("model: fusion_options: a unimodal baseline has no fusion")

    @property
    def label(self) -> str:
        """``uni:<modality>`` for a baseline, else the strategy's name."""
        return f"uni:{self.unimodal}" if self.unimodal is not None else str(self.fusion)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities) if self.modalities is not None else None
        return _plain(d)

    @classmethod
    def from_json(cls, data: Any) -> ModelSpec:
        d = fields_of(cls, data, "model")
        if d.get("modalities") is not None:
            d["modalities"] = tuple(d["modalities"])
        return cls(**d)


def _train_from_json(data: Any, schema: int) -> TrainConfig:
    if schema == 2 and isinstance(data, Mapping):  # the five flat balance settings of schema 2
        d = dict(data)
        balance = {"method": d.pop("balance", None)}
        for old, new in RENAMED_BALANCE_SETTINGS.items():
            if old in d:
                balance[new.partition(".")[2]] = d.pop(old)
        data = {**d, "balance": balance}
    try:
        return TrainConfig.from_json(data)
    except TrainConfigError as exc:
        raise ConfigError(f"experiment spec: {exc}") from exc


@dataclass(frozen=True)
class ExperimentSpec:
    """One model to train: data, model and training settings (the seed is ``train.seed``)."""

    data: DataSpec
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("data", DataSpec), ("model", ModelSpec), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def variant(self) -> Variant:
        if self.model.unimodal is not None:
            return Variant.UNIMODAL
        if self.train.balance.method is not None:
            return Variant.BALANCED
        if self.train.modality_dropout > 0:
            return Variant.MODALITY_DROPOUT
        return Variant.STANDARD

    @property
    def variant_label(self) -> str:
        """The variant as tables group it: ``balance:<method>`` for each balancing method."""
        v = self.variant
        return f"balance:{self.train.balance.method}" if v is Variant.BALANCED else v.value

    @property
    def label(self) -> str:
        return self.model.label

    def weights_identity(self) -> dict[str, Any]:
        """Every setting that changes the trained weights (nothing that only says where or how loud).

        Balancing off leaves ``balance`` out; on, it is the method and the options that method
        reads (:meth:`~mmfuse.training.config.BalanceOptions.identity`)."""
        train = {k: v for k, v in self.train.to_json().items() if k not in _DISPLAY_ONLY}
        if train.get("calibrate") is None:  # off: left out, so keys from before the setting stay valid
            train.pop("calibrate", None)
        train.pop("balance")
        if balance := self.train.balance.identity():
            train["balance"] = balance
        return {"schema": SPEC_SCHEMA, "data": self.data.identity(), "model": self.model.to_json(),
                "train": _plain(train)}

    @property
    def key(self) -> str:
        """The training key: a hash of :meth:`weights_identity`."""
        return stable_hash(self.weights_identity())

    def replace(self, **changes: Any) -> ExperimentSpec:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return stamp("experiment_spec", SPEC_SCHEMA, {"data": self.data.to_json(), "model": self.model.to_json(),
                                                      "train": _plain(self.train.to_json())})

    @classmethod
    def from_json(cls, data: Any) -> ExperimentSpec:
        if not isinstance(data, Mapping):
            raise ConfigError(f"experiment spec: expected a mapping, got {type(data).__name__}")
        schema = check_format(data, "experiment_spec", (*_UPGRADABLE, SPEC_SCHEMA), legacy="schema",
                              where="experiment spec")
        # "train_key": the key a run folder's spec.json was written with (checked by --resume)
        d = fields_of(cls, {k: v for k, v in data.items() if k not in ("format", "schema", "train_key")},
                      "experiment spec")
        return cls(data=DataSpec.from_json(d["data"]), model=ModelSpec.from_json(d["model"]),
                   train=_train_from_json(d["train"], schema))

    def differences(self, other: ExperimentSpec, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """``"section.field: mine != theirs"`` for every weight-changing setting that differs
        (dotted names in ``ignore`` left out)."""
        a, b = flat_keys(self.weights_identity()), flat_keys(other.weights_identity())
        return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k) and k not in ignore]


def flat_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass(frozen=True)
class MeasureConfig:
    """What is measured on the test split of a trained model.

    Attributes:
        noise_scales: standard deviations of the Gaussian noise added to one modality
            at a time (clean data, scale 0, is always measured; it is not repeated here).
        intermediates_samples: test samples whose fusion intermediates (gates, modality
            weights, attention maps) are kept (0: none).
        throughput_batch: batch size of the inference-throughput measurement.
        missing: also measure each modality missing in turn.
        attribution: also compute each modality's Shapley value (and pairwise
            interaction index) for the main metric, by masking modalities through the
            fusion contract's presence masks (fusions of classification tasks only).
        sample_scores: keep each test sample's score (correctness for classification),
            for paired significance tests between strategies.
        probe: the accuracy of each modality inside a fused model: a linear probe on
            its encoder's frozen output, fitted on the train split
            (:func:`mmfuse.training.balance.modality_probe_accuracy`).
        metric: the metric that scores, ranks and tests the models (and in which the
            robustness and attribution are measured): a name of
            :func:`mmfuse.training.metrics.metric_names` or ``"auto"`` (the task's main
            metric, macro-F1 on a classification target whose majority class exceeds 70 %:
            :func:`mmfuse.training.metrics.choose_metric`). ``None`` is how records written
            before this setting existed read: the task's main metric.
    """

    noise_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    intermediates_samples: int = 0
    throughput_batch: int = 512
    missing: bool = True
    attribution: bool = True
    sample_scores: bool = True
    probe: bool = False
    metric: str | None = "auto"

    def __post_init__(self) -> None:
        from mmfuse.training.metrics import HIGHER_IS_BETTER

        if self.metric is not None and self.metric != "auto" and self.metric not in HIGHER_IS_BETTER:
            raise ConfigError(f"metric: expected 'auto' or one of {list(HIGHER_IS_BETTER)} (which of them a task "
                              f"has: accuracy, macro_f1, auroc for classification; micro_f1, macro_f1, map for "
                              f"multilabel; rmse, mae, r2 for regression), got {self.metric!r}")
        scales = self.noise_scales
        if isinstance(scales, (int, float)) and not isinstance(scales, bool):
            scales = (scales,)
        if not isinstance(scales, (list, tuple)) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 and s == s for s in scales
        ):
            raise ConfigError(f"noise_scales: expected a list of numbers >= 0, got {self.noise_scales!r}")
        object.__setattr__(self, "noise_scales", tuple(sorted({float(s) for s in scales if s > 0})))
        for name, low in (("intermediates_samples", 0), ("throughput_batch", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name}: expected an int >= {low}, got {v!r}")
        for name in ("missing", "attribution", "sample_scores", "probe"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        return {"noise_scales": list(self.noise_scales), "intermediates_samples": self.intermediates_samples,
                "throughput_batch": self.throughput_batch, "missing": self.missing,
                "attribution": self.attribution, "sample_scores": self.sample_scores, "probe": self.probe,
                # left out when None, so the keys of records written before the setting stay theirs
                **({"metric": self.metric} if self.metric is not None else {})}

    @classmethod
    def from_json(cls, data: Any) -> MeasureConfig:
        d = fields_of(cls, data, "measure")
        d.setdefault("metric", None)  # a record from before the setting: the task's main metric
        if "noise_scales" in d:
            d["noise_scales"] = tuple(d["noise_scales"])
        return cls(**d)


def measure_key(train_key: str, config: MeasureConfig) -> str:
    """The key of one measurement: the trained model's key plus the measure settings."""
    return stable_hash({"train": train_key, "measure": config.to_json(), "schema": SPEC_SCHEMA})
