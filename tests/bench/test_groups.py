"""Choosing hierarchical groups from a dataset, or skipping with a reason."""

from __future__ import annotations

import pytest

from mmfuse.bench.groups import choose_groups
from mmfuse.data import ModalitySpec
from mmfuse.data.synthetic import load_synthetic
from mmfuse.errors import MmfuseError


def _spec(kind: str, **meta) -> ModalitySpec:
    return ModalitySpec(kind, (3,), meta)


def test_two_modalities_are_skipped_with_a_reason() -> None:
    c = choose_groups({"a": _spec("vector"), "b": _spec("image")})
    assert c.groups is None and "one-modality groups" in c.reason
    with pytest.raises(MmfuseError, match="no groups"):
        c.fusion_options()


def test_kinds_make_the_groups() -> None:
    c = choose_groups({"img1": _spec("image"), "img2": _spec("image"), "aud": _spec("audio"), "txt": _spec("text")})
    assert c.source == "kinds"
    assert c.groups == (("aud",), ("img1", "img2"), ("txt",))
    assert c.fusion_options() == {"groups": [["aud"], ["img1", "img2"], ["txt"]]}


def test_one_kind_or_all_different_kinds_give_no_groups() -> None:
    same = {m: _spec("vector") for m in ("fou", "fac", "kar", "pix", "zer", "mor")}
    c = choose_groups(same)
    assert c.groups is None and "all of kind 'vector'" in c.reason
    diff = {"a": _spec("vector"), "b": _spec("image"), "c": _spec("audio")}
    assert choose_groups(diff).groups is None


def test_declared_groups_win() -> None:
    s = load_synthetic(task="groups", n=50)
    c = choose_groups(s.specs, s.info)
    assert c.source == "declared" and c.groups == (("x0", "x1"), ("x2", "x3"))
    meta = {m: _spec("vector", group=g) for m, g in (("a", "p"), ("b", "p"), ("c", "q"))}
    assert choose_groups(meta).groups == (("a", "b"), ("c",))
    with pytest.raises(MmfuseError, match="exactly once"):
        choose_groups(s.specs, {"groups": [["x0", "x1"], ["x2"]]})
