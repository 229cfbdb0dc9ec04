"""The stand-in for a missing query or conditioner: the modality's running input mean.

Shape legend: ``b`` batch, ``t`` tokens, ``d_i`` input features of modality ``i``.

A query-centric strategy (``multihead_cross_attention`` with one query modality,
``film``) has no output path without the modality that queries or conditions: its
output map is trained on representations that always carry that modality. A stand-in
built from *another* modality (the context's projection as the query, the mean of the
other modalities' projections as the conditioner) feeds that path a vector read
through weights fitted to the missing modality, whose effect on the output depends on
how independently learned projections happen to line up: above or below chance by
luck. (``cross_attention`` keeps the context mean as its query: there query and
context are summed in one space and read by one map; see
:mod:`mmfuse.fusions.attention`.)

The stand-in used instead is mean imputation: the running mean ``mu_i`` of the missing
modality's own inputs (over present samples and valid tokens) seen in training,
passed through the modality's own projection, so the strategy sees its *average*
query or conditioner and everything else about the sample is real. To first order
this is the output averaged over the missing modality's values (the missing
modality's evidence cancels out, the present ones' stays). For a linear projection
``W mu + c`` is the mean of the projected inputs, so the stand-in follows the
projection as it trains, and the projection gets a gradient from every training row
whose modality is missing (e.g. under modality dropout).

``mu_i`` is a bias-corrected exponential moving average (as Adam's moments), updated in
training mode only, with rate ``r = momentum`` per batch in which the modality has a
present row::

    m_i   <- (1 - r) m_i + r mean_batch(x_i)          (m_i = 0 at the start)
    rho_i <- (1 - r) rho_i                            (rho_i = 1 at the start)
    mu_i   = m_i / (1 - rho_i)                        (0 before any batch)

so ``mu_i`` is the plain mean of the first batch, then a weighted mean of the batch
means with weights ``(1 - r)^age``. A batch without masks costs three small tensor ops
for all the modalities together and never waits for the device. A checkpoint written
before these buffers existed loads with ``mu = 0`` (the stand-in is then the
projection's bias).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RunningMeans"]


class RunningMeans(nn.Module):
    """Running input means of several modalities (module docstring).

    Buffers: ``mean`` ``(sum_i d_i,)``, the uncorrected averages ``m_i`` concatenated in
    the order of ``dims``, and ``decay`` ``(n,)``, each modality's ``rho_i``.

    Args:
        dims: modality -> ``d_i``, in the order the strategy passes them to :meth:`update`.
        momentum: the rate ``r`` of the moving average.
    """

    def __init__(self, dims: Mapping[str, int], *, momentum: float = 0.1) -> None:
        super().__init__()
        self.names = tuple(dims)
        self.momentum = float(momentum)
        bounds = [0]
        for d in dims.values():
            bounds.append(bounds[-1] + int(d))
        self._slices = {n: slice(a, b) for n, a, b in zip(self.names, bounds[:-1], bounds[1:], strict=True)}
        self.register_buffer("mean", torch.zeros(bounds[-1]))
        self.register_buffer("decay", torch.ones(len(self.names)))

    @torch.no_grad()
    def update(self, xs: Sequence[Tensor], masks: Sequence[Tensor] | None) -> None:
        """Fold one training batch in (no-op in eval mode; no host-device sync).

        Args:
            xs: per modality (order of ``dims``) its ``(b, d_i)`` or ``(b, t, d_i)``
                inputs (values of missing rows and padded tokens are ignored).
            masks: per modality its ``(b,)`` / ``(b, t)`` bool keep-mask, or ``None``
                when every row and token is valid (the fast path).
        """
        if not self.training:
            return
        r = self.momentum
        if masks is None:
            flat = [x.detach().reshape(-1, x.shape[-1]) for x in xs]
            batch = flat[0].mean(dim=0) if len(flat) == 1 else torch.cat(flat, dim=-1).mean(dim=0)
            self.mean.lerp_(batch.to(self.mean.dtype), r)
            self.decay.mul_(1.0 - r)
            return
        for i, (name, x, mask) in enumerate(zip(self.names, xs, masks, strict=True)):
            flat = x.detach().reshape(-1, x.shape[-1]).to(self.mean.dtype)
            w = mask.reshape(-1, 1).to(flat.dtype)
            n = w.sum()
            rate = (n > 0).to(flat.dtype) * r  # a batch with no present row changes nothing
            self.mean[self._slices[name]].lerp_((flat * w).sum(dim=0) / n.clamp_min(1.0), rate)
            self.decay[i : i + 1].mul_(1.0 - rate)

    def value(self, name: str) -> Tensor:
        """``(d_i,)``: the bias-corrected running mean ``mu_i`` of one modality."""
        i = self.names.index(name)
        return self.mean[self._slices[name]] / (1.0 - self.decay[i]).clamp_min(1e-12)

    @torch.no_grad()
    def assign(self, name: str, value: Tensor) -> None:
        """Set ``mu`` of one modality to ``value`` ``(d_i,)`` (e.g. a known data mean):
        ``m_i = value``, ``rho_i = 0``."""
        self.mean[self._slices[name]] = value
        self.decay[self.names.index(name)] = 0.0

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the running means existed: load them with mu = 0
        for name, buf in (("mean", self.mean), ("decay", self.decay)):
            state_dict.setdefault(prefix + name, torch.full_like(buf, 1.0 if name == "decay" else 0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        dims = {n: s.stop - s.start for n, s in self._slices.items()}
        return f"{dims}, momentum={self.momentum}"
