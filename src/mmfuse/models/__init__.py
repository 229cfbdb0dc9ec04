"""Models: encoders + fusion + head (:class:`MultimodalModel`), unimodal baselines, and
builders that assemble them for a dataset from names."""

from mmfuse.models.builder import build_model, build_model_from_config, build_unimodal_model
from mmfuse.models.multimodal import MultimodalModel, UnimodalModel

__all__ = [
    "MultimodalModel",
    "UnimodalModel",
    "build_model",
    "build_model_from_config",
    "build_unimodal_model",
]
