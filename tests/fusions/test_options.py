"""Options checked from annotations (``mmfuse.fusions._options``) and their help text."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import nn

import mmfuse
from mmfuse import FusionError
from mmfuse.cli import main
from mmfuse.fusions._options import (
    FusionName,
    PositiveFloat,
    PositiveInt,
    Rate,
    accepts,
    describe,
    docstring_args,
    option_help,
)


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        (bool, [True, False], ["no", 1, None]),
        (PositiveInt, [1, 7], [0, -1, True, 2.0, "3"]),
        (Rate, [0, 0.0, 0.5], [1.0, -0.1, "0.1", float("nan"), False]),
        (PositiveFloat, [0.5, 4], [0, float("inf"), float("nan"), "4"]),
        (Literal["a", "b"], ["a", "b"], ["c", None, 0]),
        (PositiveInt | None, [None, 3], [0, "x"]),
        (FusionName, ["gated", "early"], ["nope", 3]),
        (nn.Module | None, [nn.Linear(1, 1), None], ["x", nn.Linear]),
    ],
)
def test_accepts(annotation: object, good: list, bad: list) -> None:
    for value in good:
        assert accepts(annotation, value), (annotation, value)
    for value in bad:
        assert not accepts(annotation, value), (annotation, value)


def test_layer_options_take_a_class_or_factory_not_a_name_or_a_module() -> None:
    from collections.abc import Callable

    ann = Callable[[], nn.Module]
    assert accepts(ann, nn.GELU) and accepts(ann, lambda: nn.ReLU())
    assert not accepts(ann, "relu") and not accepts(ann, nn.GELU()) and not accepts(ann, int)
    assert describe(ann).startswith("a class or callable")


def test_the_issue_cases_raise_fusion_errors() -> None:
    dims = {"a": 3, "b": 4}
    cases = [
        ("gated", {"bias": "no"}, r"gated: bias: expected a bool \(True or False\), got 'no'"),
        ("early", {"dropout": "0.1"}, r"early: dropout: expected a float in \[0, 1\), got '0.1'"),
        ("late", {"act_layer": "relu"}, "late: act_layer: expected a class or callable that builds an nn.Module"),
        ("hierarchical", {"local_fusion": "nope"}, "hierarchical: local_fusion: expected one of"),
        ("tensor", {"dim": 0}, r"tensor: dim: expected a positive int or None, got 0"),
    ]
    for name, options, message in cases:
        with pytest.raises(FusionError, match=message):
            mmfuse.create_fusion(name, input_dims=dims, output_dim=2, **options)
    # direct construction is checked the same way (not only create_fusion)
    from mmfuse.fusions.gated import GatedFusion

    with pytest.raises(FusionError, match="gated: bias: expected a bool"):
        GatedFusion(input_dims=dims, output_dim=2, bias="no")
    # and a valid instance still works
    out = GatedFusion(input_dims=dims, output_dim=2, bias=False)({"a": torch.randn(2, 3), "b": torch.randn(2, 4)})
    assert out.shape == (2, 2)


def test_docstring_args_joins_continuation_lines() -> None:
    doc = """Title.

    Args:
        alpha: first line
            and its continuation.
        beta: one line.

    Returns:
        gamma: not an arg.
    """
    assert docstring_args(doc) == {"alpha": "first line and its continuation.", "beta": "one line."}


def test_every_option_has_a_meaning_and_allowed_values() -> None:
    for name in mmfuse.list_fusions():
        for opt in option_help(mmfuse.fusions.fusion_class(name)):
            assert opt.meaning, f"{name}: option {opt.name} has no line in the class docstring's Args"
            assert opt.allowed, f"{name}: option {opt.name} has no annotation"


def test_list_options_prints_meaning_and_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    gated = out[out.index("\ngated ") :]
    assert "    bias = True\n        allowed: a bool (True or False)\n        give the projections and the gate a bias." in gated
    assert "allowed: one of ['scalar', 'feature']" in gated
    assert "guide" not in out
