"""Parameter-free fusion operations, for numpy arrays and torch tensors alike.

Shape legend: ``b`` batch (or any leading axes), ``m`` modalities (the positional
arguments, in the order given), ``d`` features. Masks are bool, True means keep.

Every function takes either numpy arrays or torch tensors (not a mix) and returns
the same type. numpy inputs are computed through torch on the CPU
(:func:`torch.from_numpy`, no copy of a contiguous array), so both give
identical results. Bad input raises :class:`mmfuse.FusionError` with the expected
and the actual value.

The operations::

    early_fusion(x_1, ..., x_M)          Concat(x_1, ..., x_M)
    late_fusion(x_1, ..., x_M)           (1/M) sum_i x_i   (or max_i x_i, sum_i x_i)
    weighted_fusion(x_1, ..., x_M, w)    sum_i w_i x_i
    gated_combine(h_1, h_2, g)           g * h_1 + (1 - g) * h_2
    additive_attention_weights(s, mask)  softmax(s) over kept entries (masked get 0)
    product_of_experts(lp_1, ..., lp_M)  log_softmax(sum_i lp_i)
    masked_mean(x, mask, dim)            sum_t mask_t x_t / max(1, sum_t mask_t)   (the pooling of
                                         tokens every encoder and fusion uses)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from mmfuse.errors import FusionError

__all__ = [
    "additive_attention_weights",
    "early_fusion",
    "gated_combine",
    "late_fusion",
    "masked_mean",
    "product_of_experts",
    "weighted_fusion",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)
_LATE_METHODS = ("mean", "max", "sum")


def _kind(x: object, what: str) -> str:
    if isinstance(x, Tensor):
        return "torch"
    if isinstance(x, np.ndarray):
        return "numpy"
    raise FusionError(f"{what}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def _to_torch(arrays: Sequence[object], names: Sequence[str], fn: str) -> tuple[list[Tensor], str]:
    """Check that ``arrays`` are all numpy or all torch; return them as tensors and the kind."""
    if not arrays:
        raise FusionError(f"{fn}: expected at least one array, got none")
    kinds = [_kind(a, f"{fn}: {n}") for a, n in zip(arrays, names, strict=True)]
    if len(set(kinds)) > 1:
        i = next(k for k, kind in enumerate(kinds) if kind != kinds[0])
        raise FusionError(
            f"{fn}: {names[i]}: expected a {kinds[0]} array like {names[0]}, got a {kinds[i]} one "
            f"(do not mix numpy and torch)"
        )
    out = [torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in arrays]
    return out, kinds[0]


def _back(x: Tensor, kind: str) -> np.ndarray | Tensor:
    return x.numpy() if kind == "numpy" else x


def _check_float(xs: Sequence[Tensor], names: Sequence[str], fn: str) -> None:
    for x, n in zip(xs, names, strict=True):
        if not x.is_floating_point():
            raise FusionError(f"{fn}: {n}: expected a floating-point array, got {x.dtype}")


def _check_same_shape(xs: Sequence[Tensor], names: Sequence[str], fn: str) -> None:
    for x, n in zip(xs[1:], names[1:], strict=True):
        if x.shape != xs[0].shape:
            raise FusionError(
                f"{fn}: {n}: expected shape {tuple(xs[0].shape)} (as {names[0]}), got {tuple(x.shape)}"
            )


def _names(count: int, stem: str = "x") -> list[str]:
    return [f"{stem}[{i}]" for i in range(count)]


def early_fusion(*xs: ArrayT, axis: int = -1) -> ArrayT:
    """Concatenate ``xs`` along ``axis``: ``(b, d_i)`` each -> ``(b, sum_i d_i)``.

    All inputs need the same number of axes and the same size on every axis but
    ``axis``.
    """
    names = _names(len(xs))
    ts, kind = _to_torch(xs, names, "early_fusion")
    ndim = ts[0].dim()
    if ndim == 0:
        raise FusionError("early_fusion: x[0]: expected at least one axis, got a scalar")
    if not -ndim <= axis < ndim:
        raise FusionError(f"early_fusion: axis: expected an int in [{-ndim}, {ndim}), got {axis}")
    ax = axis % ndim
    for t, n in zip(ts[1:], names[1:], strict=True):
        if t.dim() != ndim:
            raise FusionError(f"early_fusion: {n}: expected {ndim} axes (as x[0]), got {t.dim()}")
        want = [s for i, s in enumerate(ts[0].shape) if i != ax]
        got = [s for i, s in enumerate(t.shape) if i != ax]
        if want != got:
            raise FusionError(
                f"early_fusion: {n}: expected shape {tuple(ts[0].shape)} except on axis {axis}, "
                f"got {tuple(t.shape)}"
            )
    return _back(torch.cat(ts, dim=ax), kind)  # type: ignore[return-value]


def late_fusion(*xs: ArrayT, method: Literal["mean", "max", "sum"] = "mean") -> ArrayT:
    """Combine same-shaped ``xs`` elementwise: their mean, max or sum.

    ``(b, d)`` each -> ``(b, d)``.
    """
    if method not in _LATE_METHODS:
        raise FusionError(f"late_fusion: method: expected one of {list(_LATE_METHODS)}, got {method!r}")
    names = _names(len(xs))
    ts, kind = _to_torch(xs, names, "late_fusion")
    _check_same_shape(ts, names, "late_fusion")
    if method == "mean":
        _check_float(ts, names, "late_fusion")
    stacked = torch.stack(ts, dim=0)  # (m, ...)
    reduce: Callable[[Tensor], Tensor] = {
        "mean": lambda s: s.mean(dim=0),
        "max": lambda s: s.amax(dim=0),
        "sum": lambda s: s.sum(dim=0),
    }[method]
    return _back(reduce(stacked), kind)  # type: ignore[return-value]


def weighted_fusion(*xs: ArrayT, weights: ArrayT | Sequence[float]) -> ArrayT:
    """``sum_i w_i x_i`` over same-shaped ``xs`` (the weights are used as given).

    Args:
        xs: ``M`` arrays, each ``(..., d)``.
        weights: ``(m,)`` one weight per input (a sequence of floats or an array of
            the inputs' type), or ``(..., m)``: per-sample weights whose leading axes
            are those of the inputs without ``d``.

    Returns:
        ``(..., d)``.
    """
    names = _names(len(xs))
    if not xs:
        raise FusionError("weighted_fusion: expected at least one array, got none")
    if isinstance(weights, np.ndarray | Tensor):
        w_in = weights
    elif isinstance(weights, Sequence) and not isinstance(weights, str):
        first = xs[0]
        w_in = (
            torch.tensor(list(weights), dtype=first.dtype, device=first.device)
            if isinstance(first, Tensor)
            else np.asarray(list(weights), dtype=getattr(first, "dtype", None))
        )
    else:
        raise FusionError(
            f"weighted_fusion: weights: expected a sequence of floats or an array, got {type(weights).__name__}"
        )
    ts, kind = _to_torch([*xs, w_in], [*names, "weights"], "weighted_fusion")
    w, ts = ts[-1], ts[:-1]
    _check_same_shape(ts, names, "weighted_fusion")
    _check_float([*ts, w], [*names, "weights"], "weighted_fusion")
    m = len(ts)
    lead = tuple(ts[0].shape[:-1])
    if tuple(w.shape) == (m,):
        w = w.reshape((1,) * len(lead) + (m,))
    elif tuple(w.shape) != (*lead, m):
        raise FusionError(f"weighted_fusion: weights: expected shape ({m},) or {(*lead, m)}, got {tuple(w.shape)}")
    stacked = torch.stack(ts, dim=-2)  # (..., m, d)
    return _back((w.unsqueeze(-1) * stacked).sum(dim=-2), kind)  # type: ignore[return-value]


def gated_combine(h1: ArrayT, h2: ArrayT, gate: ArrayT | float) -> ArrayT:
    """``g * h1 + (1 - g) * h2``.

    Args:
        h1, h2: ``(b, d)`` (any same shape).
        gate: a float, or an array broadcastable to ``h1``'s shape without growing
            it, e.g. ``(b, 1)`` (one gate per sample) or ``(b, d)`` (per feature).

    Returns:
        Same shape as ``h1``.
    """
    if isinstance(gate, float | int) and not isinstance(gate, bool):
        gate = (
            torch.tensor(float(gate), dtype=h1.dtype, device=h1.device)
            if isinstance(h1, Tensor)
            else np.asarray(float(gate), dtype=getattr(h1, "dtype", None))
        )
    names = ["h1", "h2", "gate"]
    (t1, t2, g), kind = _to_torch([h1, h2, gate], names, "gated_combine")
    _check_same_shape([t1, t2], names[:2], "gated_combine")
    _check_float([t1, t2, g], names, "gated_combine")
    try:
        shape = torch.broadcast_shapes(g.shape, t1.shape)
    except RuntimeError:
        shape = None
    if shape != t1.shape:
        raise FusionError(
            f"gated_combine: gate: expected a shape broadcastable to {tuple(t1.shape)}, got {tuple(g.shape)}"
        )
    return _back(g * t1 + (1 - g) * t2, kind)  # type: ignore[return-value]


def additive_attention_weights(scores: ArrayT, mask: ArrayT | None = None, *, axis: int = -1) -> ArrayT:
    """Softmax of ``scores`` over ``axis``, with masked-out entries given weight 0.

    Args:
        scores: ``(b, m)`` (any shape) attention scores.
        mask: bool, same shape as ``scores``, True means keep; ``None`` keeps all.
            A slice with no kept entry gets all-zero weights (not NaN).
        axis: the axis to normalise over.

    Returns:
        Same shape as ``scores``; kept entries of each slice sum to 1.
    """
    arrays: list[object] = [scores] if mask is None else [scores, mask]
    names = ["scores", "mask"][: len(arrays)]
    ts, kind = _to_torch(arrays, names, "additive_attention_weights")
    s = ts[0]
    _check_float([s], ["scores"], "additive_attention_weights")
    if s.dim() == 0:
        raise FusionError("additive_attention_weights: scores: expected at least one axis, got a scalar")
    if not -s.dim() <= axis < s.dim():
        raise FusionError(
            f"additive_attention_weights: axis: expected an int in [{-s.dim()}, {s.dim()}), got {axis}"
        )
    if mask is None:
        return _back(torch.softmax(s, dim=axis), kind)  # type: ignore[return-value]
    keep = ts[1]
    if keep.dtype != torch.bool:
        raise FusionError(f"additive_attention_weights: mask: expected a bool array, got {keep.dtype}")
    if keep.shape != s.shape:
        raise FusionError(
            f"additive_attention_weights: mask: expected shape {tuple(s.shape)} (as scores), got {tuple(keep.shape)}"
        )
    filled = s.masked_fill(~keep, torch.finfo(s.dtype).min)
    weights = torch.softmax(filled, dim=axis) * keep.to(s.dtype)
    return _back(weights, kind)  # type: ignore[return-value]


def product_of_experts(*log_probs: ArrayT, axis: int = -1) -> ArrayT:
    """Product of experts: ``log_softmax(sum_i log_probs_i)`` over the class ``axis``.

    Each input is one expert's class log-probabilities ``(b, c)``; the output is the
    log of the normalised product of their probabilities.
    """
    names = _names(len(log_probs), "log_probs")
    ts, kind = _to_torch(log_probs, names, "product_of_experts")
    _check_same_shape(ts, names, "product_of_experts")
    _check_float(ts, names, "product_of_experts")
    if ts[0].dim() == 0:
        raise FusionError("product_of_experts: log_probs[0]: expected at least one axis, got a scalar")
    if not -ts[0].dim() <= axis < ts[0].dim():
        raise FusionError(
            f"product_of_experts: axis: expected an int in [{-ts[0].dim()}, {ts[0].dim()}), got {axis}"
        )
    total = torch.stack(ts, dim=0).sum(dim=0)
    return _back(torch.log_softmax(total, dim=axis), kind)  # type: ignore[return-value]


def masked_mean(x: ArrayT, mask: ArrayT | None, dim: int) -> ArrayT:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is True.

    ``mask`` has the shape of ``x`` without its last axis (``x`` ``(b, t, d)``, ``mask``
    ``(b, t)``, ``dim=1``), or is None for a plain mean. A slice with no kept position
    gives zeros (not NaN). Torch tensors take a direct path (it runs in every forward).
    """
    if not isinstance(x, Tensor):
        t = torch.from_numpy(np.asarray(x))
        m = None if mask is None else torch.from_numpy(np.asarray(mask))
        return masked_mean(t, m, dim).numpy()
    if mask is None:
        return x.mean(dim=dim)
    w = mask.to(x.dtype).unsqueeze(-1)
    total = (x * w).sum(dim=dim)
    count = w.sum(dim=dim).clamp_min(1.0)
    return total / count
