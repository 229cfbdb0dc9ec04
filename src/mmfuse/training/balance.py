"""Balanced multimodal training: keep the modality that learns fastest from starving the others.

Shape legend: ``b`` batch, ``m`` modalities (``model.modalities`` order), ``d_i``
encoder features of modality ``i``, ``k`` classes. Masks are bool, True means keep.

Joint training of a fused model lets the modality that learns fastest dominate the
gradient: the others' encoders stay under-trained ("modality imbalance"; on
avdigits the audio encoder learns, the image encoder much less). Selected by
``TrainConfig.balance`` (a :class:`~mmfuse.training.config.BalanceOptions`: the method and
its options, ``balance.<option>`` in settings), each method below works with every registered fusion
strategy and any number of modalities unless noted.

Per-modality logits. No strategy built by :func:`mmfuse.models.build_model` has a
per-modality path to the classes: feature-level late and gated fusion have
per-modality terms in the fused *feature* space, but the MLP head after them is
nonlinear, so they do not decompose into per-modality logits (the decomposition
OGM-GE reads off a concatenation followed by one linear layer). Every method
therefore reads per-modality logits ``u_i = A_i pool(e_i) + c_i`` from one linear
auxiliary head per modality on the pooled output of its encoder ``e_i`` (masked
mean over valid tokens for token outputs). The same construction applies to every
strategy, which is what makes every method apply to every strategy. The heads live
in the :class:`Balancer` (trained by the same optimizer), not in the model: the
model's prediction, weights and checkpoints are those of the plain model.

Losses: ``L_f = CE(model(x), y)`` the fused loss; ``L_i`` the cross-entropy of
``u_i`` averaged over the samples where modality ``i`` is present (0 when none is).

- ``aux``: ``L = L_f + w * sum_i L_i`` with ``w = balance.weight``: every encoder
  also learns to classify on its own. All strategies, any ``m``.
- ``gblend``: Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020, online form):
  ``L = w_f L_f + sum_i w_i L_i``. Every ``balance.every`` epochs the losses of the
  ``m + 1`` outputs are measured (eval mode) on the validation split (``L*``) and on a
  fixed random subset of the training split of the same size (``L``); between two
  measurements ``n`` and ``n + N``: ``G = L*_n - L*_{n+N}`` (generalisation gained),
  ``O = (L*_{n+N} - L_{n+N}) - (L*_n - L_n)`` (overfitting gained), and
  ``w_j = (G_j / O_j^2) / sum_l (G_l / O_l^2)``. An output whose validation loss rose
  (``G <= 0``) gets weight 0; ``|O|`` is floored at ``balance.floor`` nats (0.01 by
  default); when no output gained the weights stay as they were. The floor is not in
  the paper: early in training no output overfits yet, ``O`` is measurement noise
  near 0, and ``G / O^2`` then hands all the weight to whichever output's gap
  happened to move least (on avdigits, with a floor of ``1e-8``, the image head took
  weight 1.0 after the second epoch, the fused output stopped training and early
  stopping ended the fit at 0.55 accuracy); below 0.01 nats a gap change is well
  inside the noise of a validation loss over a few hundred samples. Weights start uniform, ``1 / (m + 1)``. All
  strategies, any ``m``; needs a validation split.
- ``ogm_ge``: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng
  et al., CVPR 2022), **two modalities only**. Per batch, over the samples where
  both are present: scores ``s_i = sum_n softmax(u_i)[n, y_n]``, discrepancy ratio
  ``rho_a = s_a / s_b`` (and ``rho_b = 1 / rho_a``). The dominant modality
  (``rho > 1``) gets ``k = 1 - tanh(alpha * rho)`` (``alpha = balance.alpha``), the other ``k = 1``: Eq. (10) of the
  paper, as in the authors' code (``GeWu-Lab/OGM-GE_CVPR2022``, ``main.py``), which
  jumps from 1 to ``1 - tanh(alpha)`` at ``rho = 1`` (the smooth variant
  ``1 - tanh(alpha * relu(rho - 1))`` is *not* what was published). After the
  backward pass every gradient of encoder ``i`` becomes ``k_i g`` and then (GE)
  ``k_i g + N(0, std(k_i g)^2 + 1e-8)``, the std taken over the elements of that
  parameter's gradient, for both encoders. Two differences from the authors' code:
  their encoders are ResNets and they modulate the 4-d convolution weights only;
  here every encoder parameter with more than one element is modulated; and their
  per-modality logits are the two halves of the concatenation's linear layer, here
  the auxiliary heads, trained on *detached* encoder outputs so that they only
  measure each modality (the encoders get the fused loss alone, as in the paper).
  All strategies, ``m = 2`` (a :class:`TrainConfigError` otherwise).
- ``mmpareto``: MMPareto (Wei & Hu, ICML 2024). Encoder ``i`` is shared by two
  objectives, ``L_f`` and ``L_i``, with gradients ``g_f`` and ``g_i`` on its
  parameters. If ``cos(g_f, g_i) > 0`` the weights are ``(1/2, 1/2)``; otherwise the
  two-gradient MGDA min-norm solution ``a = clip((g_i - g_f) . g_i / |g_f - g_i|^2, 0,
  1)``, weights ``(a, 1 - a)``. Then, per parameter tensor, ``g = 2 a g_f + 2 (1 - a)
  g_i`` is rescaled to at least the norm of the summed gradient ``|g_f + g_i|`` and
  multiplied by ``gamma = balance.gamma`` (1.5 in the paper's code). The fusion, the
  model head and the auxiliary heads get the plain gradient of ``L_f + sum_i L_i``.
  All strategies, any ``m`` (every encoder is its own two-objective problem).

Why MMPareto as the multi-modality method, rather than MLA (Zhang et al., CVPR 2024):
MLA trains the modalities in alternation through one shared head and predicts with
a test-time, uncertainty-weighted combination of per-modality outputs. That replaces
the fusion strategy at both training and test time by a late-fusion-like structure,
so it cannot be "the same model, trained balanced" for gated, tensor or attention
fusion. MMPareto keeps the model and its prediction untouched and acts only on the
encoders' gradients, so it composes with every strategy and any number of
modalities. It also builds on the auxiliary-loss baseline (``aux``), which it only
changes where the two objectives of an encoder conflict, so the two are directly
comparable. (Which of the two scores higher on the papers' own benchmarks was not
re-checked here; the choice rests on the design.)

With a method on, the ``train_loss`` that :func:`~mmfuse.training.fit` logs is the
method's training objective above, not the fused cross-entropy alone; ``val_loss``
(early stopping) stays the fused model's cross-entropy. OGM-GE modulates every step
of the fit (the authors' code has a window of epochs, by default the first half).

Multi-process training (DDP): ``ogm_ge`` and ``mmpareto`` read per-batch gradient
statistics of one process and would make the processes' weights diverge; they
raise a :class:`TrainConfigError` when the world size is above 1. ``mmpareto``
also refuses 16-bit mixed precision (its loss scaling would mix scaled and
unscaled gradients); ``bf16-mixed`` is fine. Every method needs a
classification task (``binary`` or ``multiclass``).

Diagnostic: :func:`modality_probe_accuracy` measures, for any fused model
(balanced or not), how well each modality's encoder *inside* the model classifies
on its own (a linear probe fitted on its frozen pooled features).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.data._base import DatasetSplits, MultimodalDataset
from mmfuse.functional import masked_mean
from mmfuse.fusions import has_own_loss
from mmfuse.models.multimodal import MultimodalModel
from mmfuse.training.config import TrainConfig, TrainConfigError
from mmfuse.training.metrics import iter_batches, to_device

__all__ = [
    "BalanceMethod",
    "Balancer",
    "balance_callbacks",
    "balance_method_options",
    "balance_methods",
    "gblend_weights",
    "make_balancer",
    "modality_probe_accuracy",
    "ogm_coefficients",
    "pareto_weights",
    "pooled_features",
    "register_balance_method",
]

_CLASSIFICATION = ("binary", "multiclass")


# ------------------------------------------------------------------ the equations
def ogm_coefficients(scores: Mapping[str, float | Tensor], alpha: float) -> dict[str, float]:
    """OGM-GE's modulation coefficients (Peng et al. 2022, Eq. 10) of two modalities.

    Args:
        scores: modality -> ``s_i``, the summed softmax probability of the true class.
        alpha: modulation strength.

    Returns:
        modality -> ``k_i``: ``1 - tanh(alpha * rho_i)`` for the one with
        ``rho_i = s_i / s_j > 1``, 1 for the other (both 1 on a tie or a zero score).
    """
    if len(scores) != 2:
        raise TrainConfigError(f"ogm_ge: expected the scores of 2 modalities, got {len(scores)} ({sorted(scores)})")
    (a, s_a), (b, s_b) = ((m, float(s)) for m, s in scores.items())
    coeffs = {a: 1.0, b: 1.0}
    if s_a <= 0 or s_b <= 0:
        return coeffs
    rho = s_a / s_b
    if rho > 1:
        coeffs[a] = 1.0 - math.tanh(alpha * rho)
    elif rho < 1:
        coeffs[b] = 1.0 - math.tanh(alpha / rho)
    return coeffs


def gblend_weights(
    prev_train: Tensor, prev_val: Tensor, train: Tensor, val: Tensor, *, floor: float = 0.01
) -> Tensor | None:
    """Gradient-Blending weights (Wang et al. 2020) from losses at two checkpoints.

    All arguments are ``(j,)`` losses of the ``j`` outputs (train and validation,
    at checkpoint ``n`` and ``n + N``). ``G = val_n - val_{n+N}``, ``O = (val_{n+N} -
    train_{n+N}) - (val_n - train_n)``, ``w = max(G, 0) / max(O^2, floor^2)``, normalised
    to sum 1. ``None`` when no output's validation loss fell (keep the old weights).
    """
    g = (prev_val - val).double()
    o = ((val - train) - (prev_val - prev_train)).double()
    w = g.clamp_min(0) / (o * o).clamp_min(floor * floor)
    total = w.sum()
    if not bool(total > 0) or not bool(torch.isfinite(total)):
        return None
    return (w / total).to(train.dtype)


def pareto_weights(g_fused: Tensor, g_uni: Tensor) -> tuple[float, float]:
    """MMPareto's weights ``(a, 1 - a)`` of the fused and unimodal gradients of one encoder.

    ``(1/2, 1/2)`` when ``cos(g_fused, g_uni) > 0`` (or either is zero), otherwise the
    minimum-norm point of their convex hull: ``a = clip((g_uni - g_fused) . g_uni /
    |g_fused - g_uni|^2, 0, 1)``.
    """
    f, u = g_fused.double().flatten(), g_uni.double().flatten()
    ff, uu, fu = float(f @ f), float(u @ u), float(f @ u)
    if ff == 0 or uu == 0 or fu > 0:
        return 0.5, 0.5
    denom = ff + uu - 2 * fu
    a = min(max((uu - fu) / denom, 0.0), 1.0) if denom > 0 else 0.5
    return a, 1.0 - a


# ---------------------------------------------------------------- model plumbing
def _presence(feat: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(feat.shape[0], dtype=torch.bool, device=feat.device)
    return mask if mask.dim() == 1 else mask.any(dim=1)


def pooled_features(
    model: MultimodalModel, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Encoder outputs from :meth:`MultimodalModel.encode` as ``(b, d_i)`` vectors
    (masked mean over valid tokens) and their ``(b,)`` presence."""
    pooled, present = {}, {}
    for m in model.modalities:
        x, mask = feats[m], masks.get(m)
        if x.dim() == 3:
            x = masked_mean(x, mask if mask is not None and mask.dim() == 2 else None, dim=1)
        pooled[m] = x
        present[m] = _presence(feats[m], mask)
    return pooled, present


def _masked_ce(logits: Tensor, target: Tensor, present: Tensor) -> Tensor:
    """Cross-entropy averaged over the present samples (0 when none is)."""
    per = F.cross_entropy(logits.float(), target, reduction="none")
    w = present.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1.0)


def _num_classes(model: MultimodalModel) -> int:
    config = getattr(model, "config", None)
    if isinstance(config, Mapping) and "num_classes" in config:
        return int(config["num_classes"])
    if isinstance(model.head, nn.Identity):
        return int(model.fusion.output_dim)
    linears = [mod for mod in model.head.modules() if isinstance(mod, nn.Linear)]
    if not linears:
        raise TrainConfigError(
            "balance: cannot tell the class count of a model without config, head Linear or decision-level fusion"
        )
    return int(linears[-1].out_features)


def _encoder_params(model: MultimodalModel, m: str) -> list[nn.Parameter]:
    return [p for p in model.encoders[m].parameters() if p.requires_grad]


# ------------------------------------------------------------ the methods' registry
class BalanceMethod:
    """One balancing method: what it adds to a training step. Stateless: the state (heads,
    G-Blending weights, this step's coefficients) lives in the :class:`Balancer`, so that
    checkpoints keep their names whatever the method.

    A new method is a subclass with a ``name`` and the ``options`` it reads, registered with
    :func:`register_balance_method`; the settings accept the registered names (and
    :data:`~mmfuse.training.config.BALANCE_METHODS` lists them).
    """

    name: ClassVar[str]
    #: the :class:`~mmfuse.training.config.BalanceOptions` fields it reads: they, and only
    #: they, enter the training key beside the method's name
    options: ClassVar[tuple[str, ...]] = ()
    #: the auxiliary heads read detached encoder outputs (they only measure each modality)
    detach_heads: ClassVar[bool] = False
    #: needs a validation split (and is re-estimated on it every ``balance.every`` epochs)
    needs_validation: ClassVar[bool] = False
    #: its gradient statistics are per process: refused under DDP
    single_process: ClassVar[bool] = False

    def check(self, balancer: Balancer, cfg: TrainConfig) -> None:
        """Refuse a model or settings the method cannot train (a :class:`TrainConfigError`)."""

    def loss(self, balancer: Balancer, model: MultimodalModel, fused: Tensor, uni: Mapping[str, Tensor],
             logits: Mapping[str, Tensor], present: Mapping[str, Tensor], y: Tensor) -> Tensor:
        """The training loss from the fused loss ``L_f`` and the per-modality losses ``L_i``."""
        raise NotImplementedError

    def after_backward(self, balancer: Balancer, model: MultimodalModel) -> None:
        """Change the encoders' gradients after the backward pass (nothing by default)."""


_METHODS: dict[str, type[BalanceMethod]] = {}


def register_balance_method(cls: type[BalanceMethod]) -> type[BalanceMethod]:
    """Class decorator: make ``cls`` the method named ``cls.name``."""
    from mmfuse.training.config import BalanceOptions

    unknown = sorted(set(cls.options) - set(BalanceOptions.option_names()))
    if unknown:
        raise TrainConfigError(f"balance method {cls.name!r}: reads unknown options {unknown}: expected some of "
                               f"{BalanceOptions.option_names()}")
    _METHODS[cls.name] = cls
    return cls


def balance_methods() -> list[str]:
    """The registered methods' names, in registration order."""
    return list(_METHODS)


def balance_method_options() -> dict[str, tuple[str, ...]]:
    """name -> the options each registered method reads, in registration order."""
    return {name: cls.options for name, cls in _METHODS.items()}


@register_balance_method
class Aux(BalanceMethod):
    """``L = L_f + w * sum_i L_i``."""

    name = "aux"
    options = ("weight",)

    def loss(self, balancer, model, fused, uni, logits, present, y):  # type: ignore[no-untyped-def]
        return fused + balancer.weight * sum(uni.values())


@register_balance_method
class GradientBlending(BalanceMethod):
    """``L = w_f L_f + sum_i w_i L_i``, the weights re-estimated on validation."""

    name = "gblend"
    options = ("every", "floor")
    needs_validation = True

    def loss(self, balancer, model, fused, uni, logits, present, y):  # type: ignore[no-untyped-def]
        w = balancer.blend.to(fused.dtype)
        return w[0] * fused + sum(w[i + 1] * uni[m] for i, m in enumerate(balancer.modalities))


@register_balance_method
class OgmGe(BalanceMethod):
    """The dominant encoder's gradients scaled by ``1 - tanh(alpha * rho)``, plus noise."""

    name = "ogm_ge"
    options = ("alpha",)
    detach_heads = True
    single_process = True

    def check(self, balancer: Balancer, cfg: TrainConfig) -> None:
        if len(balancer.modalities) != 2:
            raise TrainConfigError(
                f"balance='ogm_ge': expected exactly 2 modalities, got {len(balancer.modalities)} "
                f"({list(balancer.modalities)}); use 'mmpareto' or 'gblend' for more"
            )

    def loss(self, balancer, model, fused, uni, logits, present, y):  # type: ignore[no-untyped-def]
        both = torch.stack([present[m] for m in balancer.modalities]).all(dim=0)
        with torch.no_grad():
            scores = {
                m: (torch.softmax(logits[m].float(), dim=-1).gather(1, y[:, None])[:, 0] * both).sum()
                for m in balancer.modalities
            }
        balancer.coeffs = ogm_coefficients(scores, balancer.alpha)
        return fused + sum(uni.values())  # the heads learn on detached features

    def after_backward(self, balancer: Balancer, model: MultimodalModel) -> None:
        for m, k in balancer.coeffs.items():
            for p in _encoder_params(model, m):
                if p.grad is None:
                    continue
                p.grad.mul_(k)
                if p.grad.numel() > 1:
                    std = float(p.grad.std()) + 1e-8
                    p.grad.add_(torch.randn_like(p.grad) * std)


@register_balance_method
class MMPareto(BalanceMethod):
    """Each encoder's gradient: the min-norm point of its fused and unimodal gradients, rescaled."""

    name = "mmpareto"
    options = ("gamma",)
    single_process = True

    def check(self, balancer: Balancer, cfg: TrainConfig) -> None:
        if str(cfg.precision).startswith("16"):
            raise TrainConfigError(
                f"balance='mmpareto': expected precision '32-true' or 'bf16-mixed', got {cfg.precision!r} "
                f"(16-bit loss scaling would mix scaled and unscaled gradients)"
            )

    def loss(self, balancer, model, fused, uni, logits, present, y):  # type: ignore[no-untyped-def]
        # each encoder's gradient from each of its two objectives
        balancer._pareto = {}
        if torch.is_grad_enabled():
            params = {m: _encoder_params(model, m) for m in balancer.modalities}
            flat = [p for m in balancer.modalities for p in params[m]]
            g_all = torch.autograd.grad(fused, flat, retain_graph=True, allow_unused=True)
            start = 0
            for m in balancer.modalities:
                g_f = list(g_all[start:start + len(params[m])])
                start += len(params[m])
                g_u = list(torch.autograd.grad(uni[m], params[m], retain_graph=True, allow_unused=True))
                a, b = pareto_weights(_flat(g_f, params[m]), _flat(g_u, params[m]))
                balancer._pareto[m] = (a, b, g_f, g_u)
        return fused + sum(uni.values())

    def after_backward(self, balancer: Balancer, model: MultimodalModel) -> None:
        for m, (a, b, g_f, g_u) in balancer._pareto.items():
            for p, gf, gu in zip(_encoder_params(model, m), g_f, g_u, strict=True):
                if p.grad is None or (gf is None and gu is None):
                    continue
                gf = torch.zeros_like(p) if gf is None else gf
                gu = torch.zeros_like(p) if gu is None else gu
                new = 2 * a * gf + 2 * b * gu
                total, norm = float((gf + gu).norm()), float(new.norm())
                if norm > 0 and total > norm:
                    new = new * (total / norm)
                p.grad.copy_(balancer.gamma * new)
        balancer._pareto = {}


# ---------------------------------------------------------------------- balancer
class Balancer(nn.Module):
    """The auxiliary heads and the state of one balancing method (see the module docstring).

    Args:
        model: the fused model it trains (read for its modalities and dimensions;
            the heads are not added to it).
        cfg: the training settings (``cfg.balance``: the method and its options).
    """

    def __init__(self, model: MultimodalModel, cfg: TrainConfig) -> None:
        super().__init__()
        opts = cfg.balance
        if opts.method not in _METHODS:
            raise TrainConfigError(f"balance: expected one of {balance_methods()}, got {opts.method!r}")
        if not isinstance(model, MultimodalModel):
            raise TrainConfigError(
                f"balance={opts.method!r}: expected a MultimodalModel (encoders + fusion + head), "
                f"got {type(model).__name__}"
            )
        if has_own_loss(model.fusion):  # trusted: its evidential loss would be dropped unseen
            raise TrainConfigError(
                f"balance={opts.method!r}: {model.fusion.name!r} trains on a loss of its own "
                f"({type(model.fusion).__name__}.training_loss), which the balancing methods would replace "
                "with cross-entropy: train it without balance, or balance another strategy"
            )
        self.method: str = opts.method
        self.impl: BalanceMethod = _METHODS[opts.method]()
        self.modalities: tuple[str, ...] = model.modalities
        self.impl.check(self, cfg)
        self.weight = opts.weight
        self.alpha = opts.alpha
        self.gamma = opts.gamma
        self.floor = opts.floor
        k = _num_classes(model)
        dims = model.fusion.input_dims
        self.heads = nn.ModuleDict({m: nn.Linear(dims[m], k) for m in self.modalities})
        j = len(self.modalities) + 1
        # G-Blending state: weights of [fused, *modalities] and the last measurement
        self.register_buffer("blend", torch.full((j,), 1.0 / j))
        self.register_buffer("last_train", torch.zeros(j))
        self.register_buffer("last_val", torch.zeros(j))
        self.register_buffer("measured", torch.zeros((), dtype=torch.bool))
        self.coeffs: dict[str, float] = {}  # OGM-GE: this step's k per modality
        self._pareto: dict[str, tuple[float, float, list[Tensor | None], list[Tensor | None]]] = {}

    def unimodal_logits(self, model: MultimodalModel, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                        *, detach: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """modality -> ``(b, k)`` auxiliary-head logits, and modality -> ``(b,)`` presence."""
        pooled, present = pooled_features(model, feats, masks)
        logits = {m: self.heads[m](pooled[m].detach() if detach else pooled[m]) for m in self.modalities}
        return logits, present

    def training_loss(self, model: MultimodalModel, batch: Mapping[str, Any]) -> Tensor:
        """The training loss of one batch under this method (also prepares
        :meth:`after_backward` for ``ogm_ge`` and ``mmpareto``)."""
        y = batch["label"]
        feats, masks = model.encode(batch["inputs"], batch["masks"])
        fused = F.cross_entropy(model.classify(feats, masks).float(), y)
        logits, present = self.unimodal_logits(model, feats, masks, detach=self.impl.detach_heads)
        uni = {m: _masked_ce(logits[m], y, present[m]) for m in self.modalities}
        return self.impl.loss(self, model, fused, uni, logits, present, y)

    @torch.no_grad()
    def after_backward(self, model: MultimodalModel) -> None:
        """Modify the encoders' gradients as the method does (``ogm_ge``, ``mmpareto``)."""
        self.impl.after_backward(self, model)

    @torch.no_grad()
    def output_losses(self, model: MultimodalModel, dataset: MultimodalDataset, batch_size: int = 512) -> Tensor:
        """``(m + 1,)`` mean losses ``[L_f, L_1, ..., L_m]`` on ``dataset``, in eval mode."""
        was = (model.training, self.training)
        model.eval()
        self.eval()
        device = self.blend.device
        sums = torch.zeros(len(self.modalities) + 1, dtype=torch.float64)
        counts = torch.zeros_like(sums)
        try:
            for batch in iter_batches(dataset, batch_size):
                batch = to_device(batch, device)
                y = batch["label"]
                feats, masks = model.encode(batch["inputs"], batch["masks"])
                sums[0] += float(F.cross_entropy(model.classify(feats, masks).float(), y, reduction="sum"))
                counts[0] += y.shape[0]
                logits, present = self.unimodal_logits(model, feats, masks)
                for i, m in enumerate(self.modalities):
                    per = F.cross_entropy(logits[m].float(), y, reduction="none")
                    sums[i + 1] += float((per * present[m]).sum())
                    counts[i + 1] += float(present[m].sum())
        finally:
            model.train(was[0])
            self.train(was[1])
        return (sums / counts.clamp_min(1)).to(self.blend.dtype).to(device)

    def gblend_update(self, train: Tensor, val: Tensor) -> None:
        """Record one G-Blending measurement; re-weight from the previous one if any."""
        train, val = train.to(self.blend), val.to(self.blend)
        if bool(self.measured):
            w = gblend_weights(self.last_train, self.last_val, train, val, floor=self.floor)
            if w is not None:
                self.blend.copy_(w)
        self.last_train.copy_(train)
        self.last_val.copy_(val)
        self.measured.fill_(True)


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    if not params:
        return torch.zeros(0)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)])


def make_balancer(model: nn.Module, cfg: TrainConfig) -> Balancer | None:
    """The :class:`Balancer` that ``cfg.balance`` asks for, or ``None`` when it is off."""
    if cfg.balance.method is None:
        return None
    return Balancer(model, cfg)  # type: ignore[arg-type]


def balance_callbacks(balancer: Balancer | None, splits: DatasetSplits, cfg: TrainConfig) -> list[Any]:
    """The Lightning callbacks a fit with ``balancer`` needs (none without one)."""
    if balancer is None:
        return []
    if splits.task not in _CLASSIFICATION:
        raise TrainConfigError(
            f"balance={balancer.method!r}: expected a classification task {list(_CLASSIFICATION)}, "
            f"got {splits.name!r} with task {splits.task!r}"
        )
    if balancer.impl.needs_validation and len(splits.val) == 0:
        raise TrainConfigError(f"balance={balancer.method!r}: expected a validation split, got an empty one in "
                               f"{splits.name!r}")
    from mmfuse.training.balance_callback import (
        BalanceCallback,  # Lightning: imported when a fit needs it
    )

    return [BalanceCallback(balancer, splits, cfg.balance.every, cfg.seed)]


# -------------------------------------------------------------------- diagnostic
@torch.no_grad()
def _pooled_dataset(model: MultimodalModel, dataset: MultimodalDataset, batch_size: int
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    pooled: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    present: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    for batch in iter_batches(dataset, batch_size):
        batch = to_device(batch, device)
        feats, masks = model.encode(batch["inputs"], batch["masks"])
        p, k = pooled_features(model, feats, masks)
        for m in model.modalities:
            pooled[m].append(p[m].float().cpu())
            present[m].append(k[m].cpu())
    return ({m: torch.cat(v) for m, v in pooled.items()}, {m: torch.cat(v) for m, v in present.items()})


def _fit_probe(x: Tensor, y: Tensor, num_classes: int, steps: int, l2: float) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression ``(W, c)`` on standardised ``x``, full-batch L-BFGS."""
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    x, y = x.double(), y

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + c, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), c.detach()


def modality_probe_accuracy(
    model: nn.Module,
    splits: DatasetSplits,
    *,
    split: str = "test",
    steps: int = 100,
    l2: float = 1e-3,
    batch_size: int = 512,
) -> dict[str, float]:
    """How well each modality's encoder inside a fused model classifies on its own.

    For each modality, a linear probe (multinomial logistic regression with L2
    weight ``l2``, ``steps`` L-BFGS iterations from zero, features standardised with
    the training mean and std) is fitted on the frozen pooled encoder outputs of
    the training samples where it is present, and scored on ``split``. Compare with
    the same modality trained alone (:func:`mmfuse.models.build_unimodal_model`).

    Args:
        model: a trained :class:`~mmfuse.models.MultimodalModel` (balanced or not).
        splits: its dataset (a classification task).
        split: ``"test"`` or ``"val"``.

    Returns:
        modality -> accuracy on ``split`` over the samples where it is present (NaN
        when none is).
    """
    if not isinstance(model, MultimodalModel):
        raise TrainConfigError(f"modality_probe_accuracy: expected a MultimodalModel, got {type(model).__name__}")
    if splits.task not in _CLASSIFICATION:
        raise TrainConfigError(
            f"modality_probe_accuracy: expected a classification task {list(_CLASSIFICATION)}, got {splits.task!r}"
        )
    if split not in ("test", "val"):
        raise TrainConfigError(f"split: expected 'test' or 'val', got {split!r}")
    target = splits.test if split == "test" else splits.val
    if len(splits.train) == 0 or len(target) == 0:
        raise TrainConfigError(f"modality_probe_accuracy: {splits.name!r}: expected non-empty train and {split} splits")
    was = model.training
    model.eval()
    try:
        train_x, train_p = _pooled_dataset(model, splits.train, batch_size)
        eval_x, eval_p = _pooled_dataset(model, target, batch_size)
    finally:
        model.train(was)
    out: dict[str, float] = {}
    for m in model.modalities:
        x, y = train_x[m][train_p[m]], splits.train.labels[train_p[m]]
        xe, ye = eval_x[m][eval_p[m]], target.labels[eval_p[m]]
        if x.shape[0] == 0 or xe.shape[0] == 0:
            out[m] = float("nan")
            continue
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        w, c = _fit_probe((x - mean) / std, y, splits.num_classes, steps, l2)
        pred = (((xe - mean) / std).double() @ w + c).argmax(-1)
        out[m] = float((pred == ye).double().mean())
    return out
