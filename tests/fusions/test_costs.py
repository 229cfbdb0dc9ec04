"""Cost formulas of ``mmfuse.fusions.costs`` against the built modules.

Parametrized over ``list_fusions()``: a strategy registered without a formula fails.
Parameters are checked against ``sum(p.numel())``; FLOPs against
``torch.utils.flop_counter.FlopCounterMode`` with explicit attention weights
(``return_intermediates=True``), one sample, every token valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mmfuse
from mmfuse import FusionError
from mmfuse.fusions.costs import FORMULAS, fusion_cost, markdown_cost_table, markdown_formula_table

# (m, d, t, o); t = 1 feeds (b, d) vectors
SHAPES = [(2, 5, 1, 6), (3, 7, 4, 10), (4, 3, 3, 5), (2, 4, 6, 9), (3, 2, 2, 70)]


def _build(name: str, m: int, d: int, o: int) -> mmfuse.Fusion:
    return mmfuse.create_fusion(name, input_dims={f"mod{i}": d for i in range(m)}, output_dim=o).eval()


@pytest.mark.parametrize("name", mmfuse.list_fusions())
def test_every_strategy_has_a_formula(name: str) -> None:
    assert name in FORMULAS, f"no cost formula for {name!r}: add one to mmfuse/fusions/costs.py"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m{}-d{}-t{}-o{}".format(*s))
@pytest.mark.parametrize("name", mmfuse.list_fusions())
def test_formula_matches_the_module(name: str, shape: tuple[int, int, int, int]) -> None:
    m, d, t, o = shape
    cost = fusion_cost(name, m=m, d=d, t=t, output_dim=o)
    fusion = _build(name, m, d, o)
    assert cost.params == sum(p.numel() for p in fusion.parameters())
    inputs = {mod: torch.randn(1, t, d) if t > 1 else torch.randn(1, d) for mod in fusion.modalities}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fusion(inputs, return_intermediates=True)
    assert cost.flops == counter.get_total_flops()


def test_tensor_grows_exponentially_and_low_rank_linearly() -> None:
    tensor = [fusion_cost("tensor", m=m, d=32, output_dim=8).params for m in (2, 3, 4)]
    low = [fusion_cost("low_rank", m=m, d=32, output_dim=8).params for m in (2, 3, 4)]
    assert tensor[2] - tensor[1] > 10 * (tensor[1] - tensor[0])  # x17 per modality
    assert low[2] - low[1] == low[1] - low[0]


def test_bad_arguments_raise() -> None:
    with pytest.raises(FusionError, match="no cost formula for fusion 'nope'"):
        fusion_cost("nope", m=2, d=3, output_dim=4)
    with pytest.raises(FusionError, match="m: expected a positive int, got 0"):
        fusion_cost("early", m=0, d=3, output_dim=4)
    with pytest.raises(FusionError, match="t: expected a positive int"):
        fusion_cost("early", m=2, d=3, t=1.5, output_dim=4)


def test_markdown_table_has_every_strategy_and_marks_refusals() -> None:
    table = markdown_cost_table([(1, 8, 1, 4), (2, 8, 1, 4), (5, 8, 1, 4)])
    lines = table.splitlines()
    assert len(lines) == 2 + len(mmfuse.list_fusions())
    tensor_row = next(line for line in lines if line.startswith("| `tensor`"))
    assert tensor_row.split("|")[4].strip() == "refused"  # 17^5 > 2^20
    film_row = next(line for line in lines if line.startswith("| `film`"))
    assert film_row.split("|")[2].strip() == "refused"  # needs 2 modalities


def test_docs_tables_are_current() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "costs.md").read_text()
    assert markdown_formula_table() in doc, "docs/costs.md formulas are stale: regenerate them"
    shapes = [(2, 64, 1, 64), (3, 128, 1, 64), (3, 128, 32, 64), (4, 256, 64, 128)]
    assert markdown_cost_table(shapes) in doc, "docs/costs.md numbers are stale: regenerate them"


def test_doc_file_is_what_the_writer_writes(tmp_path: Path) -> None:
    from mmfuse.fusions.costs import main, render_doc

    doc = (Path(__file__).resolve().parents[2] / "docs" / "costs.md").read_text()
    assert doc == render_doc(), "docs/costs.md is stale: run python -m mmfuse.fusions.costs docs/costs.md"
    main([str(tmp_path / "costs.md")])
    assert (tmp_path / "costs.md").read_text() == doc


def test_formulas_read_the_defaults_from_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing a strategy's default changes its formula, with no second copy to edit."""
    import inspect

    cls = mmfuse.fusions.fusion_class("early")
    sig = inspect.signature(cls.__init__)
    params = [p.replace(default=(32,)) if p.name == "hidden_dims" else p for p in sig.parameters.values()]
    monkeypatch.setattr(cls.__init__, "__signature__", sig.replace(parameters=params), raising=False)
    cost = fusion_cost("early", m=2, d=5, output_dim=3)
    assert cost.params == (2 * 6 + 1) * 32 + 33 * 3
    assert "hidden_dims=(32,)" in FORMULAS["early"].defaults
