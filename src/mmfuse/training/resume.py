"""What makes a fit resumable: :class:`ResumeState` and :class:`SafetensorsCheckpointIO`.

Shape legend: none.

``ResumeState`` is the early stopping of a fit (best validation loss and weights,
patience, history) and its end-of-epoch checkpoint; its own state and the RNG states
of Python, numpy and torch travel inside Lightning's checkpoint dict, which
``SafetensorsCheckpointIO`` writes as one safetensors file (no pickle), atomically.
:func:`check_training_state` refuses a damaged or mismatched one before Lightning reads it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from torch import Tensor, nn

from mmfuse.errors import CheckpointError, TrainingError
from mmfuse.training.checkpoint import load_tree, save_tree

__all__ = ["LAST", "ResumeState", "SafetensorsCheckpointIO", "check_training_state"]

#: the resumable training state a fit with ``out_dir`` writes after every epoch
LAST = "last.safetensors"


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint dict to and from one safetensors file (no pickle), atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_tree(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        tree = load_tree(path)
        check_training_state(tree, path)
        return tree

    def remove_checkpoint(self, path: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


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


def check_training_state(tree: Any, path: Any, module: nn.Module | None = None) -> None:
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
