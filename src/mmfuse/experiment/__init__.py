"""One experiment: typed specs of a run, the one function that trains it, the one that measures it.

``train_one(spec)`` is what ``mmfuse train`` and every ``mmfuse bench`` run call;
``measure(trained, MeasureConfig(...))`` computes everything on the test split;
:class:`RunRecord` is the typed record the bench stores and reports from.
"""

from mmfuse.experiment.config import (
    experiment_from_settings,
    parse_overrides,
    read_yaml,
    train_config,
)
from mmfuse.experiment.results import (
    AttentionSummary,
    GateSummary,
    Learned,
    Measurement,
    RunRecord,
    TrainingFacts,
)
from mmfuse.experiment.run import TrainedRun, build_for, load_data, load_trained, measure, train_one
from mmfuse.experiment.specs import (
    DataSpec,
    ExperimentSpec,
    MeasureConfig,
    ModelSpec,
    Variant,
    measure_key,
)

__all__ = [
    "AttentionSummary",
    "DataSpec",
    "ExperimentSpec",
    "GateSummary",
    "Learned",
    "MeasureConfig",
    "Measurement",
    "ModelSpec",
    "RunRecord",
    "TrainedRun",
    "TrainingFacts",
    "Variant",
    "build_for",
    "experiment_from_settings",
    "load_data",
    "load_trained",
    "measure",
    "measure_key",
    "parse_overrides",
    "read_yaml",
    "train_config",
    "train_one",
]
