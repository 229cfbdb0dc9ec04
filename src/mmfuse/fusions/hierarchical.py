"""Hierarchical fusion: local fusions over groups of modalities, then a global fusion.

Shape legend: ``b`` batch, ``m`` modalities (``fusion.modalities`` order), ``g``
groups, ``t_i`` tokens of modality ``i``, ``d_i`` features of modality ``i``,
``d_loc`` the width of each group's output (``local_dim``), ``d_out`` output
features. Masks are bool, True means keep.

The equations (local fusion within each group ``G``, then a global fusion over the
groups)::

    z_G = LocalFusion_G({x_i : i in G})        (b, d_loc)   for every group G
    h   = GlobalFusion({z_G : G})              (b, d_out)

Each group's output enters the global fusion as a new modality named after the
group, its modalities joined by ``+`` (``"audio+image"``). Any registered strategy
can serve at either level (:func:`mmfuse.fusions.create_fusion`).

Missing data: a group is present for a sample when at least one of its modalities is;
a group with every modality missing is passed to the global fusion as missing (a
``(b,)`` False mask), so its output has no influence. Its local fusion still runs on
the whole batch (no per-sample loop): for that sample the group's first modality is
marked present with its (already zeroed) values, so the local fusion sees a valid,
input-free sample whose output the global fusion then masks out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.fusions._base import (
    Fusion,
    FusionBatch,
    FusionError,
    FusionIntermediates,
    create_fusion,
    fusion_class,
    fusion_options,
    register_fusion,
)
from mmfuse.fusions._cost import Cost, CostText, linear_params
from mmfuse.fusions._options import FusionName, PositiveInt
from mmfuse.layers import ModalityDict
from mmfuse.space import Distribution

__all__ = ["HierarchicalFusion", "default_groups"]


def default_groups(modalities: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Consecutive pairs of the sorted modalities; with an odd count the last one is alone.

    With two modalities a single pair would leave the global fusion one input, so
    each modality is its own group: ``(a, b) -> ((a,), (b,))``,
    ``(a, b, c) -> ((a, b), (c,))``, ``(a, b, c, d) -> ((a, b), (c, d))``.
    """
    mods = sorted(modalities)
    if len(mods) <= 2:
        return tuple((m,) for m in mods)
    return tuple(tuple(mods[i : i + 2]) for i in range(0, len(mods), 2))


def _check_groups(groups: object, modalities: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Validate user groups: a sequence of sequences of names, every modality exactly once."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise FusionError(f"hierarchical: groups: expected a non-empty sequence of modality groups, got {groups!r}")
    seen: dict[str, int] = {}
    out: list[tuple[str, ...]] = []
    for gi, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, Sequence) or not group:
            raise FusionError(
                f"hierarchical: groups[{gi}]: expected a non-empty sequence of modality names, got {group!r}"
            )
        for mod in group:
            if mod not in modalities:
                raise FusionError(
                    f"hierarchical: groups[{gi}]: unknown modality {mod!r}: expected one of {list(modalities)}"
                )
            if mod in seen:
                raise FusionError(
                    f"hierarchical: groups[{gi}]: modality {mod!r}: expected in exactly one group, "
                    f"got it again (already in groups[{seen[mod]}])"
                )
            seen[mod] = gi
        out.append(tuple(sorted(group)))
    left = [m for m in modalities if m not in seen]
    if left:
        raise FusionError(f"hierarchical: groups: modality {left[0]!r}: expected in exactly one group, got in none")
    return tuple(out)


def _check_options(name: str, options: object) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise FusionError(f"hierarchical: {name}: expected a mapping of option -> value or None, got {options!r}")
    for reserved in ("input_dims", "output_dim"):
        if reserved in options:
            raise FusionError(
                f"hierarchical: {name}: expected the strategy's own options only, got {reserved!r} "
                f"(set by hierarchical)"
            )
    return dict(options)


@register_fusion("hierarchical")
class HierarchicalFusion(Fusion):
    """Local fusions over groups of modalities, then a global fusion over the groups.

    A group of a single modality has nothing to fuse locally: its output is a linear
    map of its (mask-aware mean-pooled) input to ``d_loc``. Every larger group gets
    its own ``local_fusion`` module.

    Args:
        input_dims: modality -> ``d_i`` (at least two).
        output_dim: ``d_out``.
        groups: the modality groups, every modality in exactly one (default:
            :func:`default_groups`). The names inside a group are sorted; the group
            is named by joining them with ``+``.
        local_fusion: registered strategy name of every local fusion.
        local_options: options of the local strategy (not ``input_dims`` /
            ``output_dim``).
        local_dim: ``d_loc`` (default ``d_out``).
        global_fusion: registered strategy name of the global fusion.
        global_options: options of the global strategy.

    Intermediates: ``modality_weights`` ``(b, m)`` when the global fusion gives
    weights over groups (``gated``, ``late``): each group's weight shared equally by
    its present modalities; ``extras["groups"]`` group name -> ``(b, d_loc)`` output,
    ``extras["group_present"]`` ``(b, g)``, ``extras["local"]`` group name -> the
    local fusion's :class:`FusionIntermediates` (``None`` for a single-modality
    group), ``extras["global"]`` the global fusion's intermediates.
    """

    min_modalities = 2

    #: what ``mmfuse bench --tune`` tries for this strategy's options (see :mod:`mmfuse.space`)
    search_space: ClassVar[dict[str, Distribution]] = {}

    def __init__(
        self,
        *,
        input_dims: Mapping[str, int],
        output_dim: int,
        groups: Sequence[Sequence[str]] | None = None,
        local_fusion: FusionName = "gated",
        local_options: Mapping[str, Any] | None = None,
        local_dim: PositiveInt | None = None,
        global_fusion: FusionName = "gated",
        global_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(input_dims=input_dims, output_dim=output_dim)
        if local_dim is None:
            local_dim = self.output_dim
        self.groups = default_groups(self.modalities) if groups is None else _check_groups(groups, self.modalities)
        self.group_names = tuple("+".join(g) for g in self.groups)
        self.local_dim = local_dim
        self.local_fusion_name = local_fusion
        self.global_fusion_name = global_fusion
        local_kw = _check_options("local_options", local_options)
        global_kw = _check_options("global_options", global_options)
        # checked even where no group is large enough to build a local fusion
        unknown = sorted(set(local_kw) - set(fusion_options(local_fusion)))
        if unknown:
            raise FusionError(
                f"hierarchical: local_options: unknown option {unknown[0]!r} of {local_fusion!r}: "
                f"expected one of {sorted(fusion_options(local_fusion))}"
            )

        local: dict[str, nn.Module] = {}
        for gname, group in zip(self.group_names, self.groups, strict=True):
            if len(group) == 1:
                local[gname] = nn.Linear(self.input_dims[group[0]], local_dim)
                continue
            try:
                local[gname] = create_fusion(
                    local_fusion,
                    input_dims={m: self.input_dims[m] for m in group},
                    output_dim=local_dim,
                    **local_kw,
                )
            except FusionError as err:
                raise FusionError(f"hierarchical: local fusion of group {gname!r}: {err}") from err
        self.local = ModalityDict(local)
        try:
            self.global_fusion = create_fusion(
                global_fusion,
                input_dims=dict.fromkeys(self.group_names, local_dim),
                output_dim=self.output_dim,
                **global_kw,
            )
        except FusionError as err:
            raise FusionError(
                f"hierarchical: global fusion over groups {list(self.group_names)}: {err}"
            ) from err
        self.outputs_logits = self.global_fusion.outputs_logits

    cost_text = CostText(
        options=("groups", "local_fusion", "local_dim", "global_fusion"),
        symbols="groups = consecutive pairs (m = 2: singletons), local_dim = o; p pairs, s singletons, "
        "G = p + s groups; L/Gl = the local/global strategy's own formula",
        params_big_o="O(m d o + m^2 o^2) (with 'gated' parts)",
        flops_big_o="O(m d o + m^2 o^2) (with 'gated' parts)",
        params_exact="p L(2, d, o) + s (d+1) o + Gl(G, o, o)",
        flops_exact="p L_flops(2, d, o) + 2 s d o + Gl_flops(G, o, o)",
    )

    @classmethod
    def cost(cls, *, m: int, d: int, t: int, output_dim: int) -> Cost:
        o = output_dim
        pairs, singles = (0, m) if m <= 2 else (m // 2, m % 2)
        local = fusion_class(cls.default("local_fusion")).cost(m=2, d=d, t=t, output_dim=o) if pairs else Cost(0, 0)
        glob = fusion_class(cls.default("global_fusion")).cost(m=pairs + singles, d=o, t=1, output_dim=o)
        return Cost(
            pairs * local.params + singles * linear_params(d, o) + glob.params,
            pairs * local.flops + singles * 2 * d * o + glob.flops,
        )

    def _local_inputs(
        self, batch: FusionBatch, group: tuple[str, ...], group_present: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """A group's inputs and masks for its local fusion, with the first modality marked
        present (zero values) for samples where the whole group is missing."""
        inputs, masks = {}, {}
        absent = ~group_present
        for i, mod in enumerate(group):
            tokens = batch.token_masks[mod]
            mask = batch.presence(mod) if tokens is None else tokens
            if i == 0:
                mask = mask | absent.view(-1, *([1] * (mask.dim() - 1)))
            inputs[mod] = batch.inputs[mod]
            masks[mod] = mask
        return inputs, masks

    def fuse(self, batch: FusionBatch, *, need_intermediates: bool) -> tuple[Tensor, FusionIntermediates]:
        """``(b, d_out)``; intermediates: see the class docstring."""
        outputs: dict[str, Tensor] = {}
        presence: dict[str, Tensor] = {}
        local_info: dict[str, FusionIntermediates | None] = {}
        for gname, group in zip(self.group_names, self.groups, strict=True):
            cols = [self.modalities.index(m) for m in group]
            group_present = batch.present[:, cols].any(dim=1)
            module = self.local[gname]
            if len(group) == 1:
                outputs[gname] = module(batch.pooled(group[0]))
                local_info[gname] = None
            else:
                inputs, masks = self._local_inputs(batch, group, group_present)
                if need_intermediates:
                    outputs[gname], local_info[gname] = module(inputs, masks, return_intermediates=True)
                else:
                    outputs[gname] = module(inputs, masks)
            presence[gname] = group_present
        if need_intermediates:
            fused, global_info = self.global_fusion(outputs, presence, return_intermediates=True)
        else:
            fused, global_info = self.global_fusion(outputs, presence), None
        info = FusionIntermediates()
        if need_intermediates:
            assert global_info is not None
            if global_info.modality_weights is not None:
                info.modality_weights = self._spread(global_info.modality_weights, batch.present)
            info.extras = {
                "groups": outputs,
                "group_present": torch.stack([presence[g] for g in self.group_names], dim=1),
                "local": local_info,
                "global": global_info,
            }
        return fused, info

    def _spread(self, group_weights: Tensor, present: Tensor) -> Tensor:
        """``(b, g)`` group weights -> ``(b, m)`` modality weights: each group's weight
        shared equally by its present modalities (rows keep their sum)."""
        out = present.new_zeros(present.shape, dtype=group_weights.dtype)
        for gi, group in enumerate(self.groups):
            cols = [self.modalities.index(m) for m in group]
            here = present[:, cols].to(group_weights.dtype)
            share = group_weights[:, gi : gi + 1] / here.sum(dim=1, keepdim=True).clamp_min(1.0)
            out[:, cols] = share * here
        return out

    def extra_repr(self) -> str:
        groups = ", ".join(self.group_names)
        return (
            f"{super().extra_repr()}, groups=[{groups}], local={self.local_fusion_name!r}, "
            f"local_dim={self.local_dim}, global={self.global_fusion_name!r}"
        )
