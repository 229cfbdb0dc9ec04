"""Checks of fusion constructor options, shared by the strategies.

Each raises :class:`~mmfuse.fusions._base.FusionError` naming the strategy
(``owner``), the option, what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmfuse.errors import FusionError, check_fraction

__all__ = [
    "check_choice",
    "check_dropout",
    "check_int",
    "check_module_names",
    "check_positive_number",
    "check_transformer_options",
]


def check_int(owner: str, name: str, value: object, *, minimum: int = 1) -> int:
    """An int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise FusionError(f"{owner}: {name}: expected {expected}, got {value!r}")
    return value


def check_positive_number(owner: str, name: str, value: object) -> float:
    """A real number (not a bool) above zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise FusionError(f"{owner}: {name}: expected a positive number, got {value!r}")
    return float(value)


def check_dropout(owner: str, value: object) -> float:
    """A dropout probability in ``[0, 1)``."""
    return check_fraction(f"{owner}: dropout", value, error=FusionError)


def check_choice(owner: str, name: str, value: object, choices: Sequence[str]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise FusionError(f"{owner}: {name}: expected one of {list(choices)}, got {value!r}")


def check_module_names(owner: str, modalities: Sequence[str]) -> None:
    """Modality names usable as ``nn.ModuleDict`` keys (no ``'.'``)."""
    for mod in modalities:
        if "." in mod:
            raise FusionError(f"{owner}: modality {mod!r}: expected a name without '.', got {mod!r}")


def check_transformer_options(
    owner: str, modalities: Sequence[str], *, dim: object, num_heads: object, mlp_ratio: object, dropout: object
) -> None:
    """The options of a stack of :class:`~mmfuse.fusions._attention.TransformerBlock`
    over per-modality projections: ``dim`` and ``num_heads`` positive ints with
    ``num_heads`` dividing ``dim``, ``mlp_ratio`` positive, ``dropout`` in ``[0, 1)``,
    modality names usable as module keys."""
    dim = check_int(owner, "dim", dim)
    num_heads = check_int(owner, "num_heads", num_heads)
    if dim % num_heads != 0:
        raise FusionError(f"{owner}: num_heads: expected a divisor of dim={dim}, got {num_heads}")
    check_positive_number(owner, "mlp_ratio", mlp_ratio)
    check_dropout(owner, dropout)
    check_module_names(owner, modalities)
