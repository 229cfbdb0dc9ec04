"""Use a trained model: its bundle (weights, config, fitted preprocessing) and predictions on new rows.

:func:`load_run` loads a bundle (or a bench folder's chosen model) as a :class:`Run`
with ``predict``, ``predict_proba``, ``embed``, ``evaluate``, ``explain`` and
``predict_file``; :func:`write_bundle` is what ``mmfuse train`` and the bench call.
"""

from mmfuse.runs.bundle import BUNDLE_FORMAT, Bundle, is_bundle, read_bundle, save_run, write_bundle
from mmfuse.runs.predictor import PredictSummary, Run, load_run, resolve_run

__all__ = ["BUNDLE_FORMAT", "Bundle", "PredictSummary", "Run", "is_bundle", "load_run", "read_bundle",
           "resolve_run", "save_run", "write_bundle"]
