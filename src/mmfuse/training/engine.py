"""The training engine on PyTorch Lightning: :func:`fit`.

Shape legend: ``b`` batch, ``k`` classes. Masks are bool, True means keep.

What Lightning brings: devices, strategies (DDP), precision and multi-node runs,
passed through from :class:`~mmfuse.training.TrainConfig`. What mmfuse adds:

- checkpoints that are never pickles: Lightning's checkpoint dict (weights,
  optimizer state, loop counters) plus the early-stopping state, best weights and
  RNG states (:class:`~mmfuse.training.resume.ResumeState`) are written by
  :class:`~mmfuse.training.resume.SafetensorsCheckpointIO` as one
  safetensors file with a JSON tree in its header, atomically, after every epoch;
  ``fit(..., resume=True)`` continues from it and ends with the same weights as an
  uninterrupted run;
- early stopping on the validation loss, keeping the best weights in memory, so a
  fit without ``out_dir`` writes nothing to disk;
- the loss of the dataset's task: cross-entropy (``binary``, ``multiclass``),
  binary cross-entropy on logits (``multilabel``), and for ``regression`` the mean
  squared error of standardised targets, ``mean(((y_hat - y) / s)^2)`` with ``s`` the
  training targets' standard deviation per column (so every target column weighs the
  same whatever its units; the model predicts in the target's units, see
  :class:`mmfuse.models.builder.RegressionHead`); a fusion with its own training
  objective (a ``training_loss`` method, e.g. ``trusted``'s evidential loss) is trained
  on that instead, from the intermediates of its forward, while validation and early
  stopping still read the task loss of the model's output;
- a run whose training or validation loss becomes NaN or infinite stops with a
  :class:`~mmfuse.errors.TrainingError` (no ``model.safetensors``, no ``fit.json``);
- the torch thread count chosen for the model's size
  (:func:`~mmfuse.training.threads.auto_threads`), set for the fit and restored afterwards;
- quiet by default: Lightning's accelerator lines, tips and advice are silenced
  (``verbose=True`` restores them) and the progress bar counts epochs from 1;
- low per-fit overhead: a single-process fit hands Lightning one chunk of up to
  64 minibatches per step and steps through them itself (manual optimization, the
  same updates as one minibatch per step), epoch values reach ``self.log`` only when
  a logger, the progress bar or other processes read them, and there is no logger
  without ``out_dir``, no model summary, no sanity check; in one process at full
  precision, with no step hooks implemented, backward and the optimizer step are
  called directly (:mod:`mmfuse.training.module`), and the installed entry points
  Lightning searches for external callbacks are read once per process
  (``benchmarks/results/fit_overhead_cpu2.md``, ``fit_overhead_cpu2_after.md``).

Where each part lives: :mod:`~mmfuse.training.module` (the LightningModule, its loss
and steps), :mod:`~mmfuse.training.resume` (early stopping, the resumable checkpoint),
:mod:`~mmfuse.training.loaders` (the DataLoaders, chunks of minibatches),
:mod:`~mmfuse.training.console` (quiet output, the progress bar),
:mod:`~mmfuse.training.launch` (devices and launcher checked before Lightning starts),
:mod:`~mmfuse.training.threads` (torch threads); this module builds the Trainer and runs
the fit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import IterableDataset

from mmfuse.data._base import DatasetSplits, classification_task
from mmfuse.io import atomic_write
from mmfuse.training.balance import balance_callbacks
from mmfuse.training.calibration import calibrate_model, check_calibrate
from mmfuse.training.checkpoint import load_tree, save_checkpoint
from mmfuse.training.config import FitResult, TrainConfig, TrainConfigError
from mmfuse.training.console import progress_bar, quiet
from mmfuse.training.launch import check_devices, check_launch
from mmfuse.training.loaders import StreamEpochs, chunk_steps, split_loader, stream_loader
from mmfuse.training.metrics import evaluate
from mmfuse.training.module import FusionModule
from mmfuse.training.resume import LAST, ResumeState, SafetensorsCheckpointIO, check_training_state
from mmfuse.training.threads import auto_threads, available_cpus, torch_threads

__all__ = ["fit"]

MODEL = "model.safetensors"


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


def _check_streamed(splits: DatasetSplits, cfg: TrainConfig) -> None:
    """What a streamed training split (an ``IterableDataset`` of collated batches, e.g.
    :class:`mmfuse.data.ParquetStream`) supports: classification, without balancing."""
    task = getattr(splits.train, "task", None)
    if task not in ("binary", "multiclass"):
        raise TrainConfigError(f"{splits.name}: a streamed training split supports binary and multiclass tasks, "
                               f"got {task!r} (regression needs the target's statistics up front)")
    if cfg.balance.method is not None:
        raise TrainConfigError(f"balance={cfg.balance.method!r}: not with a streamed training split (its methods re-read "
                               "the training split)")


@functools.cache
def _entry_points(group: str) -> tuple[Any, ...]:
    """The installed entry points of ``group``, read once per process (reading them
    scans the metadata of every installed distribution: milliseconds per Trainer)."""
    from importlib.metadata import entry_points

    return tuple(entry_points(group=group))


def _external_callbacks(group: str) -> list[Any]:
    """Lightning's ``_load_external_callbacks`` over the entry points read once per
    process: each factory is still called for every Trainer (fresh callbacks)."""
    callbacks: list[Any] = []
    for factory in _entry_points(group):
        made = factory.load()()
        callbacks.extend(made if isinstance(made, list) else [made])
    return callbacks


@contextlib.contextmanager
def _entry_points_read_once() -> Iterator[None]:
    """While a Trainer is built: its search for externally registered callbacks reads
    the entry points once per process instead of once per Trainer."""
    try:
        from lightning.pytorch.trainer.connectors import callback_connector
    except ImportError:  # pragma: no cover - another Lightning layout: leave it alone
        yield
        return
    original = getattr(callback_connector, "_load_external_callbacks", None)
    if original is None:  # pragma: no cover
        yield
        return
    callback_connector._load_external_callbacks = _external_callbacks
    try:
        yield
    finally:
        callback_connector._load_external_callbacks = original


def _trainer(cfg: TrainConfig, out: Path | None, logger: Any, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning Trainer of one fit."""
    check_launch(cfg)
    return L.Trainer(
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
        enable_checkpointing=True,  # ResumeState is the checkpoint callback
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=str(out) if out is not None else None,
        callbacks=callbacks,
        plugins=[SafetensorsCheckpointIO()],
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
        splits: the dataset's train / val / test splits (test is not touched); the
            loss follows ``splits.task`` (see the module docstring).
        cfg: training settings (default :class:`TrainConfig()`).
        out_dir: where to write ``last.safetensors`` (resumable state, every epoch),
            ``model.safetensors`` (best weights + config), ``fit.json`` and Lightning's
            CSV logs. ``None``: nothing is written.
        resume: continue from ``out_dir/last.safetensors`` if it exists (start fresh
            otherwise). Give the same ``cfg`` (``epochs`` may grow).
        callbacks: extra Lightning callbacks.

    Returns:
        A :class:`FitResult` whose model holds the best validation weights, in eval mode.

    Raises:
        TrainConfigError: bad settings, or a device this machine does not have.
        TrainingError: the loss became NaN or infinite (nothing is saved as a result;
            ``last.safetensors`` keeps the last finite epoch).
        CheckpointError: ``resume`` from a damaged or mismatched ``last.safetensors``.
    """
    cfg = TrainConfig() if cfg is None else cfg
    if resume and out_dir is None:
        raise TrainConfigError("resume: expected an out_dir holding the interrupted run, got None")
    streamed = isinstance(splits.train, IterableDataset)
    if streamed:
        _check_streamed(splits, cfg)
    elif len(splits.train) == 0:
        raise TrainConfigError(f"{splits.name}: the training split is empty")
    check_devices(cfg)
    task = getattr(splits, "task", None) or classification_task(splits.num_classes)
    check_calibrate(cfg.calibrate, task=task, has_val=len(splits.val) > 0)
    target_scale = None
    if task == "regression":
        from mmfuse.models.builder import target_stats

        target_scale = target_stats(splits.train.labels)[1]
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / LAST if (resume and out is not None and (out / LAST).is_file()) else None
    threads = cfg.threads if cfg.threads != "auto" else auto_threads(model, cfg.batch_size)
    num_workers = cfg.num_workers
    if cfg.threads == "auto" and num_workers > 0:
        num_workers = min(num_workers, max(1, available_cpus() - threads))  # no oversubscription

    start = time.perf_counter()
    with quiet(cfg.verbose), _deterministic_scope(), torch_threads(threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        module = FusionModule(model, cfg, task, target_scale)
        if ckpt_path is not None:
            check_training_state(load_tree(ckpt_path), ckpt_path, module)
        state = ResumeState(cfg.patience, out, cfg.lr)
        has_val = len(splits.val) > 0
        logger: Any = False
        if out is not None:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(save_dir=str(out), name="logs")  # logs/version_<i>: one per (resumed) fit
        extra = [progress_bar()] if cfg.progress else []
        if streamed:
            extra.append(StreamEpochs(splits.train))
        with _entry_points_read_once():
            trainer = _trainer(cfg, out, logger, [*balance_callbacks(module.balancer, splits, cfg), state, *extra,
                                                  *callbacks])
        module.log_to_lightning = logger is not False or cfg.progress or trainer.world_size > 1
        # one process: chunks of minibatches per Lightning step (see FusionModule.training_step)
        if streamed:  # batches come collated from the stream, a bounded number in memory at a time
            train_loader = stream_loader(splits.train, num_workers=num_workers)
        else:
            chunk = chunk_steps(splits.train, cfg.batch_size) if trainer.world_size == 1 else 1
            train_loader = split_loader(splits.train, cfg.batch_size * chunk, shuffle=True, num_workers=num_workers)
        val_loader = None
        if has_val and trainer.world_size == 1:
            module.val_data = splits.val  # validated in-process at each epoch's end
        elif has_val:
            val_loader = split_loader(splits.val, max(cfg.batch_size, 512), shuffle=False, num_workers=num_workers)
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
        train_time = time.perf_counter() - start

        if state.best_weights is not None:
            model.load_state_dict(state.best_weights)
        model.eval()
        if cfg.calibrate == "temperature":  # post-hoc, on the best weights (mmfuse.training.calibration)
            calibrate_model(model, splits.val)
        val_metrics = evaluate(model, splits.val) if has_val else {}
    checkpoint: Path | None = None
    if out is not None and trainer.is_global_zero:
        if getattr(model, "config", None) is not None:
            checkpoint = save_checkpoint(model, out / MODEL)
        summary = {
            "dataset": splits.name,
            "task": task,
            "train_config": cfg.to_json(),
            "model_config": getattr(model, "config", None),
            "epochs_run": trainer.current_epoch,
            "world_size": trainer.world_size,
            "threads": threads,
            "num_workers": num_workers,
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
        threads=threads,
        num_workers=num_workers,
    )
