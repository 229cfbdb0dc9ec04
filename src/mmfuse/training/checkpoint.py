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

Both store ``weights_sha256`` in their JSON metadata: the SHA-256 of the file's
tensor data (every byte after the header), checked on load, so a flipped bit fails
loudly instead of loading wrong weights. Files written before the hash existed load
without the check. A model checkpoint's config is checked before any model is
built: its structure, then the shapes of the model it describes (built on torch's
``meta`` device, which allocates nothing) against the tensors in the file's header,
so a config that asks for a huge model is refused without allocating it.

Shape legend: none; tensors keep whatever shape they had.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.errors import CheckpointError, MmfuseError
from mmfuse.io import atomic_write
from mmfuse.records import check_format, parse_format

__all__ = ["CheckpointError", "load_checkpoint", "load_tree", "read_metadata", "save_checkpoint", "save_tree"]

MODEL_FORMAT = "mmfuse.model/1"
TREE_FORMAT = "mmfuse.tree/1"

HASH_KEY = "weights_sha256"


# ------------------------------------------------------------------ atomic write
def _body(raw: bytes) -> bytes:
    """The tensor data of a safetensors file: every byte after the 8-byte length and the header."""
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n :]


def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    from safetensors.torch import save

    # the data layout does not depend on the metadata: hash it, then write it with its hash
    digest = hashlib.sha256(_body(save(tensors, metadata=metadata))).hexdigest()
    raw = save(tensors, metadata={**metadata, HASH_KEY: digest})
    atomic_write(path, raw)


def _read_header(path: Path, raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """``(metadata, {name: {"dtype", "shape", "data_offsets"}})`` of a safetensors file."""
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        if n > len(raw) - 8:
            raise ValueError(f"header length {n} exceeds the file's {len(raw)} bytes")
        header = json.loads(raw[8 : 8 + n])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: not a readable safetensors file (metadata is not a JSON object)")
    return metadata, header


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The JSON metadata of a safetensors file (format, config, weights' SHA-256), reading its header only."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if n > path.stat().st_size - 8 or n <= 0:
                raise CheckpointError(f"{path}: not a readable safetensors file (header length {n})")
            raw = head + fh.read(n)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err})") from err
    return _read_header(path, raw)[0]


def _read(path: str | os.PathLike[str], expected: str) -> tuple[dict[str, str], bytes]:
    """``(metadata, file bytes)`` of a checkpoint of format ``expected``, its hash checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err})") from err
    metadata, _ = _read_header(path, raw)
    record, version = parse_format(expected) or (expected, 1)  # expected: MODEL_FORMAT or TREE_FORMAT
    check_format(metadata, record, version, where=str(path), error=CheckpointError)
    want = metadata.get(HASH_KEY)
    if want is not None:  # files written before the hash existed have none
        got = hashlib.sha256(_body(raw)).hexdigest()
        if got != want:
            raise CheckpointError(
                f"{path}: the weights are damaged: SHA-256 of the tensor data is {got}, the file's "
                f"header records {want}"
            )
    return metadata, raw


def _tensors(path: str | os.PathLike[str], raw: bytes) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(raw)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


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

    metadata, raw = _read(path, MODEL_FORMAT)
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: missing or corrupt model config ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the model config must be a JSON object, got {type(config).__name__}")
    _, header = _read_header(Path(path), raw)
    skeleton: nn.Module | None = None
    try:
        with torch.device("meta"):  # the architecture only: no memory allocated
            skeleton = build_model_from_config(config)
    except MmfuseError as err:
        raise CheckpointError(f"{path}: the model config is invalid ({err})") from err
    except RuntimeError as err:
        # a pretrained backbone loads its own weights and cannot be built on the meta device;
        # its size is the pretrained model's, and the full build below checks the weights
        if "meta" not in str(err):
            raise CheckpointError(f"{path}: the model config is invalid ({type(err).__name__}: {err})") from err
    except (KeyError, TypeError, ValueError, AttributeError, NotImplementedError) as err:
        raise CheckpointError(f"{path}: the model config is invalid ({type(err).__name__}: {err})") from err
    if skeleton is not None:
        _check_against_header(path, skeleton, header)
        del skeleton
    model = build_model_from_config(config)
    try:
        model.load_state_dict(_tensors(path, raw), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({err})") from err
    return model.to(map_location).eval()


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _check_against_header(path: str | os.PathLike[str], skeleton: nn.Module, header: Mapping[str, Any]) -> None:
    """The file's tensors fit the meta-device ``skeleton``: loaded as meta tensors of the
    header's shapes (so the modules' own key conversions, e.g. 0.1 ``Mlp`` names, apply),
    else explained tensor by tensor by :func:`_check_shapes`."""
    metas = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        dtype = _DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape) or dtype is None:
            _check_shapes(path, skeleton.state_dict(), header)
            raise CheckpointError(f"{path}: {name}: not a tensor entry the model can hold ({entry!r})")
        metas[name] = torch.empty(shape, dtype=dtype, device="meta")
    try:
        skeleton.load_state_dict(metas, strict=True, assign=True)
    except (RuntimeError, MmfuseError):
        _check_shapes(path, skeleton.state_dict(), header)
        raise


def _check_shapes(path: str | os.PathLike[str], expected: Mapping[str, Tensor], header: Mapping[str, Any]) -> None:
    """The file holds exactly the tensors ``expected`` names, of their shapes and dtypes."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, t in expected.items():
        entry = header[name]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or tuple(shape) != tuple(t.shape):
            raise CheckpointError(
                f"{path}: {name}: the config describes shape {tuple(t.shape)}, the file holds {shape!r}"
            )
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is not None and dtype != t.dtype:
            raise CheckpointError(f"{path}: {name}: the config describes {t.dtype}, the file holds {dtype}")


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
    """Inverse of :func:`_encode`; a malformed tree raises ``KeyError``/``TypeError``/``ValueError``."""
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
    metadata, raw = _read(path, TREE_FORMAT)
    try:
        encoded = json.loads(metadata["tree"])
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: missing or corrupt structure ({err})") from err
    tensors = _tensors(path, raw)
    try:
        return _decode(encoded, tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
        raise CheckpointError(f"{path}: malformed structure ({type(err).__name__}: {err})") from err
