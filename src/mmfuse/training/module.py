"""The LightningModule of a fit: :class:`FusionModule`, its loss and its steps.

Shape legend: ``b`` batch, ``k`` classes. Masks are bool, True means keep.

The loss follows the dataset's task (cross-entropy, binary cross-entropy on logits,
or the mean squared error of standardised targets; see :mod:`mmfuse.training.engine`),
or the fusion's own ``training_loss``, or a balancing method's. Training steps go
through chunks of minibatches (:data:`mmfuse.training.loaders.CHUNK_STEPS`) and, where
Lightning's wrappers would only call hooks nobody implements, call backward and the
optimizer step directly (:func:`_plain_steps`). A single-process fit validates
in-process at each epoch's end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.training.balance import make_balancer
from mmfuse.training.config import TrainConfig
from mmfuse.training.metrics import iter_batches, to_device

__all__ = ["FusionModule"]


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
        self.balancer = make_balancer(model, cfg)  # None when cfg.balance.method is None (mmfuse.training.balance)
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

        ``fit`` hands a single-process run one chunk of up to :data:`~mmfuse.training.loaders.CHUNK_STEPS`
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
        # foreach: one batched update over every parameter instead of a Python loop over them;
        # torch picks it by itself only on GPUs. On CPU it gives the same weights bit for bit
        # and fits 13-15 % faster (3 epochs of gated / cross_modal_transformer on 4,000 rows,
        # one thread: 0.64 -> 0.54 s, 2.76 -> 2.41 s CPU), the small models' step being mostly
        # the optimizer's Python overhead.
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                 foreach=True)


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


def _rows(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of a collated batch (views, no copies)."""
    return {
        "inputs": {m: x[start:stop] for m, x in batch["inputs"].items()},
        "masks": {m: k[start:stop] for m, k in batch["masks"].items()},
        "label": batch["label"][start:stop],
    }
