"""What a fit prints: quiet by default, and a progress bar that counts epochs from 1.

Shape legend: none.

:func:`quiet` silences Lightning's advice that does not apply to mmfuse's fits and its
informational lines (``verbose=True`` lets them through); :func:`progress_bar` is
Lightning's own bar, with the epoch counted from 1 out of ``max_epochs``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L

__all__ = ["progress_bar", "quiet"]


# Lightning advice that does not apply to in-memory tensor datasets and short fits
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r".*GPU available but not used.*",
    r".*`max_epochs` was not set.*",
    r".*The '.*_dataloader' does not have many workers.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*You're resuming from a checkpoint that ended before the epoch ended.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
# not advice at all here: a single-process fit validates in-process (FusionModule._validate)
_IN_PROCESS_VALIDATION = r".*You defined a `validation_step` but have no `val_dataloader`.*"
# where Lightning logs its accelerator lines, tips and stop reasons (rank_zero_info)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                      "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Unless ``verbose``: silence Lightning's advice that does not apply here and its
    informational lines (accelerators, tips, why the fit stopped). With ``verbose``:
    let its informational lines through even where a caller had silenced them. Every
    filter and level is restored afterwards."""
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_IN_PROCESS_VALIDATION)
        if not verbose:
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def progress_bar() -> L.Callback:
    """Lightning's progress bar, counting epochs from 1 out of ``max_epochs``
    (Lightning's own shows ``Epoch 1/1`` during the second of two epochs), without
    the logger's version number among the values. Its steps are chunks of minibatches
    (see :meth:`FusionModule.training_step`)."""

    def values(trainer: L.Trainer, pl_module: L.LightningModule, base: Any) -> dict[str, Any]:
        out = dict(base(trainer, pl_module))
        out.pop("v_num", None)
        return out

    try:
        import rich  # noqa: F401
    except ImportError:
        from lightning.pytorch.callbacks import TQDMProgressBar

        class EpochBar(TQDMProgressBar):
            def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
                super().on_train_epoch_start(trainer, *args)
                self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

            def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
                return values(trainer, pl_module, super().get_metrics)

        return EpochBar()
    from lightning.pytorch.callbacks import RichProgressBar

    class RichEpochBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"
            return f"{text:{len(self.validation_description)}}"

        def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
            return values(trainer, pl_module, super().get_metrics)

    return RichEpochBar()
