"""Run functions injected into the bench runner in tests (module-level, so worker processes can import them).

They return typed results of the exact kind :func:`mmfuse.bench.run.run_one` returns,
computed from the run's settings alone, so every number in a summary can be checked by
hand: accuracy = ``BASE[model] + 0.01 * seed``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mmfuse.bench.grid import BenchRun
from mmfuse.bench.run import RunResult
from mmfuse.experiment.results import (
    AttentionSummary,
    GateSummary,
    Learned,
    Measurement,
    TrainingFacts,
)
from mmfuse.experiment.specs import DataSpec

BASE = {"uni:a": 0.60, "uni:b": 0.70, "alpha": 0.80, "beta": 0.65}
MODALITIES = ("a", "b")


def accuracy_of(label: str, seed: int) -> float:
    return BASE[label] + 0.01 * seed


def _log_call(run: BenchRun) -> None:
    """Count calls in a file under the results folder (works across processes)."""
    log = os.environ.get("MMFUSE_BENCH_TEST_CALLS")
    if log:
        with Path(log).open("a") as f:
            f.write(f"{run.key} {run.label} {run.spec.seed} {run.spec.variant.value}\n")


def fake_run(run: BenchRun) -> RunResult:
    _log_call(run)
    spec = run.spec
    acc = accuracy_of(spec.label, spec.seed) - (0.05 if spec.variant.value == "modality_dropout" else 0.0)
    scales = [f"{s:g}" for s in run.measure.noise_scales]
    noise = {m: {s: acc - 0.1 * float(s) * (i + 1) for s in scales} for i, m in enumerate(MODALITIES)}
    learned = None
    if run.measure.intermediates_samples and spec.label == "alpha":
        learned = Learned(
            modalities=list(MODALITIES),
            modality_weights={"a": [0.2, 0.3, 0.25, 0.4], "b": [0.8, 0.7, 0.75, 0.6]},
            gates={"gate": GateSummary(shape=[8], mean=[0.1, 0.5, 0.9])},
            attention={"a->b": AttentionSummary(samples=[[[0.3, 0.7], [0.6, 0.4]]] * 2,
                                                mean=[[0.3, 0.7], [0.6, 0.4]])},
        )
    unimodal = spec.model.unimodal is not None
    return RunResult(
        training=TrainingFacts(params=1000 if unimodal else 5000 + 100 * len(spec.label),
                               fusion_params=None if unimodal else 2000, train_time_s=1.5 + spec.seed,
                               epochs_run=3, best_epoch=2, val_metrics={"accuracy": acc}, threads=1),
        measurement=Measurement(
            metric="accuracy", higher_is_better=True, metrics={"accuracy": acc, "macro_f1": acc - 0.02},
            n_test=100, missing={} if unimodal else {m: acc - 0.2 * (i + 1) for i, m in enumerate(MODALITIES)},
            noise=noise, noise_mean={s: sum(noise[m][s] for m in MODALITIES) / 2 for s in scales},
            throughput_sps=10000.0, memory_mb=1.5, learned=learned,
            sample_scores=[1.0 if i < round(acc * 100) else 0.0 for i in range(100)]),
    )


def failing_run(run: BenchRun) -> RunResult:
    """Fails (as a bad option would at run time) for model 'beta'."""
    if run.spec.label == "beta":
        _log_call(run)
        raise ValueError("fusion 'beta': the run broke at run time")
    return fake_run(run)


def dying_run(run: BenchRun) -> RunResult:
    """Kills its worker process outright for model 'beta' (as a segfault or OOM kill would)."""
    if run.spec.label == "beta":
        os._exit(3)
    return fake_run(run)


def slow_run(run: BenchRun) -> RunResult:
    """Takes a long time (for tests that kill the bench while runs are in flight); says it started."""
    import signal

    # as Lightning's fit does: SIGTERM only records the signal
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    folder = os.environ.get("MMFUSE_BENCH_TEST_STARTED")
    if folder:
        (Path(folder) / f"{os.getpid()}.started").write_text("")
    time.sleep(120)
    return fake_run(run)


def modalities_of(data: DataSpec) -> tuple[str, ...]:
    return MODALITIES


def disk_full_run(run: BenchRun) -> RunResult:
    """Fails for model 'beta' as a write into a full device does (``ENOSPC``, naming the file)."""
    import errno

    if run.spec.label == "beta":
        _log_call(run)
        where = str(Path(run.models_dir or ".") / run.train_key / "model.safetensors")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
    return fake_run(run)
