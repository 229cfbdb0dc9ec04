"""The Lightning side of balanced training (:mod:`mmfuse.training.balance`): one callback.

Shape legend: none (no tensors built here). Kept apart so that the balance methods'
registry, which the training settings read, imports no Lightning.
"""

from __future__ import annotations

import lightning as L
import torch

from mmfuse.data._base import DatasetSplits
from mmfuse.training.balance import Balancer
from mmfuse.training.config import TrainConfigError

__all__ = ["BalanceCallback"]


class BalanceCallback(L.Callback):
    """Checks the run suits the method; re-estimates G-Blending's weights after each
    ``balance.every``-th epoch (before the checkpoint of that epoch is written)."""

    def __init__(self, balancer: Balancer, splits: DatasetSplits, every: int, seed: int) -> None:
        self.balancer = balancer
        self.val = splits.val
        self.every = every
        train = splits.train
        if balancer.impl.needs_validation:
            g = torch.Generator().manual_seed(seed)
            n = min(len(train), max(len(splits.val), 1))
            self.train_subset = train.subset(torch.randperm(len(train), generator=g)[:n].sort().values)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.balancer.impl.single_process and trainer.world_size > 1:
            raise TrainConfigError(
                f"balance={self.balancer.method!r}: expected a single process, got world size "
                f"{trainer.world_size} (per-process gradient statistics would desynchronise the weights)"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.balancer.impl.needs_validation or (trainer.current_epoch + 1) % self.every:
            return
        model = pl_module.model  # type: ignore[attr-defined]
        self.balancer.gblend_update(
            self.balancer.output_losses(model, self.train_subset), self.balancer.output_losses(model, self.val)
        )

