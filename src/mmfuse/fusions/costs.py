"""Parameter count and forward FLOPs of every registered strategy, as formulas.

Shape legend: ``m`` modalities (all of input width ``d``), ``t`` tokens per modality
(``t = 1``: vector inputs), ``o`` output width (``d_out``). Each strategy is costed at
its default options by its own classmethod :meth:`~mmfuse.fusions.Fusion.cost`,
written beside its constructor and reading the defaults from the constructor's
signature; this module only dispatches and writes the tables.

FLOP convention: ``2 x`` the multiply-adds of the dense linear algebra of one sample's
forward pass (linear layers, attention scores ``q k^T`` and ``weights @ v``,
contractions), with every token valid. Elementwise work (activations, norms,
softmax, gates, pooling, outer-product multiplies) is not counted. This is what
:class:`torch.utils.flop_counter.FlopCounterMode` counts when attention weights are
computed explicitly (``return_intermediates=True``; the fused attention kernel is
not seen by the counter on every backend). Multiply by the batch size for a batch.

The formulas are tested against ``sum(p.numel())`` of the built module and against
the FLOP counter (``tests/fusions/test_costs.py``). ``docs/costs.md`` is written by
``python -m mmfuse.fusions.costs [PATH]``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfuse.fusions._base import Fusion, FusionError, fusion_class, list_fusions
from mmfuse.fusions._cost import Cost, CostText

__all__ = [
    "DOC_SHAPES",
    "FORMULAS",
    "Cost",
    "CostFormula",
    "CostText",
    "fusion_cost",
    "markdown_cost_table",
    "markdown_formula_table",
    "render_doc",
]

#: the shapes tabulated in docs/costs.md
DOC_SHAPES: tuple[tuple[int, int, int, int], ...] = ((2, 64, 1, 64), (3, 128, 1, 64), (3, 128, 32, 64), (4, 256, 64, 128))


@dataclass(frozen=True)
class CostFormula:
    """A strategy's cost at its default options, as the docs show it.

    Attributes:
        defaults: the default options the formula assumes (read from the signature)
            and what its other symbols stand for.
        params_big_o, flops_big_o: growth of the parameter count and of the FLOPs.
        params_exact, flops_exact: the exact formulas, in the symbols of the legend.
        fn: ``(m, d, t, o) -> Cost``.
    """

    defaults: str
    params_big_o: str
    flops_big_o: str
    params_exact: str
    flops_exact: str
    fn: Callable[[int, int, int, int], Cost]


def _has_formula(cls: type[Fusion]) -> bool:
    return cls.cost_text is not None and cls.cost.__func__ is not Fusion.cost.__func__  # type: ignore[attr-defined]


def _formula(cls: type[Fusion]) -> CostFormula:
    text = cls.cost_text
    assert text is not None
    params = inspect.signature(cls.__init__).parameters
    defaults = ", ".join(f"{name}={params[name].default!r}" for name in text.options)
    return CostFormula(
        f"{defaults}; {text.symbols}" if text.symbols else defaults,
        text.params_big_o,
        text.flops_big_o,
        text.params_exact,
        text.flops_exact,
        lambda m, d, t, o: cls.cost(m=m, d=d, t=t, output_dim=o),
    )


class _Formulas(Mapping[str, CostFormula]):
    """Registered strategy name -> its :class:`CostFormula`, read from the registry on
    every access (strategies register themselves on import)."""

    def __getitem__(self, name: str) -> CostFormula:
        if name not in list_fusions() or not _has_formula(fusion_class(name)):
            raise KeyError(name)
        return _formula(fusion_class(name))

    def __iter__(self) -> Iterator[str]:
        return (n for n in list_fusions() if _has_formula(fusion_class(n)))

    def __len__(self) -> int:
        return sum(1 for _ in self)


FORMULAS: Mapping[str, CostFormula] = _Formulas()


def fusion_cost(name: str, *, m: int, d: int, t: int = 1, output_dim: int) -> Cost:
    """Parameters and per-sample forward FLOPs of strategy ``name`` at its defaults.

    Args:
        name: a registered strategy.
        m: number of modalities.
        d: input width of every modality.
        t: tokens per modality (1 for vector inputs).
        output_dim: ``d_out``.
    """
    if name not in FORMULAS:
        raise FusionError(f"no cost formula for fusion {name!r}: expected one of {list(FORMULAS)}")
    for arg, value in (("m", m), ("d", d), ("t", t), ("output_dim", output_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FusionError(f"fusion_cost: {arg}: expected a positive int, got {value!r}")
    cls = fusion_class(name)
    if m < cls.min_modalities:
        raise FusionError(f"{name}: expected at least {cls.min_modalities} modalities, got m={m}")
    return cls.cost(m=m, d=d, t=t, output_dim=output_dim)


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def markdown_cost_table(shapes: Sequence[tuple[int, int, int, int]]) -> str:
    """A markdown table: one row per strategy, ``params / FLOPs`` per ``(m, d, t, o)`` shape.

    A shape a strategy refuses at its defaults (``tensor`` beyond ``max_size``, fewer
    modalities than it needs) shows ``refused``.
    """
    head = "| strategy | " + " | ".join(f"m={m}, d={d}, t={t}, o={o}" for m, d, t, o in shapes) + " |"
    rule = "|---|" + "---|" * len(shapes)
    rows = [head, rule]
    for name in FORMULAS:
        cells = []
        for m, d, t, o in shapes:
            try:
                cost = fusion_cost(name, m=m, d=d, t=t, output_dim=o)
            except FusionError:
                cells.append("refused")
            else:
                cells.append(f"{_human(cost.params)} / {_human(cost.flops)}")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def markdown_formula_table() -> str:
    """A markdown table of every registered strategy's formulas (defaults, big-O, exact)."""
    rows = [
        "| strategy | defaults assumed | params (big-O) | params (exact) | FLOPs (big-O) | FLOPs (exact) |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in FORMULAS.items():
        rows.append(
            f"| `{name}` | {f.defaults} | {f.params_big_o} | `{f.params_exact}` | "
            f"{f.flops_big_o} | `{f.flops_exact}` |"
        )
    return "\n".join(rows)


_DOC_HEAD = '# What each fusion strategy costs\n\nParameter count and forward FLOPs of every registered strategy at its default\noptions, as formulas and at a few shapes, so you can see what a strategy costs before\nchoosing it. Each strategy carries its formula as the classmethod `cost` beside its\nconstructor, reading its defaults from the constructor\'s signature;\n`mmfuse.fusions.costs.fusion_cost(name, m=, d=, t=, output_dim=)` dispatches to it, and `tests/fusions/test_costs.py` checks every one against the\nbuilt module for several shapes: parameters against `sum(p.numel())`, FLOPs against\n`torch.utils.flop_counter.FlopCounterMode`. The test is parametrized over\n`list_fusions()`, so a new strategy without a formula fails it.\n\nSymbols: `m` modalities, all of input width `d`; `t` tokens per modality (`t = 1`:\nvector inputs); `o` output width (`d_out`). Other letters are constants fixed by the\ndefaults (listed in the second column).\n\n**FLOP convention.** `2 x` the multiply-adds of the dense linear algebra of *one\nsample\'s* forward pass with every token valid: linear layers, attention scores\n`q k^T` and `weights @ v`, contractions. Elementwise work (activations, LayerNorm,\nsoftmax, gates, pooling, the multiplies of an outer product) is not counted.\nMultiply by the batch size for a batch. Costs cover the fusion module only, not the\nper-modality encoders in front of it.\n\nWhat the numbers alone do not tell:\n\n- **Pooling strategies ignore `t`.** `early` (default `align="pool"`), `late`,\n  `gated`, `hierarchical` (with its default `gated` parts), `tensor`, `low_rank`\n  and `film` reduce a sequence to the mask-aware mean of its valid tokens first,\n  so their cost does not grow with `t` (and they see no token-level structure).\n  The attention strategies (`cross_attention`, `multihead_cross_attention`,\n  `bottleneck`, `cross_modal_transformer`) work on tokens: cost grows with `t`\n  (quadratically in attention), and so does activation memory.\n- **`tensor` is exponential in `m`.** Its product has `(k+1)^m` entries (17^m at the\n  default `dim=16`) and its output map `(k+1)^m o` weights; it refuses a product\n  above `max_size = 2^20`, i.e. more than 4 modalities at the default width. The\n  product itself also takes about `(k+1)^m` elementwise multiplies per sample (not\n  in the FLOPs). `low_rank` is the same model restricted to rank `r`, linear in `m`.\n- **`cross_modal_transformer` is quadratic in `m`** (one stream per ordered pair,\n  `m (m-1) L` cross-modal blocks) and its self-attention width `s = (m-1) k` grows\n  with `m` too.\n\n'

_DOC_MIDDLE = 'Block sizes used above (pre-norm transformer block of width `w`, MLP ratio 4,\nattention with biases): self-attention block `12 w^2 + 13 w` parameters, a\ncross-attention block `12 w^2 + 15 w` (one more LayerNorm for the context); one\nblock on `q` query and `q` key tokens costs `24 q w^2 + 4 q^2 w` FLOPs. `L(M, d, o)` and\n`Gl(M, d, o)` in `hierarchical` are the rows of its local and global strategies\n(`gated` by default) with `m = M`.\n\n## At a few shapes\n\n`params / FLOPs per sample` (k = thousand, M = million); `refused` where the\nstrategy refuses the shape at its defaults.\n\n'


def render_doc() -> str:
    """The text of ``docs/costs.md``."""
    return (
        _DOC_HEAD
        + "## Formulas\n\n"
        + markdown_formula_table()
        + "\n\n"
        + _DOC_MIDDLE
        + markdown_cost_table(DOC_SHAPES)
        + "\n\nRegenerate this file with `python -m mmfuse.fusions.costs docs/costs.md`.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmfuse.fusions.costs [PATH]``: write the doc to PATH (default: stdout)."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = render_doc()
    if not args:
        sys.stdout.write(text)
        return 0
    from mmfuse.io import atomic_write

    atomic_write(Path(args[0]), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
