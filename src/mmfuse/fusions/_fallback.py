"""The stand-in for a missing query or conditioner: trained, or the modality's running mean.

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

Which stand-in is used depends on what training saw, per modality:

- training batches had rows with the modality missing (modality dropout, or missing
  data): the strategy's *trained* stand-in, built from the present modalities (the
  context mean as the query, the mean of the present projections as the
  conditioner). Every layer after it was fitted to it, and it carries the present
  modalities' information into the slot; measured, it stays closer to the unimodal
  models than the running mean does when both are trained.
- training never saw the modality missing: the stand-in was never fitted, and the
  one built from other modalities is the lottery above; mean imputation is used.

Mean imputation: the running mean ``mu_i`` of the missing modality's own inputs (over present samples and valid tokens) seen in training,
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
means with weights ``(1 - r)^age``. Beside it, ``seen_missing_i`` becomes 1 at the first
training batch with a row whose modality ``i`` is missing (a row with no valid token)
and selects the trained stand-in from then on (``torch.where``: no host-device sync).
Batches without masks are sampled: the first and then every ``SAMPLE_EVERY``-th one
(1st, 33rd, 65th, ...) update the means, the others cost nothing but a counter. The
mean of the sampled batches estimates the same input mean (a training run of a few
hundred batches still averages thousands of rows), and the update's few tensor ops
are shared by ``SAMPLE_EVERY`` training calls (a per-call cost measured in
``benchmarks/peers.py``). Batches with masks (:meth:`RunningMeans.update` with masks,
:meth:`RunningMeans.update_rows`) always update: they also record whether training saw
a modality missing, which selects the stand-in. Under ``torch.compile`` every batch
updates (the update's ops are part of the compiled graph).
A checkpoint written before these buffers existed loads with ``seen_missing = 1``: it
keeps the stand-in it was trained and measured with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SAMPLE_EVERY", "RunningMeans"]

#: of the training batches without masks, the 1st and every SAMPLE_EVERY-th update the means
SAMPLE_EVERY = 32


class RunningMeans(nn.Module):
    """Running input means of several modalities (module docstring).

    Buffers: ``mean`` ``(sum_i d_i,)``, the uncorrected averages ``m_i`` concatenated in
    the order of ``dims``, ``decay`` ``(n,)``, each modality's ``rho_i``, and
    ``seen_missing`` ``(n,)``, 1 once training saw the modality missing in a row.

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
        self.register_buffer("seen_missing", torch.zeros(len(self.names)))
        # the modality of each column of ``mean`` (not saved: it follows from ``dims``)
        col = torch.tensor([i for i, d in enumerate(dims.values()) for _ in range(int(d))], dtype=torch.long)
        self.register_buffer("_column_modality", col, persistent=False)
        # training batches without masks seen (not saved: it only picks the sampled ones)
        self._unmasked_calls = 0

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
            # under torch.compile every batch updates: a Python counter changed in a
            # compiled forward would be a guard, recompiling the graph at every call
            if not torch.compiler.is_compiling():
                calls = self._unmasked_calls
                self._unmasked_calls = calls + 1
                if calls % SAMPLE_EVERY:  # not a sampled batch (module docstring)
                    return
            with torch.no_grad():
                flat = [x if x.dim() == 2 else x.reshape(-1, x.shape[-1]) for x in xs]
                if len(flat) == 1:
                    batch = flat[0].mean(dim=0)
                elif all(f.shape[0] == flat[0].shape[0] for f in flat):  # one mean over the rows
                    batch = torch.cat(flat, dim=-1).mean(dim=0)
                else:  # sequences and vectors: each its own number of rows
                    batch = torch.cat([f.mean(dim=0) for f in flat])
                self.mean.lerp_(batch if batch.dtype == self.mean.dtype else batch.to(self.mean.dtype), r)
                self.decay.mul_(1.0 - r)
            return
        for i, (name, x, mask) in enumerate(zip(self.names, xs, masks, strict=True)):
            flat = x.detach().reshape(-1, x.shape[-1]).to(self.mean.dtype)
            w = mask.reshape(-1, 1).to(flat.dtype)
            n = w.sum()
            rate = (n > 0).to(flat.dtype) * r  # a batch with no present row changes nothing
            self.mean[self._slices[name]].lerp_((flat * w).sum(dim=0) / n.clamp_min(1.0), rate)
            self.decay[i : i + 1].mul_(1.0 - rate)
            row_missing = ~mask.reshape(mask.shape[0], -1).any(dim=1)
            self.seen_missing[i : i + 1].copy_(torch.maximum(self.seen_missing[i], row_missing.any().to(flat.dtype)))

    def update_rows(self, xs: Sequence[Tensor], present: Tensor) -> None:
        """:meth:`update` for vector inputs with per-row presence, every modality at once
        (a fixed number of tensor ops whatever the number of modalities).

        Args:
            xs: per modality (order of ``dims``) its ``(b, d_i)`` inputs.
            present: ``(b, n)`` bool, modality present per row.
        """
        if not self.training:
            return
        r, col = self.momentum, self._column_modality
        x = torch.cat([t.detach() for t in xs], dim=-1).to(self.mean.dtype)  # (b, sum d_i)
        w = present.to(x.dtype)  # (b, n)
        n = w.sum(dim=0)  # (n,)
        rate = (n > 0).to(x.dtype) * r  # a modality with no present row changes nothing
        sums = (x * w[:, col]).sum(dim=0)
        self.mean.lerp_(sums / n.clamp_min(1.0)[col], rate[col])
        self.decay.mul_(1.0 - rate)
        self.seen_missing.copy_(torch.maximum(self.seen_missing, (~present).any(dim=0).to(x.dtype)))

    def value(self, name: str) -> Tensor:
        """``(d_i,)``: the bias-corrected running mean ``mu_i`` of one modality."""
        i = self.names.index(name)
        return self.mean[self._slices[name]] / (1.0 - self.decay[i]).clamp_min(1e-12)

    def trained(self, name: str) -> Tensor:
        """0-d bool: training saw ``name`` missing, so its trained stand-in is used."""
        i = self.names.index(name)
        return self.seen_missing[i] > 0

    def choose(self, name: str, trained: Tensor, mean_fill: Tensor) -> Tensor:
        """The stand-in for a missing ``name``: ``trained`` if training saw it missing,
        else ``mean_fill`` (the projected running mean), broadcast together."""
        return torch.where(self.trained(name), trained, mean_fill)

    @torch.no_grad()
    def assign(self, name: str, value: Tensor, *, seen_missing: bool = False) -> None:
        """Set ``mu`` of one modality to ``value`` ``(d_i,)`` (e.g. a known data mean):
        ``m_i = value``, ``rho_i = 0``, and whether training saw it missing."""
        i = self.names.index(name)
        self.mean[self._slices[name]] = value
        self.decay[i] = 0.0
        self.seen_missing[i] = float(seen_missing)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before these buffers existed keep the trained stand-in
        # they were measured with (seen_missing = 1); mu = 0
        for name, buf in (("mean", self.mean), ("decay", self.decay), ("seen_missing", self.seen_missing)):
            state_dict.setdefault(prefix + name, torch.full_like(buf, 0.0 if name == "mean" else 1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        dims = {n: s.stop - s.start for n, s in self._slices.items()}
        return f"{dims}, momentum={self.momentum}"
