"""Batch transforms: modality dropout for training, missing modalities and noise for testing.

Shape legend: ``b`` batch, ``t`` tokens, ``d`` features, ``m`` modalities.

Every transform takes a collated batch ``{"inputs": {mod: (b, ...)}, "masks": {mod:
(b,) or (b, t)}, "label": (b,)}`` and returns a *new* dict; the given batch and its
tensors are never modified. Masks are bool, True means keep. Removing a modality only
sets its mask to False (all False for a ``(b, t)`` token mask); the input values stay
as they are, since every fusion replaces the values of masked entries by zeros where
inputs enter (see :mod:`mmfuse.fusions._base`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmfuse.data._base import ModalitySpec
from mmfuse.errors import ConfigError, DataError

__all__ = ["Compose", "GaussianNoise", "MissingModality", "ModalityDropout"]

Batch = Mapping[str, Any]


def _check_batch(batch: Batch, names: Sequence[str], who: str) -> None:
    if "inputs" not in batch:
        raise DataError(
            f"{who}: expected a batch dict with 'inputs' and 'masks', got keys {sorted(batch)}"
        )
    for name in names:
        if name not in batch["inputs"]:
            raise DataError(
                f"{who}: modality {name!r} not in the batch (has {sorted(batch['inputs'])})"
            )


def _masks(batch: Batch) -> dict[str, Tensor]:
    """The batch's masks, a ``(b,)`` all-True mask for any modality without one."""
    given = dict(batch.get("masks") or {})
    out = {}
    for name, x in batch["inputs"].items():
        out[name] = (
            given[name]
            if name in given
            else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        )
    return out


def _presence(mask: Tensor) -> Tensor:
    """``(b,)``: a ``(b,)`` mask itself, or whether a ``(b, t)`` mask keeps any token."""
    return mask if mask.dim() == 1 else mask.any(dim=-1)


def _drop(mask: Tensor, dropped: Tensor) -> Tensor:
    """``mask`` with every entry of the ``(b,)`` ``dropped`` samples set to False."""
    keep = ~dropped
    return mask & (keep if mask.dim() == 1 else keep.unsqueeze(-1))


def _replace(
    batch: Batch,
    *,
    inputs: Mapping[str, Tensor] | None = None,
    masks: Mapping[str, Tensor] | None = None,
) -> dict[str, Any]:
    out = dict(batch)
    out["inputs"] = {**batch["inputs"], **(inputs or {})}
    out["masks"] = {**_masks(batch), **(masks or {})}
    return out


class ModalityDropout:
    """Drop whole modalities per sample at ``rate``, never every modality of a sample.

    Each listed modality of each sample is dropped independently with probability
    ``rate``. If that would leave a sample with no present modality although it had
    one, one of the modalities dropped from it is kept, chosen uniformly at random.

    Args:
        rate: drop probability in ``[0, 1]``.
        modalities: the modalities that may be dropped (default every modality of the batch).
        generator: random source (default torch's global generator).
    """

    def __init__(
        self,
        rate: float,
        *,
        modalities: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"ModalityDropout: rate must be in [0, 1], got {rate}")
        if modalities is not None and len(modalities) == 0:
            raise ConfigError(
                "ModalityDropout: modalities must name at least one modality (or be None)"
            )
        self.rate = float(rate)
        self.modalities = None if modalities is None else tuple(modalities)
        self.generator = generator

    def __call__(self, batch: Batch) -> dict[str, Any]:
        names = sorted(batch["inputs"]) if "inputs" in batch else []
        droppable = list(self.modalities) if self.modalities is not None else names
        _check_batch(batch, droppable, "ModalityDropout")
        masks = _masks(batch)
        present = torch.stack([_presence(masks[n]) for n in names], dim=1)  # (b, m)
        b, m = present.shape
        device = present.device
        can_drop = torch.tensor([n in droppable for n in names], device=device)
        draw = torch.rand((b, m), generator=self.generator).to(device)
        dropped = (draw < self.rate) & can_drop & present
        emptied = ~(present & ~dropped).any(dim=1) & present.any(dim=1)
        if bool(emptied.any()):
            pick = (
                torch.rand((b, m), generator=self.generator).to(device).masked_fill(~dropped, -1.0)
            )
            restore = torch.zeros_like(dropped)
            restore[torch.arange(b, device=device), pick.argmax(dim=1)] = True
            dropped = dropped & ~(restore & emptied.unsqueeze(1))
        new = {n: _drop(masks[n], dropped[:, j]) for j, n in enumerate(names) if n in droppable}
        return _replace(batch, masks=new)

    def __repr__(self) -> str:
        return f"ModalityDropout(rate={self.rate}, modalities={self.modalities})"


class MissingModality:
    """Test-time corruption: modality ``name`` is missing from every sample (mask all False)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, batch: Batch) -> dict[str, Any]:
        _check_batch(batch, [self.name], "MissingModality")
        mask = _masks(batch)[self.name]
        return _replace(batch, masks={self.name: torch.zeros_like(mask)})

    def __repr__(self) -> str:
        return f"MissingModality({self.name!r})"


class GaussianNoise:
    """Test-time corruption of modality ``name``.

    Float inputs get additive Gaussian noise of absolute std ``scale``. The loaders
    standardise their float features (per feature or per modality, with training
    statistics), so ``scale`` is in units of the training std of the features.

    Integer token ids (``text``) cannot take additive noise: there ``scale`` is the
    fraction of tokens, among those that are not ``pad_id``, replaced by ids drawn
    uniformly from ``[2, vocab_size)`` (0 pad, 1 unknown); ``vocab_size`` is then
    required and ``scale`` must be in ``[0, 1]``.

    Args:
        name: modality to corrupt.
        scale: noise std (float inputs) or replaced fraction (token ids).
        seed: seed of the transform's own generator; a fresh transform with the same
            seed corrupts the same batches the same way.
        features: only the first ``features`` entries of the last axis get noise
            (for ``tabular``: ``meta["num_numeric"]``, leaving categorical codes intact).
        vocab_size: size of the vocabulary, for token ids.
        pad_id: id of padding, never replaced.
    """

    def __init__(
        self,
        name: str,
        scale: float,
        *,
        seed: int = 0,
        features: int | None = None,
        vocab_size: int | None = None,
        pad_id: int = 0,
    ) -> None:
        if scale < 0:
            raise ConfigError(f"GaussianNoise: scale must be >= 0, got {scale}")
        if features is not None and features < 0:
            raise ConfigError(f"GaussianNoise: features must be >= 0, got {features}")
        self.name = name
        self.scale = float(scale)
        self.features = features
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def for_spec(
        cls, name: str, spec: ModalitySpec, scale: float, *, seed: int = 0
    ) -> GaussianNoise:
        """The noise that suits modality ``name`` of kind ``spec.kind``.

        ``tabular``: only the numeric columns (``meta["num_numeric"]``), categorical
        codes stay valid; ``text``: token replacement with the spec's ``vocab_size`` and
        ``pad_id``; every other kind: additive noise on all features.
        """
        meta = spec.meta
        if spec.kind == "tabular":
            return cls(name, scale, seed=seed, features=int(meta["num_numeric"]))
        if spec.kind == "text":
            return cls(
                name,
                scale,
                seed=seed,
                vocab_size=int(meta["vocab_size"]),
                pad_id=int(meta.get("pad_id", 0)),
            )
        return cls(name, scale, seed=seed)

    def __call__(self, batch: Batch) -> dict[str, Any]:
        _check_batch(batch, [self.name], "GaussianNoise")
        x = batch["inputs"][self.name]
        if x.is_floating_point():
            noise = (
                torch.randn(x.shape, generator=self.generator).to(device=x.device, dtype=x.dtype)
                * self.scale
            )
            if self.features is not None:
                noise[..., self.features :] = 0.0
            return _replace(batch, inputs={self.name: x + noise})
        if self.vocab_size is None or self.vocab_size <= 2:
            raise ConfigError(
                f"GaussianNoise: modality {self.name!r} holds integer token ids ({x.dtype}); "
                f"noise replaces a fraction of tokens and needs vocab_size > 2, got {self.vocab_size}"
            )
        if self.scale > 1.0:
            raise ConfigError(
                f"GaussianNoise: for token ids scale is a fraction in [0, 1], got {self.scale}"
            )
        hit = (torch.rand(x.shape, generator=self.generator).to(x.device) < self.scale) & (
            x != self.pad_id
        )
        ids = torch.randint(2, self.vocab_size, x.shape, generator=self.generator).to(
            device=x.device, dtype=x.dtype
        )
        return _replace(batch, inputs={self.name: torch.where(hit, ids, x)})

    def __repr__(self) -> str:
        return f"GaussianNoise({self.name!r}, scale={self.scale})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Batch], dict[str, Any]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: Batch) -> dict[str, Any]:
        out: dict[str, Any] = dict(batch)
        for t in self.transforms:
            out = t(out)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"
