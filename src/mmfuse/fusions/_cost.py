"""Cost records shared by the strategies' own cost formulas (see :mod:`mmfuse.fusions.costs`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cost", "CostText", "block_flops", "block_params", "head_cost", "linear_params"]


@dataclass(frozen=True)
class Cost:
    """Parameters and forward FLOPs (per sample) of one strategy at one shape."""

    params: int
    flops: int


@dataclass(frozen=True)
class CostText:
    """How a strategy's :meth:`~mmfuse.fusions.Fusion.cost` reads, for the docs.

    Attributes:
        options: the options whose defaults the formula assumes; their values are
            read from the constructor's signature when the table is written.
        symbols: what the other letters of the formula stand for.
        params_big_o: growth of the parameter count.
        flops_big_o: growth of the FLOPs.
        params_exact: exact parameter count, in the symbols of the legend.
        flops_exact: exact FLOPs.
    """

    options: tuple[str, ...]
    symbols: str
    params_big_o: str
    flops_big_o: str
    params_exact: str
    flops_exact: str


def linear_params(n_in: int, n_out: int, *, bias: bool = True) -> int:
    """Parameters of ``nn.Linear(n_in, n_out, bias=bias)``."""
    return n_in * n_out + (n_out if bias else 0)


def head_cost(n_in: int, hidden: int, n_out: int) -> Cost:
    """Cost of a one-hidden-layer ``Mlp(n_in, n_out, hidden_dims=(hidden,))`` without norm:
    ``n_in -> hidden -> n_out`` (the heads of early, late and trusted)."""
    return Cost(linear_params(n_in, hidden) + linear_params(hidden, n_out), 2 * (n_in * hidden + hidden * n_out))


def block_params(k: int, *, cross: bool, mlp_ratio: float) -> int:
    """Parameters of one pre-norm ``TransformerBlock`` of width ``k``: four ``k x k``
    attention projections, two LayerNorms (three with a cross-attention context norm)
    and the ``k -> k mlp_ratio -> k`` MLP."""
    hidden = max(1, int(k * mlp_ratio))
    return 4 * linear_params(k, k) + (3 if cross else 2) * 2 * k + linear_params(k, hidden) + linear_params(hidden, k)


def block_flops(k: int, tq: int, tk: int, *, mlp_ratio: float) -> int:
    """FLOPs of one block: q/out projections on ``tq`` tokens, k/v on ``tk``, attention, MLP."""
    hidden = max(1, int(k * mlp_ratio))
    return 2 * (2 * tq * k * k + 2 * tk * k * k + 2 * tq * tk * k + 2 * tq * k * hidden)
