"""Fusion strategies, one module per family, all on the contract of :mod:`mmfuse.fusions._base`.

Every public module in this package is imported here, so a strategy registers itself
by existing: adding a strategy is adding one file.
"""

import importlib
import pkgutil

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    create_fusion,
    fusion_class,
    fusion_options,
    has_own_loss,
    list_fusions,
    masked_mean,
    masked_softmax,
    register_fusion,
)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if not _info.name.startswith("_") and _info.name != "costs":  # costs: tables, not a strategy
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "Fusion",
    "FusionBatch",
    "FusionError",
    "FusionIntermediates",
    "create_fusion",
    "fusion_class",
    "fusion_options",
    "has_own_loss",
    "list_fusions",
    "masked_mean",
    "masked_softmax",
    "register_fusion",
]
