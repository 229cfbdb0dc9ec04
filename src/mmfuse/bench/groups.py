"""Groups for ``hierarchical`` fusion chosen from a dataset, or a reason to skip it.

With one modality per group, hierarchical fusion is the global fusion with extra
layers (with the default gated/gated, exactly ``gated``): it is not a separate
strategy. :func:`choose_groups` returns groups in which at least one group holds two
or more modalities and there are at least two groups, or ``None`` with the reason,
so that the bench either runs hierarchical with groups that mean something for the
dataset or records it as skipped. In order of precedence:

1. groups the dataset declares: ``splits.info["groups"]`` (the synthetic ``groups``
   task), or ``ModalitySpec.meta["group"]`` on every modality;
2. the modality kinds (``vector``, ``image``, ``audio``...): modalities of one kind
   form a group, when that gives at least two groups and one of them has two or more
   modalities;
3. otherwise ``None``: two modalities can only form singleton groups; modalities all
   of one kind, or all of different kinds, give no grouping (pass ``groups`` in the
   bench config instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmfuse.data._base import ModalitySpec
from mmfuse.errors import MmfuseError

__all__ = ["GroupChoice", "choose_groups"]


@dataclass(frozen=True)
class GroupChoice:
    """Groups for ``hierarchical`` (``fusion_options={"groups": [...]}``), or ``None``.

    Attributes:
        groups: the groups (sorted names in each, groups sorted), or ``None`` to skip.
        source: ``"declared"``, ``"kinds"`` or ``"none"``.
        reason: why, in one sentence (for the report when skipped).
    """

    groups: tuple[tuple[str, ...], ...] | None
    source: str
    reason: str

    def fusion_options(self) -> dict[str, Any]:
        """``{"groups": [[...], ...]}`` (JSON-ready) for ``build_model(fusion_options=...)``."""
        if self.groups is None:
            raise MmfuseError(f"no groups to pass: {self.reason}")
        return {"groups": [list(g) for g in self.groups]}


def _useful(groups: Sequence[Sequence[str]]) -> bool:
    return len(groups) >= 2 and any(len(g) >= 2 for g in groups)


def _normalise(groups: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(sorted(tuple(sorted(g)) for g in groups))


def choose_groups(specs: Mapping[str, ModalitySpec], info: Mapping[str, Any] | None = None) -> GroupChoice:
    """Groups of modalities for hierarchical fusion (see the module docstring).

    Args:
        specs: modality -> spec (``splits.specs``).
        info: the dataset's ``splits.info`` (may declare ``"groups"``).
    """
    mods = sorted(specs)
    declared = (info or {}).get("groups")
    if declared is None and mods and all("group" in specs[m].meta for m in mods):
        by: dict[str, list[str]] = {}
        for m in mods:
            by.setdefault(str(specs[m].meta["group"]), []).append(m)
        declared = list(by.values())
    if declared is not None:
        flat = sorted(m for g in declared for m in g)
        if flat != mods:
            raise MmfuseError(f"declared groups {declared!r}: expected every modality of {mods} exactly once")
        if _useful(declared):
            return GroupChoice(_normalise(declared), "declared", "the dataset declares its groups")
    if len(mods) < 3:
        return GroupChoice(None, "none", f"{len(mods)} modalities can only form one-modality groups, where "
                           "hierarchical fusion is its global fusion with extra layers")
    kinds: dict[str, list[str]] = {}
    for m in mods:
        kinds.setdefault(specs[m].kind, []).append(m)
    if _useful(list(kinds.values())):
        return GroupChoice(_normalise(kinds.values()), "kinds", "modalities grouped by kind (" +
                           ", ".join(f"{k}: {'+'.join(v)}" for k, v in sorted(kinds.items())) + ")")
    what = f"all of kind {next(iter(kinds))!r}" if len(kinds) == 1 else "all of different kinds"
    return GroupChoice(None, "none", f"the {len(mods)} modalities are {what} and the dataset declares no "
                       "groups: set groups in the bench config to run hierarchical")
