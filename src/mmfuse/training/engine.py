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
- the torch thread count chosen for the model's size (:func:`auto_threads`), set for
  the fit and restored afterwards;
- quiet by default: Lightning's accelerator lines, tips and advice are silenced
  (``verbose=True`` restores them) and the progress bar counts epochs from 1;
- low per-fit overhead: a single-process fit hands Lightning one chunk of up to
  64 minibatches per step and steps through them itself (manual optimization, the
  same updates as one minibatch per step), epoch values reach ``self.log`` only when
  a logger, the progress bar or other processes read them, and there is no logger
  without ``out_dir``, no model summary, no sanity check; in one process at full
  precision, with no step hooks implemented, backward and the optimizer step are
  called directly (:func:`_plain_steps`), and the installed entry points Lightning
  searches for external callbacks are read once per process
  (``benchmarks/results/fit_overhead_cpu2.md``, ``fit_overhead_cpu2_after.md``).
"""

from __future__ import annotations

import contextlib
import functools
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
from lightning.pytorch.callbacks import Checkpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from mmfuse.data._base import DatasetSplits, classification_task
from mmfuse.errors import CheckpointError, TrainingError
from mmfuse.io import atomic_write
from mmfuse.training.balance import balance_callbacks, make_balancer
from mmfuse.training.calibration import calibrate_model, check_calibrate
from mmfuse.training.checkpoint import load_tree, save_checkpoint, save_tree
from mmfuse.training.config import FitResult, TrainConfig, TrainConfigError
from mmfuse.training.metrics import BatchView, collate_batch, evaluate, iter_batches, to_device
from mmfuse.training.threads import (  # noqa: F401  (public here too)
    THREADS_MIN_WORK,
    auto_threads,
    available_cpus,
    idle_cpus,
)
from mmfuse.training.threads import torch_threads as _torch_threads

__all__ = ["FusionModule", "ResumeState", "SafetensorsCheckpointIO", "auto_threads", "check_devices", "fit"]

LAST = "last.safetensors"
MODEL = "model.safetensors"


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint dict to and from one safetensors file (no pickle), atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_tree(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        tree = load_tree(path)
        _check_training_state(tree, path)
        return tree

    def remove_checkpoint(self, path: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class FusionModule(L.LightningModule):
    """A model, the loss of its task, AdamW, and modality dropout.

    Args:
        model: any ``model(inputs, masks) -> (b, k)`` (decision-level models return
            log-probabilities, for which cross-entropy is the same NLL).
        cfg: the training settings.
        task: the dataset's task (see :data:`mmfuse.data.TASKS`); picks the loss.
        target_scale: ``(k,)`` per-column scale ``s`` of regression targets (the
            training split's standard deviation); ``None``: 1.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, task: str = "multiclass",
                 target_scale: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.task = task
        self.classify = task in ("binary", "multiclass")
        self.register_buffer("target_scale", target_scale, persistent=False)
        self.automatic_optimization = False  # see training_step
        #: this epoch's train_loss / val_loss / val_accuracy (what ResumeState reads)
        self.epoch_values: dict[str, Tensor] = {}
        #: also hand them to Lightning's self.log (for a logger, a progress bar, or to
        #: average them across processes); fit turns it off when nothing would read them,
        #: as self.log costs more than a small model's validation pass
        self.log_to_lightning = True
        #: the validation split when fit validates in-process (see _validate); None when
        #: Lightning's evaluation loop does it (several processes) or there is none
        self.val_data: Any = None
        # torch.compile'd view of the same model for the training step; kept out of
        # the module tree so that state dicts and checkpoints do not see it
        step_model = torch.compile(model) if cfg.compile else model
        object.__setattr__(self, "_step_model", step_model)
        self.dropout_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        if cfg.modality_dropout > 0:
            from mmfuse.data.transforms import ModalityDropout

            self.dropout_transform = ModalityDropout(cfg.modality_dropout)
        self.balancer = make_balancer(model, cfg)  # cfg.balance: None or mmfuse.training.balance
        #: the fusion's own training objective, ``training_loss(intermediates, target, *, epoch)``
        #: (see Fusion), trained on in place of the task loss; None: the task loss
        self.fusion_loss: Callable[..., Tensor] | None = getattr(getattr(model, "fusion", None), "training_loss", None)
        #: backward and optimizer steps without Lightning's wrappers (set at the start of
        #: training, see _plain_steps)
        self._plain_steps = False

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        return self.model(inputs, masks)

    def loss(self, out: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        """The task's loss of ``(b, k)`` outputs (see the module docstring)."""
        out = out.float()
        if self.classify:
            return F.cross_entropy(out, target, reduction=reduction)
        if self.task == "multilabel":
            per = F.binary_cross_entropy_with_logits(out, target.float(), reduction="none").mean(-1)
        else:
            err = out - target.float().reshape(out.shape)
            if self.target_scale is not None:
                err = err / self.target_scale
            per = err.pow(2).mean(-1)
        return per.sum() if reduction == "sum" else per.mean()

    # Losses are summed here and logged once per epoch: one self.log per step costs
    # more than a small model's whole step.
    def on_train_epoch_start(self) -> None:
        self.epoch_values = {}
        self._train_sum = torch.zeros((), device=self.device)
        self._train_n = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Optimizer steps on ``batch``, one per ``cfg.batch_size`` rows.

        ``fit`` hands a single-process run one chunk of up to :data:`CHUNK_STEPS`
        minibatches per Lightning step (the rows of consecutive minibatches of the
        same shuffled order), so that Lightning's per-step bookkeeping is paid once
        per chunk rather than once per minibatch; the minibatches, their order and
        the updates are those of one Lightning step per minibatch. Multi-process
        runs get one minibatch per step (DDP synchronises once per forward).
        """
        opt = self.optimizers()
        plain = self._plain_steps
        size = self.cfg.batch_size
        n = int(batch["label"].shape[0])
        for start in range(0, n, size):
            part = batch if n <= size else _rows(batch, start, start + size)
            if self.dropout_transform is not None:
                part = self.dropout_transform(part)
            if self.balancer is not None:
                loss = self.balancer.training_loss(self.model, part)
            elif self.fusion_loss is not None:
                _, info = self._step_model(part["inputs"], part["masks"], return_intermediates=True)
                loss = self.fusion_loss(info, part["label"], epoch=self.current_epoch)
            else:
                loss = self.loss(self._step_model(part["inputs"], part["masks"]), part["label"])
            opt.zero_grad()
            if plain:  # what Lightning's wrappers reduce to here (see _plain_steps)
                loss.backward()
                self.on_after_backward()
                opt._on_before_step()  # Lightning's step count (global_step)
                opt.optimizer.step()
                opt._on_after_step()
            else:
                self.manual_backward(loss)
                opt.step()
            b = part["label"].shape[0]
            self._train_sum += loss.detach() * b
            self._train_n += b

    def on_train_start(self) -> None:
        self._plain_steps = _plain_steps(self.trainer, self)

    def _record(self, name: str, value: Tensor) -> None:
        self.epoch_values[name] = value
        if self.log_to_lightning:
            self.log(name, value, prog_bar=True, sync_dist=True)

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's ``train_loss``, ``val_loss`` (and ``val_accuracy``), averaged
        over processes when Lightning logs them."""
        source = self.trainer.callback_metrics if self.log_to_lightning else self.epoch_values
        return {k: float(source[k]) for k in ("train_loss", "val_loss", "val_accuracy") if k in source}

    def on_after_backward(self) -> None:
        if self.balancer is not None:
            self.balancer.after_backward(self.model)

    def on_train_epoch_end(self) -> None:
        if self._train_n:
            self._record("train_loss", self._train_sum / self._train_n)
        if self.val_data is not None:
            self._validate()

    def _validate(self) -> None:
        """The validation pass of a single-process fit, run here rather than through
        Lightning's evaluation loop (whose per-epoch bookkeeping costs more than a
        small model's validation): the same steps, on the whole split, in order."""
        was_training = self.model.training
        self.model.eval()
        self.on_validation_epoch_start()
        with torch.no_grad(), self.trainer.precision_plugin.val_step_context():
            for i, batch in enumerate(iter_batches(self.val_data, max(self.cfg.batch_size, 512))):
                self.validation_step(to_device(batch, self.device), i)
        self.model.train(was_training)
        self.on_validation_epoch_end()

    def on_validation_epoch_start(self) -> None:
        self._val_loss = torch.zeros((), device=self.device)
        self._val_correct = torch.zeros((), device=self.device)
        self._val_n = 0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch["inputs"], batch["masks"]).float()
        self._val_loss += self.loss(out, batch["label"], reduction="sum")
        if self.classify:
            self._val_correct += (out.argmax(dim=-1) == batch["label"]).sum()
        self._val_n += batch["label"].shape[0]

    def on_validation_epoch_end(self) -> None:
        if self._val_n:
            self._record("val_loss", self._val_loss / self._val_n)
            if self.classify:
                self._record("val_accuracy", self._val_correct / self._val_n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


# the hooks Lightning's backward and optimizer-step wrappers call (the module's own
# on_after_backward is called directly where they are skipped)
_STEP_CALLBACK_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_STEP_MODULE_HOOKS = ("on_before_backward", "backward", "on_before_optimizer_step", "configure_gradient_clipping")


def _plain_steps(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` and ``LightningOptimizer.step`` would do nothing here
    but ``loss.backward()``, ``optimizer.step()`` and hooks nobody implements: one process
    on one device (no DDP gradient sync), full precision (no gradient scaler, no
    autocast around the step), and no callback or module override of the step hooks.
    Then the step calls torch directly (their wrappers cost about 6 % of a small
    model's fit, ``benchmarks/results/fit_overhead_cpu2_after.md``); Lightning's step
    counter (``global_step``) still advances. Anything else keeps Lightning's path."""
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.profilers import PassThroughProfiler
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if trainer.world_size != 1 or type(trainer.strategy) is not SingleDeviceStrategy:
        return False
    if type(trainer.precision_plugin) is not Precision or type(trainer.profiler) is not PassThroughProfiler:
        return False
    for callback in trainer.callbacks:
        for hook in _STEP_CALLBACK_HOOKS:
            if getattr(type(callback), hook) is not getattr(L.Callback, hook):
                return False
    return all(getattr(type(module), hook) is getattr(L.LightningModule, hook) for hook in _STEP_MODULE_HOOKS)


#: minibatches per Lightning training step in a single-process fit (see
#: FusionModule.training_step): at most this many, and at most CHUNK_BYTES of inputs
CHUNK_STEPS = 64
CHUNK_BYTES = 64 * 2**20


def _chunk_steps(dataset: Any, batch_size: int) -> int:
    """Minibatches per chunk: :data:`CHUNK_STEPS`, fewer where a chunk's rows would
    hold more than :data:`CHUNK_BYTES` (large images or sequences), at least 1."""
    row = sum(x[0].numel() * x.element_size() for x in dataset.inputs.values()) if len(dataset) else 0
    return int(max(1, min(CHUNK_STEPS, CHUNK_BYTES // max(1, row * batch_size))))


def _rows(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of a collated batch (views, no copies)."""
    return {
        "inputs": {m: x[start:stop] for m, x in batch["inputs"].items()},
        "masks": {m: k[start:stop] for m, k in batch["masks"].items()},
        "label": batch["label"][start:stop],
    }


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


class ResumeState(Checkpoint):
    """Early stopping on ``val_loss``, best weights, and the end-of-epoch checkpoint.

    A Lightning :class:`~lightning.pytorch.callbacks.Checkpoint`, so that its
    end-of-epoch hook runs after the module has logged the epoch's training loss.
    After each epoch's validation: stops the run with a :class:`TrainingError` when a
    loss is NaN or infinite (before anything is written), records the epoch, keeps a copy of the weights
    when the validation loss improved, stops after ``patience`` epochs without
    improvement, then (with ``out_dir``) writes ``out_dir/last.safetensors`` through
    Lightning. Its own state (best score and weights, patience counter, history,
    RNG states) travels inside that checkpoint, so a resumed fit continues exactly.
    """

    def __init__(self, patience: int, out_dir: Path | None, lr: float | None = None) -> None:
        self.patience = patience
        self.lr = lr
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
        epoch = trainer.current_epoch
        row = {"epoch": float(epoch), **pl_module.epoch_metrics()}  # type: ignore[operator]
        for key in ("train_loss", "val_loss"):
            if key in row and not math.isfinite(row[key]):
                raise TrainingError(
                    f"epoch {epoch + 1}: {key.replace('_', ' ')} is {row[key]} (the run diverged); "
                    f"nothing was saved as a result: lower lr (got {self.lr!r}) or check the data"
                )
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
        try:
            best_score = float(state_dict["best_score"])
            best_epoch = int(state_dict["best_epoch"])
            wait = int(state_dict["wait"])
            stopped = bool(state_dict["stopped"])
            best_weights = state_dict["best_weights"]
            if best_weights is not None and not (
                isinstance(best_weights, dict) and all(isinstance(v, Tensor) for v in best_weights.values())
            ):
                raise TypeError(f"best_weights: expected a dict of tensors, got {type(best_weights).__name__}")
            history = list(state_dict["history"])
            _set_rng_state(state_dict["rng"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise CheckpointError(f"the early-stopping state {self.state_key!r} is malformed ({err!r})") from err
        self.best_score, self.best_epoch, self.wait, self.stopped = best_score, best_epoch, wait, stopped
        self.best_weights, self.history = best_weights, history


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
# not advice at all here: a single-process fit validates in-process (FusionModule._validate)
_IN_PROCESS_VALIDATION = r".*You defined a `validation_step` but have no `val_dataloader`.*"
# where Lightning logs its accelerator lines, tips and stop reasons (rank_zero_info)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                      "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
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


def _progress_bar() -> L.Callback:
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


def check_devices(cfg: TrainConfig) -> None:
    """Refuse (:class:`TrainConfigError`) an accelerator or device count this machine
    does not have, before Lightning starts."""
    acc = cfg.accelerator
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise TrainConfigError(
                f"accelerator: {acc!r} asked for, but torch {torch.__version__} sees no CUDA device "
                f"(use accelerator=cpu or auto)"
            )
        have, what = torch.cuda.device_count(), "CUDA devices"
    elif acc == "mps":
        if not torch.backends.mps.is_available():
            raise TrainConfigError("accelerator: 'mps' asked for, but torch sees no Apple MPS device "
                                   "(use accelerator=cpu or auto)")
        have, what = 1, "MPS devices"
    elif acc == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            raise TrainConfigError("accelerator: 'tpu' asked for, but torch_xla is not installed "
                                   "(use accelerator=cpu or auto)")
        return
    else:
        return  # cpu: any count of processes; auto: Lightning picks what exists
    d = cfg.devices
    wanted = len(d) if isinstance(d, (list, tuple)) else (int(d) if isinstance(d, int) or str(d).isdigit() else 0)
    if wanted > have:
        raise TrainConfigError(f"devices: {d!r} asked for, but this machine has {have} {what}")


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


class _StreamEpochs(L.Callback):
    """Tells a streamed training split the epoch, which seeds its shuffled order."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(self.stream, "set_epoch"):
            self.stream.set_epoch(trainer.current_epoch)


def _loader(dataset: Any, batch_size: int, *, shuffle: bool, num_workers: int) -> DataLoader:
    return DataLoader(
        BatchView(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=_one_thread if num_workers > 0 else None,
    )


def _one_thread(worker_id: int) -> None:
    """DataLoader workers index tensors: one torch thread each, so they and the
    training threads do not oversubscribe the CPUs."""
    torch.set_num_threads(1)


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


def _check_training_state(tree: Any, path: Any, module: nn.Module | None = None) -> None:
    """A training-state checkpoint has the parts Lightning and :class:`ResumeState`
    read, of the right types (and, given ``module``, weights of its keys and shapes);
    else :class:`CheckpointError` naming ``path``."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a resumable training state: {what}")

    if not isinstance(tree, dict):
        raise bad(f"expected a dict at the top, got {type(tree).__name__}")
    weights = tree.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise bad("'state_dict' must map names to tensors")
    for key, kind in (("epoch", int), ("global_step", int), ("loops", dict), ("optimizer_states", list),
                      ("callbacks", dict)):
        if key in tree and (isinstance(tree[key], bool) or not isinstance(tree[key], kind)):
            raise bad(f"{key!r} must be a {kind.__name__}, got {type(tree[key]).__name__}")
    for key in ("epoch", "global_step", "loops", "optimizer_states"):
        if key not in tree:
            raise bad(f"missing {key!r}")
    if not all(isinstance(o, dict) and isinstance(o.get("state"), dict) and isinstance(o.get("param_groups"), list)
               for o in tree["optimizer_states"]):
        raise bad("'optimizer_states' must be a list of {'state': dict, 'param_groups': list}")
    state = tree.get("callbacks", {}).get("mmfuse.ResumeState")
    if state is not None:
        need = {"best_score": (int, float), "best_epoch": int, "wait": int, "stopped": bool,
                "history": list, "rng": dict}
        if not isinstance(state, dict):
            raise bad("the early-stopping state must be a dict")
        for key, kind in need.items():
            if not isinstance(state.get(key), kind):
                raise bad(f"early-stopping state {key!r}: expected {kind}, got {state.get(key)!r}")
        bw = state.get("best_weights")
        if bw is not None and not (isinstance(bw, dict) and all(isinstance(v, Tensor) for v in bw.values())):
            raise bad("early-stopping state 'best_weights' must map names to tensors")
    if module is not None:
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in weights.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))[:3]
            extra = sorted(set(got) - set(expected))[:3]
            shapes = [k for k in expected if k in got and expected[k] != got[k]][:3]
            raise CheckpointError(
                f"{path}: its weights do not fit this model (missing {missing}, unexpected {extra}, "
                f"other shapes {[(k, got[k], expected[k]) for k in shapes]}): resume with the same model"
            )


#: environment variables a launcher (torchrun, SLURM, LSF, Lightning's own) sets on each node
_CLUSTER_ENV = ("MASTER_ADDR", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID",
                "TORCHELASTIC_RUN_ID", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def _check_launch(cfg: TrainConfig) -> None:
    """Settings Lightning would accept and then fail on, or wait on forever: refused with the reason."""
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if cfg.strategy not in strategies:
        raise TrainConfigError(f"strategy: expected one of {strategies}, got {cfg.strategy!r}")
    if cfg.num_nodes > 1 and not any(os.environ.get(k) for k in _CLUSTER_ENV):
        raise TrainConfigError(
            f"num_nodes={cfg.num_nodes}: this process was not started by a multi-node launcher (none of "
            f"{', '.join(_CLUSTER_ENV[:4])}, ... is set), so it would wait for the other nodes forever: start one "
            "process per node with torchrun or your scheduler (SLURM), or use num_nodes=1")


def _trainer(cfg: TrainConfig, out: Path | None, logger: Any, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning Trainer of one fit."""
    _check_launch(cfg)
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
    with _quiet(cfg.verbose), _deterministic_scope(), _torch_threads(threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        module = FusionModule(model, cfg, task, target_scale)
        if ckpt_path is not None:
            _check_training_state(load_tree(ckpt_path), ckpt_path, module)
        state = ResumeState(cfg.patience, out, cfg.lr)
        has_val = len(splits.val) > 0
        logger: Any = False
        if out is not None:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(save_dir=str(out), name="logs")  # logs/version_<i>: one per (resumed) fit
        extra = [_progress_bar()] if cfg.progress else []
        if streamed:
            extra.append(_StreamEpochs(splits.train))
        with _entry_points_read_once():
            trainer = _trainer(cfg, out, logger, [*balance_callbacks(module.balancer, splits, cfg), state, *extra,
                                                  *callbacks])
        module.log_to_lightning = logger is not False or cfg.progress or trainer.world_size > 1
        # one process: chunks of minibatches per Lightning step (see FusionModule.training_step)
        if streamed:  # batches come collated from the stream, a bounded number in memory at a time
            train_loader = DataLoader(splits.train, batch_size=None, num_workers=num_workers,
                                      worker_init_fn=_one_thread if num_workers > 0 else None)
        else:
            chunk = _chunk_steps(splits.train, cfg.batch_size) if trainer.world_size == 1 else 1
            train_loader = _loader(splits.train, cfg.batch_size * chunk, shuffle=True, num_workers=num_workers)
        val_loader = None
        if has_val and trainer.world_size == 1:
            module.val_data = splits.val  # validated in-process at each epoch's end
        elif has_val:
            val_loader = _loader(splits.val, max(cfg.batch_size, 512), shuffle=False, num_workers=num_workers)
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
