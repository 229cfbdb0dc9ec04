"""Synthetic interaction suite: labels that need redundancy, uniqueness or synergy.

Shape legend: ``n`` samples, ``m`` modalities, ``l`` latent dim, ``d`` observed dim,
``t`` tokens per modality (``form="sequence"``).

Generated, no files, in the manner of Liang et al. 2023, "Quantifying & Modeling
Multimodal Interactions: An Information Decomposition Framework" (NeurIPS): every
sample has a shared latent ``z_c`` and one unique latent ``z_i`` per modality, all
``(l,)`` standard normal. Modality ``i`` observes ``x_i = [z_i, z_c] W_i + noise``
with a fixed random projection ``W_i`` of shape ``(2l, d)`` (entries
``N(0, 1/(2l))``, so every observed feature has about unit signal variance) and
Gaussian noise of std ``noise``. The label reads a one-dimensional projection of
the latents, ``s = z . u`` with a fixed random unit vector ``u`` per latent, cut into
``num_classes`` equally likely bins ``q`` (standard normal quantiles):

- ``redundancy``: ``y = q_c`` from the shared latent: every modality alone suffices.
- ``uniqueness``: ``y = q_0`` from modality ``x0``'s own latent: ``x0`` alone
  suffices, every other modality alone is at chance.
- ``synergy``: ``y = (q_0 + q_1 + ... + q_{m-1}) mod num_classes`` (the XOR of two
  signs for two classes): each modality alone, indeed any ``m - 1`` of them, is
  exactly at chance, all together determine the label.
- ``mixed``: each sample takes its label from one of the three rules above, drawn
  uniformly at random (the rule is not observed).

The observation model is the same for every task under one seed; only the label
rule changes. ``form="sequence"`` turns each modality into ``t`` tokens ``(t, d)``
holding noisy copies of the same signal, ``x_i + noise * sqrt(t_min) * eps_j``, of
which a random number in ``[t_min, t]`` (``t_min = ceil(t / 2)``) are valid (mask
True) and the rest are zero padding: one token is too noisy, the mean of the valid
tokens is as clean as the vector form.

Splits: samples are independent, so the first ``1 - val - test`` of them are the
training split, then validation, then test.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import torch
from scipy.stats import norm

from mmfuse.data._base import (
    DataError,
    DatasetSplits,
    ModalitySpec,
    MultimodalDataset,
    register_dataset,
)
from mmfuse.data._common import check_fractions

__all__ = ["SYNTHETIC_TASKS", "load_synthetic"]

SYNTHETIC_TASKS = ("redundancy", "uniqueness", "synergy", "mixed")


def _unit(rng: np.random.Generator, l: int) -> np.ndarray:  # noqa: E741
    u = rng.standard_normal(l)
    return u / np.linalg.norm(u)


@register_dataset("synthetic")
def load_synthetic(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    task: Literal["redundancy", "uniqueness", "synergy", "mixed"] = "synergy",
    n: int = 2000,
    dim: int = 32,
    latent_dim: int = 4,
    noise: float = 0.3,
    num_classes: int = 2,
    num_modalities: int = 2,
    form: Literal["vector", "sequence"] = "vector",
    seq_len: int = 8,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DatasetSplits:
    """Generate one task of the interaction suite (see the module docstring).

    Args:
        root: unused (nothing is read); accepted like every loader.
        seed: fixes the projections, latents, noise and sequence lengths.
        task: ``redundancy``, ``uniqueness``, ``synergy`` or ``mixed``.
        n: total number of samples over the three splits.
        dim: observed features ``d`` per modality (per token for sequences).
        latent_dim: ``l``, size of each latent.
        noise: std of the observation noise.
        num_classes: number of equally likely classes.
        num_modalities: ``m`` modalities, named ``x0``, ``x1``, ...
        form: ``vector`` ``(d,)`` or ``sequence`` ``(t, d)`` with token masks.
        seq_len: ``t`` for ``form="sequence"``.
        val_fraction: fraction of samples for validation.
        test_fraction: fraction of samples for test.
    """
    if task not in SYNTHETIC_TASKS:
        raise DataError(f"synthetic: task must be one of {list(SYNTHETIC_TASKS)}, got {task!r}")
    if form not in ("vector", "sequence"):
        raise DataError(f"synthetic: form must be 'vector' or 'sequence', got {form!r}")
    for what, v, low in (
        ("n", n, 3),
        ("dim", dim, 1),
        ("latent_dim", latent_dim, 1),
        ("num_classes", num_classes, 2),
        ("num_modalities", num_modalities, 2),
        ("seq_len", seq_len, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise DataError(f"synthetic: {what} must be an int >= {low}, got {v!r}")
    if not (isinstance(noise, int | float) and noise >= 0):
        raise DataError(f"synthetic: noise must be >= 0, got {noise!r}")
    check_fractions("synthetic", val_fraction, test_fraction)

    rng = np.random.default_rng(seed)
    m, l = num_modalities, latent_dim  # noqa: E741
    names = [f"x{i}" for i in range(m)]
    proj = [rng.standard_normal((2 * l, dim)) / math.sqrt(2 * l) for _ in range(m)]
    u_shared = _unit(rng, l)
    u_unique = [_unit(rng, l) for _ in range(m)]
    z_shared = rng.standard_normal((n, l))
    z_unique = [rng.standard_normal((n, l)) for _ in range(m)]
    eps = [rng.standard_normal((n, dim)) for _ in range(m)]

    edges = norm.ppf(np.arange(1, num_classes) / num_classes)
    q_shared = np.digitize(z_shared @ u_shared, edges)
    q_unique = [np.digitize(z_unique[i] @ u_unique[i], edges) for i in range(m)]
    rules = {
        "redundancy": q_shared,
        "uniqueness": q_unique[0],
        "synergy": np.sum(q_unique, axis=0) % num_classes,
    }
    rule_rng = np.random.default_rng([seed, 1])
    mechanism = rule_rng.integers(0, 3, size=n)
    if task == "mixed":
        labels = np.choose(mechanism, [rules["redundancy"], rules["uniqueness"], rules["synergy"]])
    else:
        labels = rules[task]

    clean = [np.concatenate([z_unique[i], z_shared], axis=1) @ proj[i] for i in range(m)]
    inputs: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    specs: dict[str, ModalitySpec] = {}
    meta = {"latent_dim": l, "noise": noise}
    if form == "vector":
        for i, name in enumerate(names):
            inputs[name] = torch.from_numpy((clean[i] + noise * eps[i]).astype(np.float32))
            specs[name] = ModalitySpec("vector", (dim,), meta)
    else:
        t_min = math.ceil(seq_len / 2)
        seq_rng = np.random.default_rng([seed, 2])
        for i, name in enumerate(names):
            tok_noise = seq_rng.standard_normal((n, seq_len, dim))
            tokens = clean[i][:, None, :] + noise * math.sqrt(t_min) * tok_noise
            lengths = seq_rng.integers(t_min, seq_len + 1, size=n)
            valid = np.arange(seq_len)[None, :] < lengths[:, None]
            tokens = np.where(valid[..., None], tokens, 0.0)
            inputs[name] = torch.from_numpy(tokens.astype(np.float32))
            masks[name] = torch.from_numpy(valid)
            specs[name] = ModalitySpec("sequence", (seq_len, dim), meta)

    full = MultimodalDataset(
        f"synthetic-{task}",
        inputs,
        torch.from_numpy(labels.astype(np.int64)),
        specs=specs,
        num_classes=num_classes,
        masks=masks,
    )
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(f"synthetic: n={n} too small for the split fractions")
    idx = torch.arange(n)
    train = full.subset(idx[:n_train])
    val = full.subset(idx[n_train : n_train + n_val])
    test = full.subset(idx[n_train + n_val :])
    info = {
        "task": task,
        "form": form,
        "seed": seed,
        "interaction": {
            "redundancy": "label from the latent shared by all modalities",
            "uniqueness": "label from x0's own latent only",
            "synergy": "label = sum of the modalities' latent bins mod num_classes",
            "mixed": "each sample uses one of the three rules at random",
        }[task],
    }
    if task == "mixed":
        info["mechanism"] = mechanism.tolist()
    return DatasetSplits(f"synthetic-{task}", train, val, test, info)
