"""The training engine on PyTorch Lightning: :func:`fit`.

Shape legend: ``b`` batch, ``k`` classes. Masks are bool, True means keep.

What Lightning brings: devices, strategies (DDP), precision and multi-node runs,
passed through from :class:`~mmfuse.training.TrainConfig`. What mmfuse adds:

- checkpoints that are never pickles: Lightning's checkpoint dict (weights,
  optimizer state, loop counters) plus this module's early-stopping state, best
  weights and RNG states are written by :class:`SafetensorsCheckpointIO` as one
  safetensors file with a JSON tree in its header, atomically, after every epoch;
  ``fit(..., resume=True)`` continues from it and ends with the same weights as an
  uninterrupted run;
- early stopping on the validation loss, keeping the best weights in memory, so a
  fit without ``out_dir`` writes nothing to disk;
- low per-fit overhead when ``progress=False`` (no logger, no model summary, no
  sanity check, Lightning's start-up messages silenced).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.plugins import CheckpointIO
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mmfuse.data._base import DatasetSplits
from mmfuse.io import atomic_write
from mmfuse.training.balance import balance_callbacks, make_balancer
from mmfuse.training.checkpoint import load_tree, save_checkpoint, save_tree
from mmfuse.training.config import FitResult, TrainConfig, TrainConfigError
from mmfuse.training.metrics import BatchView, collate_batch, evaluate

__all__ = ["FusionModule", "ResumeState", "SafetensorsCheckpointIO", "fit"]

LAST = "last.safetensors"
MODEL = "model.safetensors"


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint dict to and from one safetensors file (no pickle), atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_tree(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_tree(path)

    def remove_checkpoint(self, path: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class FusionModule(L.LightningModule):
    """A model, its loss (cross-entropy on its logits), AdamW, and modality dropout.

    Args:
        model: any ``model(inputs, masks) -> (b, k)`` (decision-level models return
            log-probabilities, for which cross-entropy is the same NLL).
        cfg: the training settings.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.dropout_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        if cfg.modality_dropout > 0:
            from mmfuse.data.transforms import ModalityDropout

            self.dropout_transform = ModalityDropout(cfg.modality_dropout)
        self.balancer = make_balancer(model, cfg)  # cfg.balance: None or mmfuse.training.balance

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        return self.model(inputs, masks)

    # Losses are summed here and logged once per epoch: one self.log per step costs
    # more than a small model's whole step.
    def on_train_epoch_start(self) -> None:
        self._train_sum = torch.zeros((), device=self.device)
        self._train_n = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.dropout_transform is not None:
            batch = self.dropout_transform(batch)
        if self.balancer is not None:
            loss = self.balancer.training_loss(self.model, batch)
        else:
            logits = self.model(batch["inputs"], batch["masks"])
            loss = F.cross_entropy(logits.float(), batch["label"])
        b = batch["label"].shape[0]
        self._train_sum = self._train_sum + loss.detach() * b
        self._train_n += b
        return loss

    def on_after_backward(self) -> None:
        if self.balancer is not None:
            self.balancer.after_backward(self.model)

    def on_train_epoch_end(self) -> None:
        if self._train_n:
            self.log("train_loss", self._train_sum / self._train_n, prog_bar=True, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._val_loss = torch.zeros((), device=self.device)
        self._val_correct = torch.zeros((), device=self.device)
        self._val_n = 0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["inputs"], batch["masks"]).float()
        self._val_loss += F.cross_entropy(logits, batch["label"], reduction="sum")
        self._val_correct += (logits.argmax(dim=-1) == batch["label"]).sum()
        self._val_n += batch["label"].shape[0]

    def on_validation_epoch_end(self) -> None:
        if self._val_n:
            self.log("val_loss", self._val_loss / self._val_n, prog_bar=True, sync_dist=True)
            self.log("val_accuracy", self._val_correct / self._val_n, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def _rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(L.Callback):
    """Early stopping on ``val_loss``, best weights, and the end-of-epoch checkpoint.

    After each epoch's validation: records the epoch, keeps a copy of the weights
    when the validation loss improved, stops after ``patience`` epochs without
    improvement, then (with ``out_dir``) writes ``out_dir/last.safetensors`` through
    Lightning. Its own state (best score and weights, patience counter, history,
    RNG states) travels inside that checkpoint, so a resumed fit continues exactly.
    """

    def __init__(self, patience: int, out_dir: Path | None) -> None:
        self.patience = patience
        self.out_dir = out_dir
        self.best_score = math.inf
        self.best_epoch = -1
        self.wait = 0
        self.stopped = False
        self.best_weights: dict[str, Tensor] | None = None
        self.history: list[dict[str, float]] = []

    @property
    def state_key(self) -> str:
        return "mmfuse.ResumeState"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped:  # resumed from a run that had already stopped early
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        epoch = trainer.current_epoch
        row = {"epoch": float(epoch)}
        for key in ("train_loss", "val_loss", "val_accuracy"):
            if key in metrics:
                row[key] = float(metrics[key])
        self.history.append(row)
        model = pl_module.model  # type: ignore[attr-defined]
        score = row.get("val_loss")
        if score is None:  # no validation split: the last weights are the best we know
            self.best_weights = _copy_state(model)
        elif score < self.best_score:
            self.best_score, self.best_epoch, self.wait = score, epoch, 0
            self.best_weights = _copy_state(model)
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self.stopped = True
                trainer.should_stop = True
        if self.out_dir is not None:
            trainer.save_checkpoint(self.out_dir / LAST, weights_only=False)  # full state, for resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped": self.stopped,
            "best_weights": self.best_weights,
            "history": self.history,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        self.wait = int(state_dict["wait"])
        self.stopped = bool(state_dict["stopped"])
        self.best_weights = state_dict["best_weights"]
        self.history = list(state_dict["history"])
        _set_rng_state(state_dict["rng"])


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Silence Lightning's advice that does not apply here, and (without progress) its
    start-up messages; restore every filter and level afterwards."""
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        levels = {}
        if not progress:
            for name in _LIGHTNING_LOGGERS:
                lg = logging.getLogger(name)
                levels[name] = lg.level
                lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _deterministic_scope() -> Iterator[None]:
    """Lightning's ``deterministic=True`` flips a process-wide torch switch: undo it after."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, cudnn_bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def _loader(dataset: Any, batch_size: int, *, shuffle: bool, num_workers: int) -> DataLoader:
    return DataLoader(
        BatchView(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def fit(
    model: nn.Module,
    splits: DatasetSplits,
    cfg: TrainConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train ``model`` on ``splits.train`` with early stopping on ``splits.val``.

    Args:
        model: e.g. from :func:`mmfuse.models.build_model`; trained in place.
        splits: the dataset's train / val / test splits (test is not touched).
        cfg: training settings (default :class:`TrainConfig()`).
        out_dir: where to write ``last.safetensors`` (resumable state, every epoch),
            ``model.safetensors`` (best weights + config), ``fit.json`` and Lightning's
            CSV logs. ``None``: nothing is written.
        resume: continue from ``out_dir/last.safetensors`` if it exists (start fresh
            otherwise). Give the same ``cfg`` (``epochs`` may grow).
        callbacks: extra Lightning callbacks.

    Returns:
        A :class:`FitResult` whose model holds the best validation weights, in eval mode.
    """
    cfg = TrainConfig() if cfg is None else cfg
    if resume and out_dir is None:
        raise TrainConfigError("resume: expected an out_dir holding the interrupted run, got None")
    if len(splits.train) == 0:
        raise TrainConfigError(f"{splits.name}: the training split is empty")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / LAST if (resume and out is not None and (out / LAST).is_file()) else None

    start = time.perf_counter()
    with _quiet(cfg.progress), _deterministic_scope():
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        module = FusionModule(model, cfg)
        state = ResumeState(cfg.patience, out)
        has_val = len(splits.val) > 0
        logger: Any = False
        if out is not None:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(save_dir=str(out), name="logs")  # logs/version_<i>: one per (resumed) fit
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            precision=cfg.precision,  # type: ignore[arg-type]
            num_nodes=cfg.num_nodes,
            max_epochs=cfg.epochs,
            max_time=None if cfg.max_time is None else timedelta(seconds=cfg.max_time),
            deterministic=cfg.deterministic,
            logger=logger,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            default_root_dir=str(out) if out is not None else None,
            callbacks=[*balance_callbacks(module.balancer, splits, cfg), state, *callbacks],
            plugins=[SafetensorsCheckpointIO()],
        )
        train_loader = _loader(splits.train, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)
        val_loader = (
            _loader(splits.val, max(cfg.batch_size, 512), shuffle=False, num_workers=cfg.num_workers)
            if has_val
            else None
        )
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    train_time = time.perf_counter() - start

    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    val_metrics = evaluate(model, splits.val) if has_val else {}
    checkpoint: Path | None = None
    if out is not None and trainer.is_global_zero:
        if getattr(model, "config", None) is not None:
            checkpoint = save_checkpoint(model, out / MODEL)
        summary = {
            "dataset": splits.name,
            "train_config": cfg.to_dict(),
            "model_config": getattr(model, "config", None),
            "epochs_run": trainer.current_epoch,
            "world_size": trainer.world_size,
            "best_epoch": state.best_epoch,
            "val_metrics": val_metrics,
            "history": state.history,
        }
        atomic_write(out / "fit.json", json.dumps(summary, indent=2, default=str))
    return FitResult(
        model=model,
        train_time_s=train_time,
        epochs_run=int(trainer.current_epoch),
        val_metrics=val_metrics,
        checkpoint=checkpoint,
        best_epoch=state.best_epoch,
        history=list(state.history),
        is_global_zero=bool(trainer.is_global_zero),
    )
