"""Checkpoints as safetensors files with their JSON in the header: never pickle.

Two kinds of file, both one ``.safetensors`` file written atomically (temp file,
fsync, rename), so a crash leaves the previous file or the new one, never half of one:

- a *model* checkpoint (:func:`save_checkpoint` / :func:`load_checkpoint`): the
  model's ``state_dict`` as tensors and ``model.config`` as JSON in the header
  metadata, enough to rebuild the model with no other file;
- a *training-state* checkpoint (:func:`save_tree` / :func:`load_tree`): any nested
  structure of dicts, lists, tuples, numbers, strings and tensors, e.g. Lightning's
  checkpoint dict with optimizer state, loop counters, early-stopping state and RNG
  states. Tensors go into the safetensors body, the rest into a JSON tree.

Shape legend: none; tensors keep whatever shape they had.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.errors import CheckpointError
from mmfuse.io import atomic_write

__all__ = ["CheckpointError", "load_checkpoint", "load_tree", "save_checkpoint", "save_tree"]

MODEL_FORMAT = "mmfuse.model/1"
TREE_FORMAT = "mmfuse.tree/1"




# ------------------------------------------------------------------ atomic write
def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    from safetensors.torch import save

    atomic_write(path, save(tensors, metadata=metadata))


def _read(path: str | os.PathLike[str], expected: str) -> tuple[dict[str, str], dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if metadata.get("format") != expected:
        raise CheckpointError(f"{path}: expected a {expected!r} checkpoint, got format {metadata.get('format')!r}")
    return metadata, tensors


# ---------------------------------------------------------------- model files
def save_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights and ``model.config`` to one safetensors file.

    Raises:
        CheckpointError: the model has no ``config`` (it was assembled by hand) or
            its config is not JSON-serialisable (e.g. a layer class as a fusion option).
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise CheckpointError(
            f"{path}: the model has no config to rebuild it from (build it with build_model or "
            f"build_unimodal_model, or save its state_dict yourself)"
        )
    try:
        config_json = json.dumps(config, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: model.config is not JSON-serialisable ({err})") from err
    # clone: safetensors refuses tensors that share storage
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    _atomic_save(tensors, {"format": MODEL_FORMAT, "config": config_json}, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a :func:`save_checkpoint` file alone and load its weights
    (strictly: every key must match). Returns the model in eval mode."""
    from mmfuse.models import build_model_from_config

    metadata, tensors = _read(path, MODEL_FORMAT)
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: missing or corrupt model config ({err})") from err
    model = build_model_from_config(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({err})") from err
    return model.to(map_location).eval()


# ------------------------------------------------------------ structure files
def _encode(obj: Any, tensors: dict[str, Tensor], where: str) -> Any:
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, where)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(f"{where}: cannot store a {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            (tag, val), = obj.items()
            if tag == "__tensor__":
                return tensors[val]
            if tag == "__ndarray__":
                return tensors[val].numpy()
            if tag == "__tuple__":
                return tuple(_decode(v, tensors) for v in val)
            if tag == "__items__":
                return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in val}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def save_tree(tree: Any, path: str | os.PathLike[str]) -> Path:
    """Write a nested structure of dicts/lists/tuples/scalars/strings/tensors atomically."""
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    encoded = _encode(tree, tensors, "checkpoint")
    try:
        text = json.dumps(encoded)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot encode the checkpoint as JSON ({err})") from err
    _atomic_save(tensors, {"format": TREE_FORMAT, "tree": text}, path)
    return path


def load_tree(path: str | os.PathLike[str]) -> Any:
    """Read back what :func:`save_tree` wrote (tensors on the CPU)."""
    metadata, tensors = _read(path, TREE_FORMAT)
    try:
        encoded = json.loads(metadata["tree"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: missing or corrupt structure ({err})") from err
    return _decode(encoded, tensors)
