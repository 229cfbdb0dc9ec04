"""A strategy that is decision-level whatever its options (``trusted``) joins the grid of a
classification task and is left out, with the reason, of any other task."""

from __future__ import annotations

from mmfuse.bench import BenchConfig, build_grid
from mmfuse.bench.verdict import Skipped
from mmfuse.training import TrainConfig


def _grid(task: str, skipped: list[Skipped]) -> set[str]:
    cfg = BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=1, modality_dropout=0.0,
                      train=TrainConfig(epochs=1, progress=False))
    runs = build_grid(cfg, fusions=["late", "trusted"], modalities_of=lambda d: ["x0", "x1"],
                      task_of=lambda d: task, skipped=skipped)
    return {r.label for r in runs}


def test_trusted_runs_on_classification_and_is_skipped_elsewhere() -> None:
    skipped: list[Skipped] = []
    assert {"late", "trusted"} <= _grid("multiclass", skipped) and not skipped
    assert {"late", "trusted"} <= _grid("binary", skipped) and not skipped
    labels = _grid("regression", skipped)
    assert "late" in labels and "trusted" not in labels
    assert [(s.model, s.dataset) for s in skipped] == [("trusted", "synthetic/synergy")]
    assert "decision-level" in skipped[0].reason and "regression" in skipped[0].reason
