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

Three more tasks, each built so that one family of strategies wins by design (the
bench's tasks that tell strategies apart):

- ``alignment`` (always two *sequence* modalities, ``t = seq_len`` tokens each, all
  valid): a vocabulary of ``vocab_size`` symbols, symbol ``s`` coded as the angle
  ``2 pi s / V`` on a circle placed in ``R^d`` by a fixed random orthonormal frame.
  ``x1`` holds ``t`` distinct symbols, each token also carrying a value ``v_j`` in
  ``{0..k-1}`` (a fixed random unit vector orthogonal to the circle, added to its
  code); the values of one sample's tokens are as balanced as ``t`` allows (a
  random permutation of ``j mod k``). ``x0`` repeats one of ``x1``'s symbols (the
  key) at each of its ``t`` tokens. The label is the value of the ``x1`` token
  whose symbol matches ``x0``'s. Tokens get Gaussian noise of std ``noise /
  sqrt(d)`` per feature. The mean of ``x1``'s tokens holds every value equally
  often, so nothing in it says which value goes with the key: *a strategy that
  pools each modality before fusing* (early, late, gated, tensor, film) can only
  recover the pairing through a set encoding that its per-token encoder and head
  would have to learn, and stays far below *token-level cross-modal attention*
  with ``x0`` as the query (``multihead_cross_attention``), which learns the
  matching ``cos(theta_key - theta_j)`` score on the circle and reads the matched
  token's value.
- ``reliability`` (exactly 3 vector modalities): a *reference* ``x0`` and two
  *candidates* ``x1``, ``x2``. Every sample has a key latent ``a`` of ``l_a = l + l // 2``
  dimensions and a label latent ``b`` of ``l_b = max(1, l // 2)`` (6 and 2 by
  default); ``y = q(b . u)``. The reference observes the key only, ``x0 = a W_0 +
  noise`` (alone it is at chance); a clean candidate observes both, ``x_i = [a, b] W_i
  + noise``. In every sample one candidate, drawn uniformly, is *corrupted*: it shows
  a decoy, the latents ``[a', b']`` of an independent draw (times ``corrupt_scale``,
  1 by default) through the same ``W_i`` and noise. A decoy is a clean-looking sample
  of another draw, so nothing in the candidate alone gives it away (no per-modality
  encoder can learn to silence it, unlike Gaussian junk, which an MLP encoder
  detects by its energy outside the signal subspace), and a candidate alone is
  right on its clean half only (about 0.75). Nothing flags it either
  (``info["corrupted"]``, the corrupted modality's index per sample, 1 or 2, is for
  analysis only). Only a cross-modal comparison finds the clean candidate: the one
  whose key matches the reference's. Designed for strategies that weigh modalities
  per sample by a score *between* modalities: dot-product attention with ``x0`` as
  the query (``multihead_cross_attention``, whose default query is the first
  modality) scores ``q(x0) . k(x_i)``, a bilinear match of the keys, and reads the
  matched candidate's value; a fixed combination (``early`` concatenation, ``late``
  mean) has to build the comparison and the selection from sums and ReLU-like units,
  and with the bench's 1,400 training samples stays near one candidate's accuracy.
  Measured with the bench's defaults (n=2000, hidden 64, 3 seeds): attention
  0.872 +- 0.008, ``tensor`` 0.84 and ``low_rank`` 0.82 (bilinear products of
  modalities), ``gated`` 0.81 (its gate is linear in the modalities' features, so it
  compares them only through the products of gate and features), ``early`` 0.74,
  ``late`` 0.74, the best single modality 0.74; additive-score ``cross_attention``
  (a tanh of a *sum* of query and key terms, no product) 0.75 and the
  cross-modal transformer 0.76. The advantage is one of sample efficiency: with
  twice the samples (n=4000, 4-dimensional key and label latents) ``early`` reaches
  attention's accuracy (0.89 both). With the decoy in a symmetric design (three
  candidates, no reference) the clean majority outvotes it and every strategy ties
  (0.94-0.95);
  per-sample gains on every modality change nothing either (0.91-0.93), since the
  encoders' LayerNorm removes a sample's scale.
- ``groups`` (``m >= 4`` vector modalities, ``m`` even, default 4): the modalities
  come in consecutive pairs ``(x0, x1), (x2, x3), ...`` (the groups of
  :func:`mmfuse.fusions.hierarchical.default_groups`). With ``s_i = z_i . u_i``
  (unit-variance projections of the unique latents), the score is
  ``f = sum_pairs s_a * s_b`` and ``y`` its equal-probability bin (the sign for two
  classes): a multiplicative (synergistic) interaction inside each group, only
  additive structure between groups. ``hierarchical`` with those groups (a small
  local fusion per pair, additive global combination) is designed to reach the
  accuracy of a global interaction model (``tensor`` over all ``m``, ``early``)
  with fewer parameters, and to beat the same hierarchy with the wrong groups and
  every additive strategy (``late``), which cannot form the within-pair products.

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

__all__ = ["DESIGNED_TASKS", "SYNTHETIC_TASKS", "load_synthetic"]

SYNTHETIC_TASKS = ("redundancy", "uniqueness", "synergy", "mixed", "alignment", "reliability", "groups")
#: the tasks whose label rule favours one family of strategies (see the module docstring)
DESIGNED_TASKS = ("alignment", "reliability", "groups")


def _unit(rng: np.random.Generator, l: int) -> np.ndarray:  # noqa: E741
    u = rng.standard_normal(l)
    return u / np.linalg.norm(u)


@register_dataset("synthetic")
def load_synthetic(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    task: Literal[
        "redundancy", "uniqueness", "synergy", "mixed", "alignment", "reliability", "groups"
    ] = "synergy",
    n: int = 2000,
    dim: int = 32,
    latent_dim: int = 4,
    noise: float = 0.3,
    num_classes: int = 2,
    num_modalities: int | None = None,
    form: Literal["vector", "sequence"] = "vector",
    seq_len: int = 8,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    vocab_size: int = 32,
    corrupt_scale: float = 1.0,
) -> DatasetSplits:
    """Generate one task of the interaction suite (see the module docstring).

    Args:
        root: unused (nothing is read); accepted like every loader.
        seed: fixes the projections, latents, noise and sequence lengths.
        task: one of :data:`SYNTHETIC_TASKS`.
        n: total number of samples over the three splits.
        dim: observed features ``d`` per modality (per token for sequences).
        latent_dim: ``l``, size of each latent.
        noise: std of the observation noise.
        num_classes: number of equally likely classes.
        num_modalities: ``m`` modalities, named ``x0``, ``x1``, ... (default 2, 4 for
            ``groups``; ``alignment`` takes exactly 2, ``reliability`` exactly 3).
        form: ``vector`` ``(d,)`` or ``sequence`` ``(t, d)`` with token masks
            (``alignment`` is always a sequence task, ``reliability`` and ``groups``
            always vector tasks).
        seq_len: ``t`` for ``form="sequence"``.
        val_fraction: fraction of samples for validation.
        test_fraction: fraction of samples for test.
        vocab_size: ``alignment``: number of symbols (at least ``2 * seq_len``;
            more symbols sit closer on the circle: harder to match).
        corrupt_scale: ``reliability``: std of the decoy's latents relative to the clean
            ones (1, the default, makes a decoy indistinguishable from a clean sample).
    """
    if task not in SYNTHETIC_TASKS:
        raise DataError(f"synthetic: task must be one of {list(SYNTHETIC_TASKS)}, got {task!r}")
    if num_modalities is None:
        num_modalities = {"groups": 4, "reliability": 3}.get(task, 2)
    if form not in ("vector", "sequence"):
        raise DataError(f"synthetic: form must be 'vector' or 'sequence', got {form!r}")
    for what, v, low in (
        ("n", n, 3),
        ("dim", dim, 1),
        ("latent_dim", latent_dim, 1),
        ("num_classes", num_classes, 2),
        ("num_modalities", num_modalities, 2),
        ("seq_len", seq_len, 1),
        ("vocab_size", vocab_size, 2),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise DataError(f"synthetic: {what} must be an int >= {low}, got {v!r}")
    if not (isinstance(noise, int | float) and noise >= 0):
        raise DataError(f"synthetic: noise must be >= 0, got {noise!r}")
    if not (isinstance(corrupt_scale, int | float) and corrupt_scale > 0):
        raise DataError(f"synthetic: corrupt_scale must be > 0, got {corrupt_scale!r}")
    check_fractions("synthetic", val_fraction, test_fraction)
    if task == "alignment" and num_modalities != 2:
        raise DataError(f"synthetic: task 'alignment' has exactly 2 modalities, got num_modalities={num_modalities}")
    if task == "alignment" and vocab_size < 2 * seq_len:
        raise DataError(f"synthetic: alignment: vocab_size must be >= 2 * seq_len = {2 * seq_len}, got {vocab_size}")
    if task == "reliability" and num_modalities != 3:
        raise DataError(f"synthetic: task 'reliability' has exactly 3 modalities (a reference and two candidates), "
                        f"got num_modalities={num_modalities}")
    if task == "groups" and (num_modalities < 4 or num_modalities % 2):
        raise DataError(f"synthetic: task 'groups' needs an even num_modalities >= 4, got {num_modalities}")
    if task in DESIGNED_TASKS:
        inputs, masks, specs, labels, extra = _DESIGNED[task](
            seed=seed, n=n, dim=dim, latent_dim=latent_dim, noise=float(noise), k=num_classes,
            m=num_modalities, seq_len=seq_len, vocab_size=vocab_size, corrupt_scale=float(corrupt_scale),
        )
        return _split(task, inputs, masks, specs, labels, num_classes, n, val_fraction, test_fraction,
                      {"task": task, "form": "sequence" if task == "alignment" else "vector", "seed": seed,
                       "interaction": _INTERACTION[task], **extra})

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

    info = {
        "task": task,
        "form": form,
        "seed": seed,
        "interaction": _INTERACTION[task],
    }
    if task == "mixed":
        info["mechanism"] = mechanism.tolist()
    return _split(task, inputs, masks, specs, labels, num_classes, n, val_fraction, test_fraction, info)


_INTERACTION = {
    "redundancy": "label from the latent shared by all modalities",
    "uniqueness": "label from x0's own latent only",
    "synergy": "label = sum of the modalities' latent bins mod num_classes",
    "mixed": "each sample uses one of the three rules at random",
    "alignment": "label = value of the x1 token whose symbol matches a token of x0",
    "reliability": "label from the candidate (x1 or x2) whose key matches the reference x0; the other shows a decoy",
    "groups": "label = sign of the sum over modality pairs of the product of their latents",
}


def _split(
    task: str,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    specs: dict[str, ModalitySpec],
    labels: np.ndarray,
    num_classes: int,
    n: int,
    val_fraction: float,
    test_fraction: float,
    info: dict,
) -> DatasetSplits:
    """The first ``1 - val - test`` samples train, then validation, then test."""
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
    return DatasetSplits(f"synthetic-{task}", train, val, test, info)


def _bins(score: np.ndarray, k: int) -> np.ndarray:
    """Equally likely classes of a standard normal ``score``: its standard normal quantile bin."""
    return np.digitize(score, norm.ppf(np.arange(1, k) / k))


def _alignment(*, seed: int, n: int, dim: int, noise: float, k: int, seq_len: int, vocab_size: int, **_: object):
    """Two token sequences; the label is the value of the x1 token matching an x0 token."""
    rng = np.random.default_rng([seed, 3])
    t = seq_len
    # symbol s is the angle 2 pi s / V on a circle, placed in R^d by a fixed random
    # orthonormal frame (the first two columns); values use the remaining directions
    frame, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    angle = 2 * np.pi * np.arange(vocab_size) / vocab_size
    codes = np.stack([np.cos(angle), np.sin(angle)], 1) @ frame[:, :2].T
    values = rng.standard_normal((k, dim - 2)) @ frame[:, 2:].T
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    # per sample: a random permutation of the vocabulary; x1 takes its first t symbols,
    # x0 repeats one of them (the key) at every token
    perm = np.argsort(rng.random((n, vocab_size)), axis=1)
    rows = np.arange(n)
    j_star = rng.integers(0, t, size=n)
    sym1 = perm[:, :t]
    sym0 = np.repeat(sym1[rows, j_star][:, None], t, axis=1)
    val1 = np.argsort(rng.random((n, t)), axis=1) % k  # balanced values per sample
    labels = val1[rows, j_star]
    scale = noise / math.sqrt(dim)
    x0 = codes[sym0] + scale * rng.standard_normal((n, t, dim))
    x1 = codes[sym1] + values[val1] + scale * rng.standard_normal((n, t, dim))
    meta = {"vocab_size": vocab_size, "noise": noise}
    inputs = {"x0": torch.from_numpy(x0.astype(np.float32)), "x1": torch.from_numpy(x1.astype(np.float32))}
    masks = {m: torch.ones(n, t, dtype=torch.bool) for m in inputs}
    specs = {m: ModalitySpec("sequence", (t, dim), meta) for m in inputs}
    return inputs, masks, specs, labels, {"match": j_star.tolist()}


def _observe(rng: np.random.Generator, latents: list[np.ndarray], dim: int, noise: float) -> np.ndarray:
    """``[latents...] W + noise`` with a random ``W`` of unit signal variance per feature."""
    z = np.concatenate(latents, axis=1)
    proj = rng.standard_normal((z.shape[1], dim)) / math.sqrt(z.shape[1])
    return z @ proj + noise * rng.standard_normal((z.shape[0], dim))


def _reliability(
    *, seed: int, n: int, dim: int, latent_dim: int, noise: float, k: int, corrupt_scale: float, **_: object
):
    """A reference ``x0`` and two candidates ``x1``, ``x2``; per sample one candidate shows a decoy."""
    rng = np.random.default_rng([seed, 4])
    l_key, l_label = _reliability_dims(latent_dim)
    key = rng.standard_normal((n, l_key))
    z = rng.standard_normal((n, l_label))
    labels = _bins(z @ _unit(rng, l_label), k)
    corrupted = rng.integers(1, 3, size=n)  # index of the corrupted modality: 1 or 2
    inputs = {"x0": _observe(rng, [key], dim, noise)}
    for i in (1, 2):
        # the decoy: the latents of another, independent sample (times corrupt_scale),
        # seen through the same projection and noise as the clean ones
        decoy = corrupt_scale * rng.standard_normal((n, l_key + l_label))
        latents = np.where((corrupted == i)[:, None], decoy, np.concatenate([key, z], axis=1))
        inputs[f"x{i}"] = _observe(rng, [latents], dim, noise)
    meta = {"latent_dim": latent_dim, "noise": noise}
    tensors = {name: torch.from_numpy(x.astype(np.float32)) for name, x in inputs.items()}
    specs = {name: ModalitySpec("vector", (dim,), meta) for name in tensors}
    return tensors, {}, specs, labels, {"corrupted": corrupted.tolist(), "reference": "x0"}


def _reliability_dims(latent_dim: int) -> tuple[int, int]:
    """``(l_key, l_label)`` of the ``reliability`` task for a ``latent_dim``: a key of
    ``latent_dim + latent_dim // 2`` dimensions and a label latent of ``max(1, latent_dim // 2)``
    (6 and 2 by default)."""
    return latent_dim + latent_dim // 2, max(1, latent_dim // 2)


def _groups(*, seed: int, n: int, dim: int, latent_dim: int, noise: float, k: int, m: int, **_: object):
    """Pairs of modalities interact multiplicatively; the pairs add up."""
    rng = np.random.default_rng([seed, 5])
    l = latent_dim  # noqa: E741
    zs = [rng.standard_normal((n, l)) for _ in range(m)]
    s = [zs[i] @ _unit(rng, l) for i in range(m)]
    pairs = m // 2
    # each product s_a s_b has unit variance; the sum of ``pairs`` of them is scaled to
    # unit variance
    score = sum(s[2 * g] * s[2 * g + 1] for g in range(pairs)) / math.sqrt(pairs)
    # two classes: the sign; more: the empirical quantile bins of this draw (balanced)
    edges = np.quantile(score, np.arange(1, k) / k) if k > 2 else np.zeros(1)
    labels = np.digitize(score, edges)
    inputs = {f"x{i}": torch.from_numpy(_observe(rng, [zs[i]], dim, noise).astype(np.float32)) for i in range(m)}
    meta = {"latent_dim": l, "noise": noise}
    specs = {name: ModalitySpec("vector", (dim,), meta) for name in inputs}
    groups = [[f"x{2 * g}", f"x{2 * g + 1}"] for g in range(pairs)]
    return inputs, {}, specs, labels, {"groups": groups}


_DESIGNED = {"alignment": _alignment, "reliability": _reliability, "groups": _groups}
