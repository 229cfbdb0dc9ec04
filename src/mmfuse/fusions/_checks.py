"""Checks of fusion options that relate several options (single options are checked
from their annotations, :mod:`mmfuse.fusions._options`)."""

from __future__ import annotations

from mmfuse.errors import FusionError

__all__ = ["check_heads"]


def check_heads(owner: str, dim: int, num_heads: int) -> None:
    """``num_heads`` divides ``dim``."""
    if dim % num_heads != 0:
        raise FusionError(f"{owner}: num_heads: expected a divisor of dim={dim}, got {num_heads}")
