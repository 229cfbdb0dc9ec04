"""The fusion contract shared by every strategy, and the registry.

Shape legend (used in every docstring of ``mmfuse.fusions``):

- ``b``   batch
- ``m``   modalities, in the fixed order ``fusion.modalities`` (sorted names)
- ``t_i`` tokens of modality ``i`` (sequence inputs only)
- ``d``   features (``d_i`` for modality ``i``, ``d_out`` for the output)

Masks are bool and ``True`` means *keep*, as in
:func:`torch.nn.functional.scaled_dot_product_attention`. A ``(b,)`` mask marks a
modality present or missing for each sample; a ``(b, t_i)`` mask marks the valid
tokens of a sequence (a row with no valid token is a missing modality). Where a
torch API means the opposite (``nn.MultiheadAttention``'s ``key_padding_mask``),
the conversion happens at that call, never in user-facing code.

Every input enters through :meth:`Fusion.forward`, which validates it, raises
:class:`FusionError` naming the modality, the expected and the actual value, and
hands the strategy a :class:`FusionBatch` in which the values of missing modalities
and padded tokens are already replaced by zeros. Those values therefore cannot
influence any output; each strategy still decides how a missing modality is
*treated* (excluded from a mean, masked out of attention, gated to zero...).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from mmfuse.errors import FusionError
from mmfuse.functional import masked_mean  # re-exported: strategies import it from here
from mmfuse.fusions._cost import Cost, CostText
from mmfuse.fusions._options import check_options, option_annotations
from mmfuse.space import Distribution

__all__ = [
    "Fusion",
    "FusionBatch",
    "FusionError",
    "FusionIntermediates",
    "create_fusion",
    "fusion_class",
    "has_own_loss",
    "list_fusions",
    "masked_mean",
    "masked_softmax",
    "register_fusion",
]




@dataclass
class FusionIntermediates:
    """What a strategy computed on the way to its output, for inspection.

    Every field is optional; a strategy fills what it has. Modality-indexed tensors
    follow ``fusion.modalities`` order along their ``m`` axis.

    Attributes:
        gates: gate values, keyed by what they gate (e.g. ``"gate"`` -> ``(b, 1)``,
            ``(b, d)`` or ``(b, m)``).
        attention: attention weights keyed by ``"query->key"`` pair (or layer name),
            each ``(b, heads, t_q, t_k)``; masked keys carry weight 0.
        modality_weights: ``(b, m)`` weight given to each modality (rows sum to 1
            over present modalities where the strategy has such weights).
        contributions: per-modality terms that add up to (or explain) the output,
            keyed by modality, each shaped like the output.
        present: ``(b, m)`` bool, the modality presence the strategy saw.
        extras: anything else a strategy exposes (FiLM gamma/beta, local fusion
            outputs, ...), keyed by name.
    """

    gates: dict[str, Tensor] | None = None
    attention: dict[str, Tensor] | None = None
    modality_weights: Tensor | None = None
    contributions: dict[str, Tensor] | None = None
    present: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def asdict(self) -> dict[str, Any]:
        """Fields that are set, as a plain dict."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in out.items() if v is not None and not (k == "extras" and not v)}


class FusionBatch:
    """Validated inputs as a strategy sees them.

    Attributes:
        inputs: modality -> ``(b, d_i)`` or ``(b, t_i, d_i)``, in ``modalities``
            order; values of missing modalities and of padded tokens are zero.
        present: ``(b, m)`` bool, modality present for each sample, in
            ``modalities`` order.
        token_masks: modality -> ``(b, t_i)`` bool for sequence inputs (already
            combined with presence: a missing modality has no valid token), ``None``
            for vector inputs.
        modalities: the fusion's fixed modality order.
        all_present: True when no mask was given (known without looking at the
            data): every modality present and every token valid, so a strategy may
            skip work that only masking needs. ``present`` and ``token_masks`` are
            then built on first read (all True), so a strategy that never reads
            them costs no tensor.
        all_vectors: every input is ``(b, d_i)`` (no sequence).
    """

    __slots__ = ("_present", "_token_masks", "all_present", "all_vectors", "inputs", "modalities")

    def __init__(
        self,
        *,
        inputs: dict[str, Tensor],
        present: Tensor | None,
        token_masks: dict[str, Tensor | None] | None,
        modalities: tuple[str, ...],
        all_present: bool = False,
        all_vectors: bool | None = None,
    ) -> None:
        if (present is None or token_masks is None) and not all_present:
            raise ValueError("FusionBatch: present and token_masks are required unless all_present")
        self.inputs = inputs
        self.modalities = modalities
        self.all_present = all_present
        self.all_vectors = all(x.dim() == 2 for x in inputs.values()) if all_vectors is None else all_vectors
        self._present = present
        self._token_masks = token_masks

    @property
    def present(self) -> Tensor:
        present = self._present
        if present is None:  # all present: built on first read
            x = next(iter(self.inputs.values()))
            present = self._present = x.new_ones((x.shape[0], len(self.modalities)), dtype=torch.bool)
        return present

    @property
    def token_masks(self) -> dict[str, Tensor | None]:
        masks = self._token_masks
        if masks is None:  # all present: every token valid, built on first read
            masks = {}
            for mod, x in self.inputs.items():
                masks[mod] = x.new_ones((1, 1), dtype=torch.bool).expand(x.shape[0], x.shape[1]) if x.dim() == 3 else None
            self._token_masks = masks
        return masks

    @property
    def batch_size(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def is_sequence(self, name: str) -> bool:
        return self.inputs[name].dim() == 3

    def presence(self, name: str) -> Tensor:
        """``(b,)`` bool presence of one modality."""
        return self.present[:, self.modalities.index(name)]

    def pooled(self, name: str) -> Tensor:
        """``(b, d_i)``: the vector input itself, or the masked mean of a sequence's valid tokens."""
        x = self.inputs[name]
        if x.dim() == 2:
            return x
        if self.all_present:
            return x.mean(dim=1)
        return masked_mean(x, self.token_masks[name], dim=1)

    def pooled_all(self) -> list[Tensor]:
        """:meth:`pooled` of every modality, in ``modalities`` order."""
        if self.all_vectors:
            inputs = self.inputs
            return [inputs[mod] for mod in self.modalities]
        return [self.pooled(mod) for mod in self.modalities]

    def as_sequence(self, name: str) -> tuple[Tensor, Tensor]:
        """``(b, t_i, d_i)`` tokens and their ``(b, t_i)`` keep-mask; a vector is one token."""
        x = self.inputs[name]
        if x.dim() == 3:
            mask = self.token_masks[name]
            assert mask is not None
            return x, mask
        return x.unsqueeze(1), self.presence(name).unsqueeze(1)


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` where masked-out entries get weight 0.

    A slice with every entry masked gives all-zero weights instead of NaN.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    return weights * mask.to(weights.dtype)


def _raise_if_all_missing(present: Tensor, modalities: tuple[str, ...]) -> None:
    some_present = present.any(dim=1)
    if not bool(some_present.all()):
        idx = int((~some_present).nonzero()[0, 0])
        raise FusionError(
            f"sample {idx}: expected at least one present modality, got every modality "
            f"({', '.join(modalities)}) missing"
        )


def _check_some_present(present: Tensor, modalities: tuple[str, ...]) -> None:
    """Refuse a sample with every modality missing, compiled or not.

    On the CPU the check runs eagerly (outside any compiled graph: ``torch.compile``
    breaks the graph here) and raises :class:`FusionError` naming the sample. On an
    accelerator it is an asynchronous device assertion, so ``forward`` never waits
    for the device; a failure surfaces at the next synchronisation as a
    ``RuntimeError`` carrying the same message.

    Under ``torch.export`` (and so ``torch.onnx.export(..., dynamo=True)``) there is no
    check: a graph holds no Python bool to raise on, and such a sample's output is then
    whatever the strategy computes from zeros. Whoever exports decides what that row
    means; :mod:`mmfuse.runs.export` makes it NaN.
    """
    if torch.compiler.is_exporting():
        return
    if present.is_cpu:
        # under torch.compile the data-dependent bool breaks the graph and the check runs
        # eagerly (no torch.compiler.disable here: building it imports torch._dynamo, 1+ s)
        _raise_if_all_missing(present, modalities)
    else:
        torch._assert_async(
            present.any(dim=1).all(),
            f"FusionError: expected at least one present modality per sample, got a sample with every "
            f"modality ({', '.join(modalities)}) missing",
        )


def has_own_loss(fusion: Any) -> bool:
    """Whether a strategy (its class or a module) trains on a loss of its own, a
    ``training_loss`` method (see :class:`Fusion`), instead of the task's."""
    return callable(getattr(fusion, "training_loss", None))


class Fusion(nn.Module):
    """Base class of every fusion strategy.

    Subclasses implement :meth:`fuse` and register with :func:`register_fusion`.
    The modality order is fixed here (sorted names) and never taken from the order
    of an input dict.

    A strategy with a training objective of its own (``trusted``) defines
    ``training_loss(info, target, *, epoch) -> Tensor``: the loss of a batch from the
    :class:`FusionIntermediates` of its forward, the ``(b,)`` class targets and the
    epoch (from 0). The training engine then trains on it in place of the task loss.

    Args:
        input_dims: modality name -> feature dimension ``d_i``.
        output_dim: feature dimension ``d_out`` of the fused output.
    """

    name: ClassVar[str] = ""
    #: fewest modalities the strategy is defined for
    min_modalities: ClassVar[int] = 1
    #: True when the output is already class log-probabilities (decision-level late
    #: fusion): a model then uses it as logits and adds no head of its own. Set per
    #: instance by strategies where it depends on options.
    outputs_logits: bool = False

    #: how :meth:`cost` reads, for ``docs/costs.md`` (``None``: no formula yet)
    cost_text: ClassVar[CostText | None] = None
    #: what ``mmfuse bench --tune`` tries for the strategy's own options, declared next to
    #: its constructor (see :mod:`mmfuse.space`); none: only the shared space is tuned
    search_space: ClassVar[dict[str, Distribution]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check every strategy's keyword options against its ``__init__`` annotations
        (:mod:`mmfuse.fusions._options`) before the body of that ``__init__`` runs."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        annotations: dict[str, Any] | None = None

        @functools.wraps(init)
        def checked_init(self: Fusion, *args: Any, **options: Any) -> None:
            nonlocal annotations
            if annotations is None:
                annotations = option_annotations(init)
            owner = type(self).name or cls.name or cls.__name__
            check_options(owner, annotations, {k: v for k, v in options.items() if k in annotations})
            init(self, *args, **options)

        cls.__init__ = checked_init  # type: ignore[method-assign]

    @classmethod
    def default(cls, option: str) -> Any:
        """The default value of constructor option ``option``, read from the signature."""
        return inspect.signature(cls.__init__).parameters[option].default

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        """Parameters and per-sample forward FLOPs at the default options, for ``m``
        modalities of width ``d`` with ``t`` tokens each (see :mod:`mmfuse.fusions.costs`).
        Raises :class:`FusionError` where the defaults refuse the shape."""
        raise NotImplementedError(f"{cls.__name__} has no cost formula")

    def __init__(self, *, input_dims: Mapping[str, int], output_dim: int) -> None:
        super().__init__()
        if not isinstance(input_dims, Mapping) or not input_dims:
            raise FusionError(f"input_dims: expected a non-empty mapping of modality -> int, got {input_dims!r}")
        for mod, dim in input_dims.items():
            if not isinstance(mod, str) or not mod:
                raise FusionError(f"input_dims: modality names must be non-empty strings, got {mod!r}")
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise FusionError(f"input_dims: modality {mod!r}: expected a positive int, got {dim!r}")
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise FusionError(f"output_dim: expected a positive int, got {output_dim!r}")
        if len(input_dims) < self.min_modalities:
            raise FusionError(
                f"{type(self).__name__}: expected at least {self.min_modalities} modalities, "
                f"got {len(input_dims)} ({sorted(input_dims)})"
            )
        self.modalities: tuple[str, ...] = tuple(sorted(input_dims))
        self.input_dims: dict[str, int] = {m: int(input_dims[m]) for m in self.modalities}
        self.output_dim = int(output_dim)
        self._modality_set = frozenset(self.modalities)
        self._dims: tuple[int, ...] = tuple(self.input_dims[m] for m in self.modalities)

    # ------------------------------------------------------------------ contract
    def forward(
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, FusionIntermediates]:
        """Fuse one batch.

        Args:
            inputs: modality -> ``(b, d_i)`` or ``(b, t_i, d_i)`` float tensor; every
                modality of ``self.modalities`` must be given (mark a missing one
                with a False mask), all of the module's dtype (under autocast: of
                one dtype) and on its device, with ``b >= 1`` (an empty batch is a
                :class:`FusionError`: it has no sample to fuse, and a data loader
                never yields one).
            masks: optional modality -> bool ``(b,)`` (present) or ``(b, t_i)``
                (valid tokens); True means keep.
            return_intermediates: also return a :class:`FusionIntermediates`.

        Returns:
            ``(b, d_out)`` (or ``(b, t, d_out)`` for strategies built with
            ``pool=False``), and the intermediates when asked.
        """
        batch = self.prepare(inputs, masks)
        fused, info = self.fuse(batch, need_intermediates=return_intermediates)
        if return_intermediates:
            if info is None:
                info = FusionIntermediates()
            if info.present is None or info.present is batch.present:
                # a copy: the presence may be the caller's own mask tensor
                info.present = batch.present.clone()
            return fused, info
        return fused

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates | None]:
        """Strategy body: validated batch in, ``(fused, intermediates)`` out.

        ``need_intermediates`` tells a strategy it may skip work that only the
        intermediates need (e.g. use a fused attention kernel that returns no weights);
        without it a strategy may return ``None`` for the intermediates.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------- validation
    def prepare(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> FusionBatch:
        """Validate ``inputs`` and ``masks`` and build the :class:`FusionBatch`.

        Without masks (``None`` or empty) this is a few attribute reads per modality
        and no tensor at all: no zeroing, no presence tensor (built only if a strategy
        reads it), no all-missing check. With masks, each is checked and applied once.
        Nothing here waits for the device: on an accelerator the all-missing check is
        an asynchronous assertion.
        """
        if not isinstance(inputs, dict) and not isinstance(inputs, Mapping):
            raise FusionError(f"inputs: expected a mapping of modality -> tensor, got {type(inputs).__name__}")
        mods = self.modalities
        if len(inputs) != len(mods):
            self._raise_names(inputs)
        try:
            xs = [inputs[mod] for mod in mods]
        except KeyError:
            self._raise_names(inputs)
        cached = self.__dict__
        ref = cached["_ref_param"] if "_ref_param" in cached else self._reference_parameter()
        # One comparison per property against the module's parameter (dtype, device)
        # and the first input (batch size); the full check runs only to word an error.
        # (Every Python operation here costs several times its isolated time once
        # interleaved with the strategy's kernels: keep them few.)
        vectors = True
        try:
            x0 = xs[0]
            b = x0.shape[0]
            dtype = x0.dtype
            on_cpu = x0.is_cpu
            ok = b > 0 and dtype is ref.dtype and (ref.is_cpu if on_cpu else x0.device == ref.device)
            if ok:
                for x, dim in zip(xs, self._dims, strict=True):
                    shape = x.shape
                    if shape[-1] != dim or shape[0] != b or x.dtype is not dtype or len(shape) != 2:
                        if len(shape) == 3 and shape[1] and shape[-1] == dim and shape[0] == b and x.dtype is dtype:
                            vectors = False
                        else:
                            ok = False
                            break
                    if not (x.is_cpu if on_cpu else x.device == x0.device):
                        ok = False
                        break
        except (AttributeError, IndexError, TypeError):  # not a tensor, no shape, or no parameter
            ok = False
        if not ok:
            b = self._check_inputs(xs, ref)
            vectors = all(x.dim() == 2 for x in xs)
        if not masks:
            if masks is not None and not isinstance(masks, Mapping):
                raise FusionError(f"masks: expected a mapping of modality -> bool tensor, got {type(masks).__name__}")
            # fast path: every modality present, every token valid
            return FusionBatch(
                inputs=dict(zip(mods, xs, strict=True)),
                present=None,
                token_masks=None,
                modalities=mods,
                all_present=True,
                all_vectors=vectors,
            )
        return self._apply_masks(xs, masks, b, vectors)

    def _check_inputs(self, xs: list[Any], ref: Tensor | None) -> int:
        """The full check of every input (run only when the fast comparisons found a
        problem, or under autocast with mixed dtypes); returns the batch size."""
        first = self.modalities[0]
        batch_size = self._check_input(first, xs[0], ref, None)
        if batch_size == 0:
            raise FusionError(
                f"modality {first!r}: expected a batch of at least one sample, got batch size 0 "
                f"(shape {tuple(xs[0].shape)})"
            )
        for mod, x in zip(self.modalities[1:], xs[1:], strict=True):
            self._check_input(mod, x, ref, xs[0], batch_size)
        return batch_size

    def _apply_masks(self, xs: list[Tensor], masks: Mapping[str, Tensor], batch_size: int, vectors: bool) -> FusionBatch:
        """Check ``masks``, zero what they mark missing or padded, build the presence."""
        if not isinstance(masks, Mapping):
            raise FusionError(f"masks: expected a mapping of modality -> bool tensor, got {type(masks).__name__}")
        if not masks.keys() <= self._modality_set:
            unknown = sorted(set(masks) - self._modality_set)
            raise FusionError(f"masks: unknown modality {unknown[0]!r}: expected one of {list(self.modalities)}")
        cleaned: dict[str, Tensor] = {}
        token_masks: dict[str, Tensor | None] = {}
        present_cols: list[Tensor] = []
        ones: Tensor | None = None
        for mod, x in zip(self.modalities, xs, strict=True):
            mask = masks.get(mod)
            if mask is None:
                if ones is None:
                    ones = torch.ones(batch_size, dtype=torch.bool, device=x.device)
                cleaned[mod] = x
                token_masks[mod] = ones.unsqueeze(1).expand(-1, x.shape[1]) if x.dim() == 3 else None
                present_cols.append(ones)
                continue
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise FusionError(f"mask of modality {mod!r}: expected dtype torch.bool, got {got}")
            if mask.shape != x.shape[: mask.dim()] or mask.dim() not in (1, x.dim() - 1):
                allowed = [(x.shape[0],)] + ([tuple(x.shape[:2])] if x.dim() == 3 else [])
                want = " or ".join(str(s) for s in allowed)
                raise FusionError(f"mask of modality {mod!r}: expected shape {want}, got {tuple(mask.shape)}")
            if not mask.device == x.device:
                raise FusionError(f"mask of modality {mod!r}: expected device {x.device}, got {mask.device}")
            if mask.dim() == 1:
                present = mask
                tokens = present.unsqueeze(1).expand(-1, x.shape[1]) if x.dim() == 3 else None
                keep = present.view(-1, *([1] * (x.dim() - 1)))
            else:
                present = mask.any(dim=1)
                tokens = mask
                keep = mask.unsqueeze(-1)
            cleaned[mod] = torch.where(keep, x, x.new_zeros(()))
            token_masks[mod] = tokens
            present_cols.append(present)
        present_all = torch.stack(present_cols, dim=1)
        _check_some_present(present_all, self.modalities)
        return FusionBatch(
            inputs=cleaned,
            present=present_all,
            token_masks=token_masks,
            modalities=self.modalities,
            all_vectors=vectors,
        )

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # .to() / .cuda() / .half() go through here: forget what was cached per device
        self.__dict__.pop("_ref_param", None)
        return super()._apply(fn, *args, **kwargs)

    def _reference_parameter(self, *, refresh: bool = False) -> Tensor | None:
        """A parameter of the module, whose dtype and device the inputs must match.

        Looked up once and cached (``.to()``, ``.half()`` and ``load_state_dict``
        change parameters in place, so the same object keeps telling the module's
        dtype and device); looked up again before a mismatch is reported, in case
        the parameters were replaced.
        """
        if refresh or "_ref_param" not in self.__dict__:
            self.__dict__["_ref_param"] = next(self.parameters(), None)
        return self.__dict__["_ref_param"]

    def _raise_names(self, inputs: Mapping[str, Any]) -> None:
        unknown = sorted(set(inputs) - self._modality_set, key=str)
        if unknown:
            raise FusionError(f"unknown modality {unknown[0]!r}: expected one of {list(self.modalities)}")
        missing = [m for m in self.modalities if m not in inputs]
        raise FusionError(
            f"modality {missing[0]!r}: expected a tensor, got nothing (pass it with a False "
            f"(b,) mask to mark it missing)"
        )

    def _check_input(self, mod: str, x: object, ref: Tensor | None, first: Tensor | None, batch_size: int = -1) -> int:
        """Check one modality's tensor; returns its batch size. ``ref``: a parameter of the
        module (dtype and device to match); ``first``: the first modality's tensor."""
        if not isinstance(x, Tensor):
            raise FusionError(f"modality {mod!r}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3):
            raise FusionError(f"modality {mod!r}: expected shape (b, d) or (b, t, d), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise FusionError(f"modality {mod!r}: expected a floating-point tensor, got {x.dtype}")
        if x.shape[-1] != self.input_dims[mod]:
            raise FusionError(f"modality {mod!r}: expected last dim {self.input_dims[mod]}, got {x.shape[-1]}")
        if first is not None and x.shape[0] != batch_size:
            raise FusionError(
                f"modality {mod!r}: expected batch size {batch_size} (as {self.modalities[0]!r}), got {x.shape[0]}"
            )
        if x.dim() == 3 and x.shape[1] == 0:
            raise FusionError(f"modality {mod!r}: expected at least one token, got shape {tuple(x.shape)}")
        # (`==` on devices: `!=` takes a slow path in torch)
        if ref is not None and not (x.device == ref.device and x.dtype == ref.dtype):
            ref = self._reference_parameter(refresh=True)
        want = ref if ref is not None else first
        if want is not None:
            if not x.device == want.device:
                whose = "the module's" if ref is not None else f"{self.modalities[0]!r}'s"
                raise FusionError(f"modality {mod!r}: expected device {want.device} ({whose}), got {x.device}")
            if x.dtype != want.dtype and not torch.is_autocast_enabled(x.device.type):
                whose = "the module's" if ref is not None else f"{self.modalities[0]!r}'s"
                raise FusionError(
                    f"modality {mod!r}: expected dtype {want.dtype} ({whose}; convert the input or the "
                    f"module with .to()), got {x.dtype}"
                )
        if first is not None and x.dtype != first.dtype:
            raise FusionError(
                f"modality {mod!r}: expected dtype {first.dtype} (as {self.modalities[0]!r}), got {x.dtype}"
            )
        return x.shape[0]

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.input_dims.items())
        return f"inputs=({dims}), output_dim={self.output_dim}"


# --------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Fusion]] = {}
F = TypeVar("F", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator: register a :class:`Fusion` subclass under ``name``."""

    def decorator(cls: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"fusion {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_all() -> None:
    from mmfuse import fusions  # noqa: F401  (imports every strategy module)


def list_fusions() -> list[str]:
    """Names of every registered strategy, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def fusion_class(name: str) -> type[Fusion]:
    """The class registered under ``name``."""
    _load_all()
    if name not in _REGISTRY:
        raise FusionError(f"unknown fusion {name!r}: expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def fusion_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options a strategy takes besides ``input_dims`` and ``output_dim``."""
    params = inspect.signature(fusion_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "input_dims", "output_dim")}


def create_fusion(name: str, *, input_dims: Mapping[str, int], output_dim: int, **options: Any) -> Fusion:
    """Build the strategy registered as ``name``.

    Args:
        name: a name from :func:`list_fusions`.
        input_dims: modality -> feature dimension.
        output_dim: fused feature dimension.
        **options: the strategy's own keyword arguments (see its class docstring).
    """
    cls = fusion_class(name)
    allowed = fusion_options(name)
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise FusionError(f"fusion {name!r}: unknown option {bad[0]!r}: expected one of {sorted(allowed)}")
    return cls(input_dims=input_dims, output_dim=output_dim, **options)
