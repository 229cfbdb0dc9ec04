"""mmfuse: multimodal fusion strategies on one contract, with training and benchmarks."""

from mmfuse.fusions import (
    Fusion,
    FusionError,
    FusionIntermediates,
    create_fusion,
    list_fusions,
    register_fusion,
)

__version__ = "0.1.0"

__all__ = [
    "Fusion",
    "FusionError",
    "FusionIntermediates",
    "__version__",
    "create_fusion",
    "list_fusions",
    "register_fusion",
]
