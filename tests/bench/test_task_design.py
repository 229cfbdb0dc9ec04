"""The designed synthetic tasks show the outcome they are designed to show, at a small size.

Each test trains the family a task favours and one it disfavours with the library's own
``build_model`` and ``fit`` (tiny sizes, a few epochs, one seed) and asserts a margin on
the test split. A regression in a strategy, in the training loop or in a generator
shows up here as a lost margin.
"""

from __future__ import annotations

import pytest
import torch

from mmfuse.data.synthetic import load_synthetic
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, evaluate, fit

HIDDEN = 32


def _train(splits, fusion: str, epochs: int = 12, **options) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build_model(splits, fusion=fusion, hidden_dim=HIDDEN, fusion_options=options)
    result = fit(model, splits, TrainConfig(epochs=epochs, lr=3e-3, patience=epochs, progress=False))
    params = sum(p.numel() for p in model.parameters())
    return evaluate(result.model, splits.test)["accuracy"], params


@pytest.fixture(scope="module")
def alignment() -> dict[str, float]:
    # the matching score takes ~200 steps to form: this is the smallest reliable size
    s = load_synthetic(task="alignment", n=2000)
    return {f: _train(s, f, epochs=15)[0] for f in ("multihead_cross_attention", "early")}


def test_alignment_token_attention_beats_pooling(alignment) -> None:
    # 300 test samples: one std of a chance accuracy is 0.029. Measured (seeds 0-2):
    # attention 0.80-0.88, early concatenation 0.64-0.66.
    att = alignment["multihead_cross_attention"]
    assert att > 0.75, alignment
    assert att > alignment["early"] + 0.1, alignment


@pytest.fixture(scope="module")
def groups() -> dict[str, tuple[float, int]]:
    s = load_synthetic(task="groups", n=1500)
    # a bilinear (tensor) local fusion per group, an additive global one (product of
    # the groups' class distributions = sum of their logits): the task's own structure
    local = {
        "local_fusion": "tensor",
        "local_options": {"dim": 8},
        "global_fusion": "late",
        "global_options": {"level": "decision", "decision": "product", "hidden_dims": [16]},
    }
    return {
        "right": _train(s, "hierarchical", **local),
        "wrong": _train(s, "hierarchical", groups=[["x0", "x2"], ["x1", "x3"]], **local),
        "early": _train(s, "early"),
    }


def test_groups_hierarchy_with_the_right_groups_wins_per_parameter(groups) -> None:
    (right, p_right), (wrong, p_wrong), (early, p_early) = groups["right"], groups["wrong"], groups["early"]
    # measured (seed 0, n=1500): right groups 0.91 at 10k parameters, wrong groups 0.49
    # (chance: no group can form a product), early concatenation 0.86 at 52k
    assert p_right == p_wrong  # same architecture, only the grouping differs
    assert right > 0.8, groups
    assert right > wrong + 0.25, groups
    assert right > early - 0.02 and p_right < p_early / 3, groups


@pytest.fixture(scope="module")
def reliability() -> dict[str, float]:
    s = load_synthetic(task="reliability", n=2000)
    return {f: _train(s, f, epochs=12)[0] for f in ("multihead_cross_attention", "early", "late")}


def test_reliability_per_sample_weighing_beats_a_fixed_combination(reliability) -> None:
    # a candidate alone is right on its clean half only (about 0.75): the clean one is
    # found only by matching its key against the reference x0, which attention with x0
    # as the query scores as a dot product. Measured (n=2000, hidden 32, 12 epochs; data
    # seeds 0-2 and model seeds 0-3): attention 0.84-0.89, the better of early and late
    # 0.74-0.79, by 0.07-0.14 in every pair (gated in between, 0.76-0.85)
    fixed = max(reliability["early"], reliability["late"])
    assert reliability["multihead_cross_attention"] > 0.8, reliability
    assert reliability["multihead_cross_attention"] > fixed + 0.05, reliability
