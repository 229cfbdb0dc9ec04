"""Modality attribution, where the bench and older code look for it.

The code lives in :mod:`mmfuse.training.attribution`: it measures a trained model (the
metric with some modalities masked), so the measuring layer (:mod:`mmfuse.experiment`)
imports it from below instead of from the bench above it. This module re-exports it.
"""

from __future__ import annotations

from mmfuse.training import attribution as _attribution
from mmfuse.training.attribution import *  # noqa: F403

__all__ = list(_attribution.__all__)
