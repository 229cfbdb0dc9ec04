"""Training, evaluation and checkpoints.

``fit`` (and the Lightning module behind it) is imported on first use, so that
``from mmfuse.training import load_checkpoint, evaluate`` does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmfuse.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mmfuse.training.config import BalanceOptions, FitResult, TrainConfig, TrainConfigError
from mmfuse.training.metrics import (
    HIGHER_IS_BETTER,
    evaluate,
    main_metric,
    metric_names,
    task_metrics,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "BalanceOptions",
    "CheckpointError",
    "FitResult",
    "FusionModule",
    "TrainConfig",
    "TrainConfigError",
    "evaluate",
    "fit",
    "load_checkpoint",
    "main_metric",
    "metric_names",
    "save_checkpoint",
    "task_metrics",
]

_LAZY = {"fit": "mmfuse.training.engine", "FusionModule": "mmfuse.training.module"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmfuse.training' has no attribute {name!r}")
