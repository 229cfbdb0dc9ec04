"""The contract suite: every registered strategy, present and future, held to the same checks.

Parametrized over ``mmfuse.list_fusions()`` with 2 and 3 modalities, vector and sequence
inputs. Per-strategy equation parity lives in the strategy's own test file.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

import mmfuse
from mmfuse import FusionError, FusionIntermediates

DIMS = {"audio": 5, "image": 6, "text": 7}
LENGTHS = {"audio": 4, "image": 3, "text": 5}
OUT = 8
B = 5

STRATEGIES = mmfuse.list_fusions()
SETTINGS = [(m, form) for m in (2, 3) for form in ("vector", "sequence", "mixed")]


def _ids(setting: tuple[int, str]) -> str:
    return f"M{setting[0]}-{setting[1]}"


def make_fusion(name: str, m: int, seed: int = 0) -> mmfuse.Fusion:
    torch.manual_seed(seed)
    dims = dict(list(DIMS.items())[:m])
    fusion = mmfuse.create_fusion(name, input_dims=dims, output_dim=OUT)
    return fusion.eval()


def make_inputs(m: int, form: str, b: int = B, seed: int = 1) -> tuple[dict, dict]:
    """Inputs and token masks; 'mixed' gives the first modality as a vector, the rest as sequences."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for i, (name, d) in enumerate(list(DIMS.items())[:m]):
        seq = form == "sequence" or (form == "mixed" and i > 0)
        if seq:
            t = LENGTHS[name]
            inputs[name] = torch.randn(b, t, d, generator=g)
            lengths = torch.randint(1, t + 1, (b,), generator=g)
            masks[name] = torch.arange(t)[None, :] < lengths[:, None]
        else:
            inputs[name] = torch.randn(b, d, generator=g)
    return inputs, masks


@pytest.fixture(params=STRATEGIES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=SETTINGS, ids=_ids)
def setting(request: pytest.FixtureRequest) -> tuple[int, str]:
    return request.param


def test_registry_has_the_guides_strategies() -> None:
    guide = {"early", "late", "cross_attention", "multihead_cross_attention", "hierarchical", "gated"}
    assert guide <= set(STRATEGIES)


def test_shape_finite_and_intermediates(name: str, setting: tuple[int, str]) -> None:
    m, form = setting
    fusion = make_fusion(name, m)
    inputs, masks = make_inputs(m, form)
    out = fusion(inputs, masks)
    assert out.shape == (B, OUT)
    assert torch.isfinite(out).all()
    out2, info = fusion(inputs, masks, return_intermediates=True)
    assert isinstance(info, FusionIntermediates)
    torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-6)
    assert info.present is not None and info.present.shape == (B, m) and bool(info.present.all())
    for key, attn in (info.attention or {}).items():
        assert attn.dim() == 4 and attn.shape[0] == B, key
        assert torch.isfinite(attn).all()
    if info.modality_weights is not None:
        assert info.modality_weights.shape[:2] == (B, m)


def test_every_parameter_gets_a_gradient(name: str, setting: tuple[int, str]) -> None:
    m, form = setting
    fusion = make_fusion(name, m).train()
    inputs, masks = make_inputs(m, form)
    for x in inputs.values():
        x.requires_grad_(True)
    out = fusion(inputs, masks)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: parameter {pname} got an all-zero gradient"
    for mod, x in inputs.items():
        assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient reaches input {mod!r}"


def test_batch_independence(name: str, setting: tuple[int, str]) -> None:
    m, form = setting
    fusion = make_fusion(name, m)
    inputs, masks = make_inputs(m, form)
    out = fusion(inputs, masks)
    changed = {k: v.clone() for k, v in inputs.items()}
    for v in changed.values():
        v[0] = torch.randn_like(v[0]) * 3
    out_changed = fusion(changed, masks)
    torch.testing.assert_close(out_changed[1:], out[1:], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out_changed[0], out[0]), "sample 0's own inputs do not reach its output"
    # a sample alone gives what it gives inside a batch
    single = fusion({k: v[2:3] for k, v in inputs.items()}, {k: v[2:3] for k, v in masks.items()})
    torch.testing.assert_close(single[0], out[2], rtol=1e-5, atol=1e-5)


def test_dict_order_invariance(name: str, setting: tuple[int, str]) -> None:
    m, form = setting
    fusion = make_fusion(name, m)
    inputs, masks = make_inputs(m, form)
    out = fusion(inputs, masks)
    rev_inputs = dict(reversed(list(inputs.items())))
    rev_masks = dict(reversed(list(masks.items())))
    torch.testing.assert_close(fusion(rev_inputs, rev_masks), out)
    # the order is fixed at construction, whatever order input_dims came in
    torch.manual_seed(0)
    dims = dict(reversed(list(DIMS.items())[:m]))
    other = mmfuse.create_fusion(name, input_dims=dims, output_dim=OUT).eval()
    assert other.modalities == fusion.modalities
    other.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(other(inputs, masks), out)


def test_padding_invariance(name: str) -> None:
    fusion = make_fusion(name, 3)
    inputs, masks = make_inputs(3, "sequence")
    out = fusion(inputs, masks)
    # values at padded tokens change nothing
    noisy = {k: torch.where(masks[k][..., None], v, torch.randn_like(v) * 100) for k, v in inputs.items()}
    torch.testing.assert_close(fusion(noisy, masks), out, rtol=1e-5, atol=1e-5)
    # nor does extra padding appended to every sequence
    padded = {k: torch.cat([v, torch.randn(B, 3, v.shape[-1])], dim=1) for k, v in inputs.items()}
    pmasks = {k: torch.cat([mk, torch.zeros(B, 3, dtype=torch.bool)], dim=1) for k, mk in masks.items()}
    torch.testing.assert_close(fusion(padded, pmasks), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["vector", "sequence"])
def test_missing_modality_has_no_influence(name: str, form: str) -> None:
    m = 3
    fusion = make_fusion(name, m)
    inputs, masks = make_inputs(m, form)
    for mod in fusion.modalities:
        present = torch.tensor([True, False, True, False, True])
        mk = dict(masks)
        mk[mod] = present if form == "vector" else masks[mod] & present[:, None]
        out = fusion(inputs, mk)
        assert torch.isfinite(out).all()
        keep = present.view(-1, *([1] * (inputs[mod].dim() - 1)))
        changed = dict(inputs)
        changed[mod] = torch.where(keep, inputs[mod], inputs[mod] + torch.randn_like(inputs[mod]) * 10)
        out_changed = fusion(changed, mk)
        torch.testing.assert_close(out_changed, out, rtol=1e-5, atol=1e-5, msg=f"{name}: missing {mod!r} leaks")
        # NaN in a missing modality does not reach the output either
        nan_in = dict(inputs)
        nan_in[mod] = torch.where(keep, inputs[mod], torch.full_like(inputs[mod], float("nan")))
        assert torch.isfinite(fusion(nan_in, mk)).all(), f"{name}: NaN in missing {mod!r} reaches the output"
        _, info = fusion(inputs, mk, return_intermediates=True)
        assert torch.equal(info.present[:, fusion.modalities.index(mod)], present)


def test_only_one_modality_present(name: str) -> None:
    fusion = make_fusion(name, 3)
    inputs, _ = make_inputs(3, "vector")
    for keep in fusion.modalities:
        masks = {mod: torch.full((B,), mod == keep) for mod in fusion.modalities}
        out = fusion(inputs, masks)
        assert torch.isfinite(out).all(), f"{name}: only {keep!r} present gives non-finite output"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_modality_missing_raises(name: str, compiled: bool) -> None:
    """The contract holds under torch.compile too (it used to return a value there)."""
    fusion = make_fusion(name, 2)
    run = torch.compile(fusion, backend="aot_eager") if compiled else fusion
    inputs, masks = make_inputs(2, "mixed")
    missing = torch.tensor([True, True, False, True, True])
    masks = {mod: missing if inputs[mod].dim() == 2 else masks[mod] & missing[:, None] for mod in fusion.modalities}
    with pytest.raises(FusionError, match="sample 2: expected at least one present modality"):
        run(inputs, masks)
    # and the same compiled module still answers a valid batch
    masks_ok = {mod: torch.ones(B, dtype=torch.bool) for mod in fusion.modalities}
    torch.testing.assert_close(run(inputs, masks_ok), fusion(inputs), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip(name: str) -> None:
    fusion = make_fusion(name, 3, seed=0)
    inputs, masks = make_inputs(3, "mixed")
    out = fusion(inputs, masks)
    fresh = make_fusion(name, 3, seed=123)
    fresh.load_state_dict(copy.deepcopy(fusion.state_dict()))
    torch.testing.assert_close(fresh(inputs, masks), out, rtol=0, atol=0)
    assert len(fusion.state_dict()) > 0


def test_torch_compile_runs(name: str) -> None:
    fusion = make_fusion(name, 2)
    inputs, masks = make_inputs(2, "mixed")
    expected = fusion(inputs, masks)
    compiled = torch.compile(fusion, backend="aot_eager")
    torch.testing.assert_close(compiled(inputs, masks), expected, rtol=1e-5, atol=1e-5)


BAD_INPUTS = {
    "unknown modality": (lambda i, mk: ({**i, "video": torch.randn(B, 3)}, mk), "unknown modality 'video'"),
    "missing modality": (lambda i, mk: ({k: v for k, v in list(i.items())[1:]}, mk), "modality 'audio'"),
    "wrong feature dim": (lambda i, mk: ({**i, "audio": torch.randn(B, 9)}, mk), "expected last dim 5, got 9"),
    "batch sizes differ": (lambda i, mk: ({**i, "image": torch.randn(B + 1, 6)}, mk), "expected batch size 5"),
    "1-d input": (lambda i, mk: ({**i, "audio": torch.randn(5)}, mk), "expected shape"),
    "integer input": (lambda i, mk: ({**i, "audio": torch.ones(B, 5, dtype=torch.long)}, mk), "floating-point"),
    "not a tensor": (lambda i, mk: ({**i, "audio": [[0.0] * 5] * B}, mk), "expected a torch.Tensor"),
    "mask wrong dtype": (lambda i, mk: (i, {"audio": torch.ones(B)}), "expected dtype torch.bool"),
    "mask wrong shape": (lambda i, mk: (i, {"audio": torch.ones(B + 2, dtype=torch.bool)}), "expected shape"),
    "token mask on a vector": (lambda i, mk: (i, {"audio": torch.ones(B, 3, dtype=torch.bool)}), "expected shape"),
    "mask of unknown modality": (lambda i, mk: (i, {"video": torch.ones(B, dtype=torch.bool)}), "unknown modality"),
    "inputs not a mapping": (lambda i, mk: (list(i.values()), mk), "expected a mapping"),
    "dtype other than the module's": (
        lambda i, mk: ({k: v.double() for k, v in i.items()}, mk),
        r"modality 'audio': expected dtype torch.float32 \(the module's.*got torch.float64",
    ),
    "dtypes mixed across modalities": (
        lambda i, mk: ({**i, "image": i["image"].half()}, mk),
        "modality 'image': expected dtype torch.float32.*got torch.float16",
    ),
    "device other than the module's": (
        lambda i, mk: ({**i, "image": i["image"].to("meta")}, mk),
        r"modality 'image': expected device cpu \(the module's\), got meta",
    ),
    "mask on another device": (
        lambda i, mk: (i, {"audio": torch.ones(B, dtype=torch.bool, device="meta")}),
        "mask of modality 'audio': expected device cpu, got meta",
    ),
    "batch size 0": (
        lambda i, mk: ({k: v[:0] for k, v in i.items()}, mk),
        "modality 'audio': expected a batch of at least one sample, got batch size 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_fusion_error(name: str, case: str) -> None:
    fusion = make_fusion(name, 2)
    inputs, masks = make_inputs(2, "vector")
    build, message = BAD_INPUTS[case]
    bad_inputs, bad_masks = build(inputs, masks)
    with pytest.raises(FusionError, match=message):
        fusion(bad_inputs, bad_masks)
    assert issubclass(FusionError, ValueError)


def test_bad_construction_raises(name: str) -> None:
    with pytest.raises(FusionError, match="unknown option"):
        mmfuse.create_fusion(name, input_dims={"a": 3, "b": 4}, output_dim=4, no_such_option=1)
    with pytest.raises(FusionError, match="output_dim"):
        mmfuse.create_fusion(name, input_dims={"a": 3, "b": 4}, output_dim=0)
    with pytest.raises(FusionError, match="modality 'b'"):
        mmfuse.create_fusion(name, input_dims={"a": 3, "b": -1}, output_dim=4)


def test_unknown_strategy_raises() -> None:
    with pytest.raises(FusionError, match="unknown fusion 'nope'"):
        mmfuse.create_fusion("nope", input_dims={"a": 3}, output_dim=2)


# ------------------------------------------------------------------ modality names
#: names torch refuses as ModuleDict / ParameterDict keys: a '.', and attributes of
#: nn.Module / nn.ModuleDict ('training', 'items', 'keys', 'values', 'type', ...)
ODD_NAMES = {"a.b": 5, "items": 6, "training": 7}
ODD_NAMES_2 = {"keys": 5, "values.x": 6, "type": 7}


@pytest.mark.parametrize("dims", [ODD_NAMES, ODD_NAMES_2], ids=["dot-items-training", "keys-values.x-type"])
def test_any_string_is_a_modality_name(name: str, dims: dict[str, int]) -> None:
    torch.manual_seed(0)
    fusion = mmfuse.create_fusion(name, input_dims=dims, output_dim=OUT).eval()
    assert fusion.modalities == tuple(sorted(dims))
    g = torch.Generator().manual_seed(3)
    inputs = {m: torch.randn(B, 2, d, generator=g) for m, d in dims.items()}
    masks = {m: torch.tensor([True, True, False, True, True])[:, None].expand(B, 2).clone() for m in dims}
    masks[fusion.modalities[0]][2] = True  # sample 2 keeps one modality
    out = fusion(inputs, masks)
    assert torch.isfinite(out).all()
    # a missing modality still has no influence under an escaped name
    last = fusion.modalities[-1]
    changed = {**inputs, last: torch.where(masks[last][..., None], inputs[last], inputs[last] + 7.0)}
    torch.testing.assert_close(fusion(changed, masks), out, rtol=1e-5, atol=1e-5)
    # weights round-trip through state_dict under escaped keys
    torch.manual_seed(9)
    fresh = mmfuse.create_fusion(name, input_dims=dims, output_dim=OUT).eval()
    fresh.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(fresh(inputs, masks), out, rtol=0, atol=0)


# ------------------------------------------------------------------ option types
def _options_of_kind(name: str, kind: str) -> list[str]:
    from mmfuse.fusions._options import Rate, option_annotations

    annotations = option_annotations(mmfuse.fusions.fusion_class(name).__init__)
    out = []
    for opt, ann in annotations.items():
        text = str(ann)
        if kind == "bool" and ann is bool:
            out.append(opt)
        elif kind == "rate" and ann == Rate:
            out.append(opt)
        elif kind == "layer" and "Callable" in text:
            out.append(opt)
    return out


def test_options_of_the_wrong_type_raise(name: str) -> None:
    """bool options refuse "no" (once read as True), rates refuse "0.1", layer options refuse "relu"."""
    dims = {"a": 3, "b": 4}
    cases = [(opt, "no", "a bool") for opt in _options_of_kind(name, "bool")]
    cases += [(opt, "0.1", r"a float in \[0, 1\)") for opt in _options_of_kind(name, "rate")]
    cases += [(opt, "relu", "a class or callable that builds an nn.Module") for opt in _options_of_kind(name, "layer")]
    cases += [(opt, torch.nn.GELU(), "a class or callable") for opt in _options_of_kind(name, "layer")]
    for opt, value, expected in cases:
        with pytest.raises(FusionError, match=rf"^{name}: {opt}: expected {expected}.*, got {re.escape(repr(value))}"):
            mmfuse.create_fusion(name, input_dims=dims, output_dim=4, **{opt: value})
    # and every default passes its own check
    mmfuse.create_fusion(name, input_dims=dims, output_dim=4)
