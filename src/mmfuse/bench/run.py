"""The run function of the grid: train a model (or load the saved one), then measure it.

:func:`run_one` is what every executor calls for a :class:`~mmfuse.bench.grid.BenchRun`:

1. if ``models_dir`` holds the model of the run's training key (its run bundle
   ``models/<key>/``: weights, preprocessing, ``bundle.json``, training facts), it is
   loaded and nothing is trained;
2. else :func:`mmfuse.experiment.train_one` trains it (the same path as
   ``mmfuse train``) and its bundle is saved there (:mod:`mmfuse.runs.bundle`), so
   ``mmfuse predict BENCH_FOLDER`` can use it;
3. :func:`mmfuse.experiment.measure` measures it as the run's
   :class:`~mmfuse.experiment.MeasureConfig` says.

So a finished comparison re-measured with new test-time settings trains nothing.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from mmfuse.bench.grid import BenchRun
from mmfuse.errors import MmfuseError
from mmfuse.experiment.results import Measurement, TrainingFacts
from mmfuse.records import check_format, stamp

#: the version of a saved model's ``facts.json`` (``"format": "mmfuse.training_facts/1"``;
#: files of an earlier mmfuse carry no key and read as 1)
FACTS_VERSION = 1

__all__ = ["RunResult", "run_one", "saved_model"]


@dataclass(frozen=True)
class RunResult:
    """What a run function returns: the training facts and the measurement."""

    training: TrainingFacts
    measurement: Measurement


def saved_model(run: BenchRun) -> tuple[Path, Path] | None:
    """``(weights, facts)`` paths of the run's saved model, if both exist: the bundle folder
    ``models/<key>/``, or the two files ``models/<key>.safetensors`` / ``.json`` that benches
    wrote before bundles existed."""
    if run.models_dir is None:
        return None
    base = Path(run.models_dir) / run.train_key
    for weights, facts in ((base / "model.safetensors", base / "facts.json"),
                           (base.with_suffix(".safetensors"), base.with_suffix(".json"))):
        if weights.is_file() and facts.is_file():
            return weights, facts
    return None


def run_one(run: BenchRun) -> RunResult:
    """Train (or load) and measure the model of ``run`` (see the module docstring)."""
    from mmfuse.experiment import load_data, load_trained, measure, train_one
    from mmfuse.io import atomic_write
    from mmfuse.training.checkpoint import save_checkpoint

    splits = load_data(run.spec.data)
    saved = saved_model(run)
    trained = None
    if saved is not None:
        weights, facts_path = saved
        try:
            data = json.loads(facts_path.read_text())
            check_format(data, "training_facts", FACTS_VERSION, unversioned=1, where=str(facts_path))
            facts = TrainingFacts.from_json({k: v for k, v in data.items() if k != "format"})
            trained = load_trained(run.spec, weights, facts, splits=splits)
        except (MmfuseError, OSError, ValueError) as exc:  # damaged, or another version's: train it again
            warnings.warn(f"{weights.parent}: the saved model cannot be used ({exc}); training it again",
                          stacklevel=2)
            saved = None
    if trained is None:
        trained = train_one(run.spec, splits=splits)
    measurement = measure(trained, run.measure)
    if saved is None and run.models_dir is not None:
        from mmfuse.runs.bundle import write_bundle

        folder = Path(run.models_dir) / run.train_key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "facts.json").unlink(missing_ok=True)  # incomplete until it is written again, last
        try:
            weights = save_checkpoint(trained.model, folder / "model.safetensors")
            metrics = {"val": trained.facts.val_metrics, "test": {**measurement.metrics, "n": measurement.n_test}}
            write_bundle(folder, model_file=weights, splits=splits, spec=run.spec, metrics=metrics)
            # written last: a folder with facts.json is complete (a crash before it trains again)
            atomic_write(folder / "facts.json",
                         json.dumps(stamp("training_facts", FACTS_VERSION, trained.facts.to_json()), indent=1))
        except Exception:  # a full disk, say: no half bundle is left for predict to find
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return RunResult(training=trained.facts, measurement=measurement)
