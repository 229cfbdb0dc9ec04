"""Helpers shared by the loaders: seeded stratified splits, train-fitted scaling, the processed cache.

Shape legend: ``n`` samples, ``d`` features.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.data._base import DataError
from mmfuse.data._files import cache_dir
from mmfuse.errors import check_fraction
from mmfuse.io import atomic_write

__all__ = ["check_fractions", "fit_standardise", "load_or_build", "stratified_split"]


def check_fractions(dataset: str, val_fraction: float, test_fraction: float) -> None:
    """:class:`DataError` unless both fractions are in ``(0, 1)`` and leave a training part."""
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_fraction(f"{dataset}: {what}", v, error=DataError, low_open=True)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"{dataset}: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices ``0..n-1`` into parts with the given fractions, class by class.

    Within each class the indices are permuted with ``seed`` and cut into parts of
    ``round(n_c * fraction)`` (the first part takes what rounding leaves), so every
    part keeps the class proportions. Returns sorted ``int64`` index arrays.

    Args:
        labels: ``(n,)`` class of each sample.
        fractions: one fraction per part, summing to 1.
        seed: seed of the permutation.
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split fractions must sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        counts = [int(round(len(idx) * f)) for f in fractions[1:]]
        first = len(idx) - sum(counts)
        start = 0
        for k, size in enumerate([first, *counts]):
            parts[k].append(idx[start : start + size])
            start += size
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def fit_standardise(
    train: np.ndarray, axis: int | tuple[int, ...] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``train`` over ``axis`` (std of constant features set to 1)."""
    mean = train.mean(axis=axis, keepdims=True, dtype=np.float64)
    std = train.std(axis=axis, keepdims=True, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


_META = "__mmfuse_meta__"


def _describe(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per array: shape, dtype and the SHA-256 of its bytes (what a cache entry must still hold)."""
    return {
        k: {
            "shape": list(a.shape),
            "dtype": a.dtype.str,
            "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
        }
        for k, a in arrays.items()
    }


def _read_entry(path: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays of a cache entry, or ``None`` and why it cannot be trusted."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001  (BadZipFile, bad CRC, zlib, truncation, ...: all rebuild)
        return None, f"cannot be read: {type(e).__name__}: {e}"
    if _META not in raw:
        return None, "it has no checksum record"
    try:
        meta = json.loads(raw.pop(_META).tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"its checksum record is unreadable: {e}"
    if not isinstance(meta, dict) or set(meta) != set(raw):
        return None, f"it holds arrays {sorted(raw)}, its record names {sorted(meta) if isinstance(meta, dict) else meta}"
    got = _describe(raw)
    for k, want in meta.items():
        if got[k]["shape"] != want.get("shape") or got[k]["dtype"] != want.get("dtype"):
            return None, f"array {k!r} is {got[k]['dtype']} {tuple(got[k]['shape'])}, expected {want.get('dtype')} {tuple(want.get('shape') or ())}"
        if got[k]["sha256"] != want.get("sha256"):
            return None, f"array {k!r} does not match its checksum"
    for k, a in raw.items():
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            return None, f"array {k!r} holds NaN or infinite values"
    return raw, ""


def load_or_build(
    name: str, key: Mapping[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays cached as ``<cache_dir>/<name>-<hash of key>.npz``, built on a miss.

    ``key`` must hold everything the arrays depend on (options, source checksums,
    a processing version). Each entry also stores every array's shape, dtype and
    SHA-256; an entry that cannot be read (truncated, bad CRC), whose arrays do not
    match that record, or whose float arrays hold NaN/inf (never built that way) is
    rebuilt with a warning naming its path. Written atomically; an unwritable cache
    only warns.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_dir()
    path = folder / f"{name}-{digest}.npz"
    if path.is_file():
        arrays, problem = _read_entry(path)
        if arrays is not None:
            return arrays
        warnings.warn(f"mmfuse: processed cache entry {path} is damaged ({problem}); rebuilding it", stacklevel=2)
        path.unlink(missing_ok=True)
    arrays = build()
    meta = np.frombuffer(json.dumps(_describe(arrays)).encode(), dtype=np.uint8)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays, **{_META: meta}))
    except OSError as e:
        warnings.warn(f"mmfuse: cannot write the processed cache {path}: {e}", stacklevel=2)
    return arrays
