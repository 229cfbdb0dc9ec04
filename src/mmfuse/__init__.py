"""mmfuse: multimodal fusion strategies on one contract, with training and benchmarks."""

from mmfuse.errors import CheckpointError, ConfigError, DataError, FusionError, MmfuseError
from mmfuse.fusions import (
    Fusion,
    FusionIntermediates,
    create_fusion,
    list_fusions,
    register_fusion,
)
from mmfuse.models import MultimodalModel, build_model, build_unimodal_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MmfuseError",
    "Fusion",
    "FusionError",
    "FusionIntermediates",
    "MultimodalModel",
    "__version__",
    "build_model",
    "build_unimodal_model",
    "create_fusion",
    "list_fusions",
    "register_fusion",
]
