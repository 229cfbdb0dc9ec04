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


# ------------------------------------------------ a tensor product too large for the bench's own options
def _tensor_grid(m: int, skipped: list[Skipped], **options) -> set[str]:
    cfg = BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=1, modality_dropout=0.0,
                      train=TrainConfig(epochs=1, progress=False), fusion_options=options)
    runs = build_grid(cfg, fusions=["tensor", "low_rank"], modalities_of=lambda d: [f"x{i}" for i in range(m)],
                      skipped=skipped)
    return {r.label for r in runs}


def test_tensor_is_left_out_where_its_product_outgrows_the_bench_and_kept_when_the_user_sets_it() -> None:
    skipped: list[Skipped] = []
    assert "tensor" in _tensor_grid(5, skipped) and not skipped  # (8 + 1)^5 = 59,049 <= 2^16
    labels = _tensor_grid(6, skipped)  # (8 + 1)^6 = 531,441: mfeat's six views at the bench's dim=8
    assert "tensor" not in labels and "low_rank" in labels
    assert [s.model for s in skipped] == ["tensor"]
    reason = skipped[0].reason
    # the size, the limit and a dim that fits: 6^6 = 46,656 <= 65,536 < 7^6 = 117,649
    assert "531,441" in reason and "65,536" in reason and "{tensor: {dim: 5}}" in reason and "46,656" in reason
    skipped.clear()
    assert "tensor" in _tensor_grid(6, skipped, tensor={"dim": 8}) and not skipped  # the user's choice runs
    assert "tensor" in _tensor_grid(6, skipped, tensor={"dim": 5}) and not skipped
    _tensor_grid(17, skipped)  # 2^17 > 2^16 even at dim 1: no dim to offer, low_rank named
    assert "dim:" not in skipped[-1].reason and "low_rank" in skipped[-1].reason


# ------------------------------------------------ a strategy with its own loss and --balance
def test_trusted_has_no_balanced_variant_and_says_why() -> None:
    cfg = BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=1, modality_dropout=0.0,
                      balance=["aux"], train=TrainConfig(epochs=1, progress=False))
    skipped: list[Skipped] = []
    runs = build_grid(cfg, fusions=["late", "trusted"], modalities_of=lambda d: ["x0", "x1"],
                      task_of=lambda d: "binary", skipped=skipped)
    variants = {(r.label, r.spec.variant_label) for r in runs}
    assert {("late", "standard"), ("late", "balance:aux"), ("trusted", "standard")} <= variants
    assert ("trusted", "balance:aux") not in variants
    assert [(s.model, s.dataset) for s in skipped] == [("trusted (--balance)", "synthetic/synergy")]
    assert "cross-entropy" in skipped[0].reason
