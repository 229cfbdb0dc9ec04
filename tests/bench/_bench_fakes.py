"""Run functions injected into the bench runner in tests (module-level, so worker processes can import them).

They return results of the exact shape :func:`mmfuse.bench.run.train_and_evaluate`
returns, computed from the spec alone, so every number in a summary can be checked
by hand: accuracy = ``BASE[model] + 0.01 * seed``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmfuse.bench.grid import RunSpec

BASE = {"uni:a": 0.60, "uni:b": 0.70, "alpha": 0.80, "beta": 0.65}
MODALITIES = ("a", "b")


def accuracy_of(label: str, seed: int) -> float:
    return BASE[label] + 0.01 * seed


def _log_call(spec: RunSpec) -> None:
    """Count calls in a file under the results folder (works across processes)."""
    log = os.environ.get("MMFUSE_BENCH_TEST_CALLS")
    if log:
        with Path(log).open("a") as f:
            f.write(f"{spec.key} {spec.label} {spec.seed} {spec.variant}\n")


def fake_run(spec: RunSpec) -> dict[str, Any]:
    _log_call(spec)
    if spec.fusion_options.get("explode"):
        raise ValueError(f"fusion {spec.model!r}: unknown option 'explode'")
    acc = accuracy_of(spec.label, spec.seed) - (0.05 if spec.variant == "modality_dropout" else 0.0)
    scales = [f"{s:g}" for s in spec.noise_scales]
    noise = {m: {s: acc - 0.1 * float(s) * (i + 1) for s in scales} for i, m in enumerate(MODALITIES)}
    learned = None
    if spec.intermediates_samples and spec.model == "alpha":
        learned = {
            "modalities": list(MODALITIES),
            "modality_weights": {"a": [0.2, 0.3, 0.25, 0.4], "b": [0.8, 0.7, 0.75, 0.6]},
            "gates": {"gate": {"mean": [0.1, 0.5, 0.9], "shape": [8]}},
            "attention": {"a->b": {"samples": [[[0.3, 0.7], [0.6, 0.4]]] * 2, "mean": [[0.3, 0.7], [0.6, 0.4]]}},
        }
    return {
        "metrics": {"accuracy": acc, "macro_f1": acc - 0.02},
        "n_test": 100,
        "params": 1000 if spec.is_unimodal else 5000 + 100 * len(spec.label),
        "fusion_params": None if spec.is_unimodal else 2000,
        "train_time_s": 1.5 + spec.seed,
        "epochs_run": 3,
        "val_metrics": {"accuracy": acc},
        "throughput_sps": 10000.0,
        "peak_rss_mb": 321.0,
        "peak_method": "vmhwm_reset",
        "missing": {m: acc - 0.2 * (i + 1) for i, m in enumerate(MODALITIES)},
        "noise": noise,
        "noise_mean": {s: sum(noise[m][s] for m in MODALITIES) / 2 for s in scales},
        "robustness_errors": {},
        "learned": learned,
        "modalities": list(MODALITIES),
        "torch_threads": 1,
    }


def dying_run(spec: RunSpec) -> dict[str, Any]:
    """Kills its worker process outright for model 'beta' (as a segfault or OOM kill would)."""
    if spec.model == "beta":
        os._exit(3)
    return fake_run(spec)


def modalities_of(dataset: str, options: Any) -> tuple[str, ...]:
    return MODALITIES
