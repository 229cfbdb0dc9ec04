"""mmfuse: multimodal fusion strategies on one contract, with training and benchmarks.

The public names load on first use (PEP 562), so ``import mmfuse`` and the command
line's ``--help`` do not pay for torch, and data loaders, Lightning, matplotlib and Ray
load only where they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmfuse.errors import CheckpointError, ConfigError, DataError, FusionError, MmfuseError

__version__ = "0.1.0"

_LAZY = {
    "Fusion": "mmfuse.fusions",
    "FusionIntermediates": "mmfuse.fusions",
    "create_fusion": "mmfuse.fusions",
    "list_fusions": "mmfuse.fusions",
    "register_fusion": "mmfuse.fusions",
    "MultimodalModel": "mmfuse.models",
    "build_model": "mmfuse.models",
    "build_unimodal_model": "mmfuse.models",
    "load_dataset": "mmfuse.data",
    "list_datasets": "mmfuse.data",
    "from_table": "mmfuse.data",
    "load_run": "mmfuse.runs",
    "save_run": "mmfuse.runs",
    "Run": "mmfuse.runs",
}


#: subpackages reachable as attributes (``mmfuse.fusions``), imported on first use
_SUBMODULES = ("bench", "data", "encoders", "experiment", "functional", "fusions", "io", "layers", "models",
               "runs", "training")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"mmfuse.{name}")
    else:
        raise AttributeError(f"module 'mmfuse' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Fusion",
    "FusionError",
    "FusionIntermediates",
    "MmfuseError",
    "MultimodalModel",
    "Run",
    "__version__",
    "build_model",
    "build_unimodal_model",
    "create_fusion",
    "from_table",
    "list_datasets",
    "load_dataset",
    "load_run",
    "list_fusions",
    "register_fusion",
    "save_run",
]
