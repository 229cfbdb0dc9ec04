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
