"""The run function of the grid: train a model (or load the saved one), then measure it.

:func:`run_one` is what every executor calls for a :class:`~mmfuse.bench.grid.BenchRun`:

1. if ``models_dir`` holds the model of the run's training key (weights as
   safetensors, training facts as JSON), it is loaded and nothing is trained;
2. else :func:`mmfuse.experiment.train_one` trains it (the same path as
   ``mmfuse train``) and it is saved there;
3. :func:`mmfuse.experiment.measure` measures it as the run's
   :class:`~mmfuse.experiment.MeasureConfig` says.

So a finished comparison re-measured with new test-time settings trains nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mmfuse.bench.grid import BenchRun
from mmfuse.experiment.results import Measurement, TrainingFacts

__all__ = ["RunResult", "run_one", "saved_model"]


@dataclass(frozen=True)
class RunResult:
    """What a run function returns: the training facts and the measurement."""

    training: TrainingFacts
    measurement: Measurement


def saved_model(run: BenchRun) -> tuple[Path, Path] | None:
    """``(weights, facts)`` paths of the run's saved model, if both exist."""
    if run.models_dir is None:
        return None
    base = Path(run.models_dir) / run.train_key
    weights, facts = base.with_suffix(".safetensors"), base.with_suffix(".json")
    return (weights, facts) if weights.is_file() and facts.is_file() else None


def run_one(run: BenchRun) -> RunResult:
    """Train (or load) and measure the model of ``run`` (see the module docstring)."""
    from mmfuse.experiment import load_data, load_trained, measure, train_one
    from mmfuse.io import atomic_write
    from mmfuse.training.checkpoint import save_checkpoint

    splits = load_data(run.spec.data)
    saved = saved_model(run)
    if saved is not None:
        weights, facts_path = saved
        facts = TrainingFacts.from_json(json.loads(facts_path.read_text()))
        trained = load_trained(run.spec, weights, facts, splits=splits)
    else:
        trained = train_one(run.spec, splits=splits)
        if run.models_dir is not None:
            base = Path(run.models_dir) / run.train_key
            save_checkpoint(trained.model, base.with_suffix(".safetensors"))
            atomic_write(base.with_suffix(".json"), json.dumps(trained.facts.to_json(), indent=1))
    return RunResult(training=trained.facts, measurement=measure(trained, run.measure))
