"""Parameter count and forward FLOPs of every registered strategy, as formulas.

Shape legend: ``m`` modalities (all of input width ``d``), ``t`` tokens per modality
(``t = 1``: vector inputs), ``o`` output width (``d_out``). Each strategy is costed at
its default options; the constants those defaults fix (hidden widths, ``dim``,
layers, heads, ...) are named in its formula.

FLOP convention: ``2 x`` the multiply-adds of the dense linear algebra of one sample's
forward pass (linear layers, attention scores ``q k^T`` and ``weights @ v``,
contractions), with every token valid. Elementwise work (activations, norms,
softmax, gates, pooling, outer-product multiplies) is not counted. This is what
:class:`torch.utils.flop_counter.FlopCounterMode` counts when attention weights are
computed explicitly (``return_intermediates=True``; the fused attention kernel is
not seen by the counter on every backend). Multiply by the batch size for a batch.

The formulas are tested against ``sum(p.numel())`` of the built module and against
the FLOP counter (``tests/fusions/test_costs.py``); ``docs/costs.md`` tabulates them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mmfuse.fusions._base import FusionError, list_fusions

__all__ = ["Cost", "CostFormula", "FORMULAS", "fusion_cost", "markdown_cost_table", "markdown_formula_table"]


@dataclass(frozen=True)
class Cost:
    """Parameters and forward FLOPs (per sample) of one strategy at one shape."""

    params: int
    flops: int


@dataclass(frozen=True)
class CostFormula:
    """A strategy's cost at its default options.

    Attributes:
        defaults: the default options the formula assumes, in words.
        params_big_o: growth of the parameter count.
        flops_big_o: growth of the FLOPs.
        params_exact: exact parameter count, in the symbols of the module legend.
        flops_exact: exact FLOPs.
        fn: ``(m, d, t, o) -> Cost``.
    """

    defaults: str
    params_big_o: str
    flops_big_o: str
    params_exact: str
    flops_exact: str
    fn: Callable[[int, int, int, int], Cost]


def _linear(n_in: int, n_out: int, *, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


# ------------------------------------------------------------- guide strategies
_H = 256  # early/late default hidden width


def _early(m: int, d: int, t: int, o: int) -> Cost:
    cat = m * (d + 1)  # features + one presence indicator per modality
    return Cost(_linear(cat, _H) + _linear(_H, o), 2 * (cat * _H + _H * o))


def _late(m: int, d: int, t: int, o: int) -> Cost:
    return Cost(m * (_linear(d, _H) + _linear(_H, o)), 2 * m * (d * _H + _H * o))


def _gated_out(m: int, o: int) -> int:
    return o if m == 2 else m * o


def _gated(m: int, d: int, t: int, o: int) -> Cost:
    g = _gated_out(m, o)
    return Cost(m * _linear(d, o) + _linear(m * o, g), 2 * (m * d * o + m * o * g))


def _hierarchical(m: int, d: int, t: int, o: int) -> Cost:
    # default groups: consecutive pairs of sorted names, an odd one alone; two
    # modalities are two singleton groups. Local and global fusions are 'gated',
    # local_dim = o; a singleton group is Linear(d -> o).
    pairs, singles = (0, m) if m <= 2 else (m // 2, m % 2)
    local_pair = _gated(2, d, t, o)
    glob = _gated(pairs + singles, o, 1, o)
    params = pairs * local_pair.params + singles * _linear(d, o) + glob.params
    flops = pairs * local_pair.flops + singles * 2 * d * o + glob.flops
    return Cost(params, flops)


def _cross_attention(m: int, d: int, t: int, o: int) -> Cost:
    k = o  # dim = d_out
    a = min(k, 64)  # hidden_dim: capped at 64 by default
    tk = (m - 1) * t  # context tokens
    params = m * _linear(d, k) + (_linear(k, a) + k * a + a) + _linear(k, o)
    flops = 2 * (
        m * t * d * k  # projections
        + 2 * t * k * a  # query half of the score MLP (again for the zero key)
        + tk * k * a  # key half
        + t * tk * a + t * a  # score layer on every pair, and on the zero key
        + t * tk * k  # weights @ keys
        + k * o
    )
    return Cost(params, flops)


def _mhca(m: int, d: int, t: int, o: int) -> Cost:
    h = 4
    k = h * math.ceil(o / h)
    tk = (m - 1) * t + 1  # context tokens and the zero slot
    params = m * _linear(d, k) + 4 * _linear(k, k) + 2 * k + _linear(k, o)
    flops = 2 * (m * t * d * k + 2 * t * k * k + 2 * (m - 1) * t * k * k + 2 * t * tk * k + k * o)
    return Cost(params, flops)


# ------------------------------------------------------------ beyond the guide
def _tensor(m: int, d: int, t: int, o: int) -> Cost:
    k = 16
    size = (k + 1) ** m
    return Cost(m * _linear(d, k) + _linear(size, o), 2 * (m * d * k + size * o))


def _low_rank(m: int, d: int, t: int, o: int) -> Cost:
    k, r = 16, 4
    return Cost(m * _linear(d, k) + m * r * (k + 1) * o + o, 2 * m * (d * k + r * (k + 1) * o))


def _film(m: int, d: int, t: int, o: int) -> Cost:
    k = 64
    links = m - 1
    params = m * _linear(d, k) + links * 2 * _linear(k, k) + _linear(k, o)
    return Cost(params, 2 * (m * d * k + links * 2 * k * k + k * o))


def _block(k: int, *, cross: bool, mlp_ratio: float = 4.0) -> int:
    hidden = max(1, int(k * mlp_ratio))
    return 4 * _linear(k, k) + (3 if cross else 2) * 2 * k + _linear(k, hidden) + _linear(hidden, k)


def _block_flops(k: int, tq: int, tk: int, mlp_ratio: float = 4.0) -> int:
    """One pre-norm block: q/out projections on ``tq`` tokens, k/v on ``tk``, attention, MLP."""
    hidden = max(1, int(k * mlp_ratio))
    return 2 * (2 * tq * k * k + 2 * tk * k * k + 2 * tq * tk * k + 2 * tq * k * hidden)


def _bottleneck(m: int, d: int, t: int, o: int) -> Cost:
    k, layers, n, fusion_layer = 64, 2, 4, 1
    params = m * _linear(d, k) + layers * m * _block(k, cross=False) + n * k + 2 * k + _linear(k, o)
    flops = 2 * m * t * d * k + 2 * k * o
    for layer in range(layers):
        tokens = t if layer < fusion_layer else t + n
        flops += m * _block_flops(k, tokens, tokens)
    return Cost(params, flops)


def _cross_modal_transformer(m: int, d: int, t: int, o: int) -> Cost:
    k, layers, self_layers = 32, 2, 1
    s = (m - 1) * k
    params = (
        m * _linear(d, k)
        + m * (m - 1) * layers * _block(k, cross=True)
        + m * self_layers * _block(s, cross=False)
        + m * 2 * s
        + _linear(m * s, o)
    )
    flops = (
        2 * m * t * d * k
        + m * (m - 1) * layers * _block_flops(k, t, t)
        + m * self_layers * _block_flops(s, t, t)
        + 2 * m * s * o
    )
    return Cost(params, flops)


FORMULAS: dict[str, CostFormula] = {
    "early": CostFormula(
        "hidden_dims=(256,), presence_features=True, align='pool' (H = 256)",
        "O(m d H + H o)",
        "O(m d H + H o)",
        "(m(d+1)+1) H + (H+1) o",
        "2 (m(d+1) H + H o)",
        _early,
    ),
    "late": CostFormula(
        "level='feature', combine='mean', hidden_dims=(256,) (H = 256)",
        "O(m (d + o) H)",
        "O(m (d + o) H)",
        "m ((d+1) H + (H+1) o)",
        "2 m (d H + H o)",
        _late,
    ),
    "gated": CostFormula(
        "gate='feature', unit='linear', bias=True; g = o if m = 2 else m o",
        "O(m d o + m^2 o^2)",
        "O(m d o + m^2 o^2)",
        "m (d+1) o + (m o + 1) g",
        "2 (m d o + m o g)",
        _gated,
    ),
    "hierarchical": CostFormula(
        "groups = consecutive pairs (m = 2: singletons), local and global 'gated', local_dim = o; "
        "p pairs, s singletons, G = p + s groups",
        "O(m d o + m^2 o^2)",
        "O(m d o + m^2 o^2)",
        "p gated(2, d, o) + s (d+1) o + gated(G, o, o)",
        "p gated_flops(2, d, o) + 2 s d o + gated_flops(G, o, o)",
        _hierarchical,
    ),
    "cross_attention": CostFormula(
        "mode='query', dim k = o, hidden_dim a = min(k, 64), add_zero_attn=True; T = (m-1) t context tokens",
        "O(m d k + k a + k o)",
        "O(m t d k + m t k a + m t^2 a + m t^2 k)",
        "m (d+1) k + (2 k a + 2 a) + (k+1) o",
        "2 (m t d k + 2 t k a + T k a + t T a + t a + t T k + k o)",
        _cross_attention,
    ),
    "multihead_cross_attention": CostFormula(
        "mode='query', num_heads=4, dim k = 4 ceil(o/4), residual, norm, add_zero_attn; "
        "T = (m-1) t + 1 keys",
        "O(m d k + k^2)",
        "O(m t d k + m t k^2 + m t^2 k)",
        "m (d+1) k + 4 (k+1) k + 2 k + (k+1) o",
        "2 (m t d k + 2 t k^2 + 2 (m-1) t k^2 + 2 t T k + k o)",
        _mhca,
    ),
    "tensor": CostFormula(
        "dim k = 16, max_size = 2^20 (so m <= 4 at k = 16)",
        "O(m d k + (k+1)^m o)  (exponential in m)",
        "O(m d k + (k+1)^m o)  (exponential in m)",
        "m (d+1) k + ((k+1)^m + 1) o",
        "2 (m d k + (k+1)^m o)",
        _tensor,
    ),
    "low_rank": CostFormula(
        "dim k = 16, rank r = 4, rank_weights=False",
        "O(m (d k + r k o))",
        "O(m (d k + r k o))",
        "m (d+1) k + m r (k+1) o + o",
        "2 m (d k + r (k+1) o)",
        _low_rank,
    ),
    "film": CostFormula(
        "dim k = 64, mode='chain' (m - 1 FiLM links)",
        "O(m d k + m k^2 + k o)",
        "O(m d k + m k^2 + k o)",
        "m (d+1) k + 2 (m-1)(k+1) k + (k+1) o",
        "2 (m d k + 2 (m-1) k^2 + k o)",
        _film,
    ),
    "bottleneck": CostFormula(
        "dim k = 64, num_layers L = 2, num_heads = 4, n = 4 fusion tokens, fusion_layer = 1, "
        "mlp_ratio 4; B(k) = 12 k^2 + 13 k per block; F(q) = 24 q k^2 + 4 q^2 k per block on q tokens",
        "O(L m k^2 + m d k)",
        "O(m t d k + L m (t+n) k^2 + L m (t+n)^2 k)",
        "m (d+1) k + L m B(k) + n k + 2 k + (k+1) o",
        "2 m t d k + m F(t) + (L-1) m F(t+n) + 2 k o",
        _bottleneck,
    ),
    "cross_modal_transformer": CostFormula(
        "dim k = 32, num_layers L = 2, num_self_layers S = 1, num_heads = 4, mlp_ratio 4, "
        "combine='concat'; s = (m-1) k; B_x(k) = 12 k^2 + 15 k (cross), B(s) = 12 s^2 + 13 s; "
        "F_w = 24 t w^2 + 4 t^2 w for a block of width w",
        "O(L m^2 k^2 + S m^3 k^2 + m d k + m^2 k o)",
        "O(m t d k + L m^2 (t k^2 + t^2 k) + S m (t s^2 + t^2 s))",
        "m (d+1) k + m(m-1) L B_x(k) + m S B(s) + 2 m s + (m s + 1) o",
        "2 m t d k + m(m-1) L F_k + m S F_s + 2 m s o",
        _cross_modal_transformer,
    ),
}


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
        known = [n for n in list_fusions() if n in FORMULAS]
        raise FusionError(f"no cost formula for fusion {name!r}: expected one of {known}")
    for arg, value in (("m", m), ("d", d), ("t", t), ("output_dim", output_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FusionError(f"fusion_cost: {arg}: expected a positive int, got {value!r}")
    return FORMULAS[name].fn(m, d, t, output_dim)


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
    from mmfuse.fusions._base import fusion_class

    head = "| strategy | " + " | ".join(f"m={m}, d={d}, t={t}, o={o}" for m, d, t, o in shapes) + " |"
    rule = "|---|" + "---|" * len(shapes)
    rows = [head, rule]
    for name in list_fusions():
        cells = []
        for m, d, t, o in shapes:
            cost = fusion_cost(name, m=m, d=d, t=t, output_dim=o)
            refused = m < fusion_class(name).min_modalities or (name == "tensor" and 17**m > 2**20)
            cells.append("refused" if refused else f"{_human(cost.params)} / {_human(cost.flops)}")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def markdown_formula_table() -> str:
    """A markdown table of every registered strategy's formulas (defaults, big-O, exact)."""
    rows = [
        "| strategy | defaults assumed | params (big-O) | params (exact) | FLOPs (big-O) | FLOPs (exact) |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_fusions():
        f = FORMULAS[name]
        rows.append(
            f"| `{name}` | {f.defaults} | {f.params_big_o} | `{f.params_exact}` | "
            f"{f.flops_big_o} | `{f.flops_exact}` |"
        )
    return "\n".join(rows)
