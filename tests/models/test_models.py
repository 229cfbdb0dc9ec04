"""MultimodalModel with every registered fusion on a tiny hand-built dataset: missing
modalities, decision-level fusion without a head, config round trips, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import mmfuse
from mmfuse.data import ModalitySpec, MultimodalDataset
from mmfuse.fusions import FusionError, FusionIntermediates, create_fusion
from mmfuse.models import (
    MultimodalModel,
    UnimodalModel,
    build_model,
    build_model_from_config,
    build_unimodal_model,
)

SPECS = {
    "img": ModalitySpec("image", (1, 8, 8)),
    "seq": ModalitySpec("sequence", (5, 3)),
    "txt": ModalitySpec("text", (6,), {"vocab_size": 20, "pad_id": 0}),
    "vec": ModalitySpec("vector", (4,)),
}
K = 3


def tiny_dataset(n: int = 6) -> MultimodalDataset:
    g = torch.Generator().manual_seed(1)
    tokens = torch.ones(n, 5, dtype=torch.bool)
    tokens[0, 3:] = False
    ids = torch.randint(1, 20, (n, 6), generator=g)
    ids[:, 4:] = 0
    return MultimodalDataset(
        "tiny",
        {
            "img": torch.randn(n, 1, 8, 8, generator=g),
            "seq": torch.randn(n, 5, 3, generator=g),
            "txt": ids,
            "vec": torch.randn(n, 4, generator=g),
        },
        torch.arange(n) % K,
        specs=SPECS,
        num_classes=K,
        masks={"seq": tokens},
    )


def batch(ds: MultimodalDataset) -> tuple[dict, dict]:
    return dict(ds.inputs), dict(ds.masks)


def fusion_cases() -> list[tuple[str, dict]]:
    cases = [(name, {}) for name in mmfuse.list_fusions()]
    if "late" in mmfuse.list_fusions():
        cases.append(("late", {"level": "decision"}))
    return cases


@pytest.mark.parametrize(("fusion", "options"), fusion_cases(), ids=lambda v: str(v))
def test_every_fusion_builds_trains_and_ignores_missing(fusion: str, options: dict) -> None:
    torch.manual_seed(0)
    model = build_model(SPECS, K, fusion, hidden_dim=8, fusion_options=options).eval()
    inputs, masks = batch(tiny_dataset())
    logits = model(inputs, masks)
    assert logits.shape == (6, K) and torch.isfinite(logits).all()

    # a missing modality: whatever its values, the outputs are the same
    masks_missing = {**masks, "vec": torch.tensor([True, False, True, False, True, True])}
    ref = model(inputs, masks_missing)
    noisy = {**inputs, "vec": inputs["vec"].clone()}
    noisy["vec"][[1, 3]] = torch.randn(2, 4) * 100
    torch.testing.assert_close(model(noisy, masks_missing), ref, rtol=0, atol=0)
    # and each sample is independent of the rest of the batch
    for i in (0, 3):
        one = model({k: v[i : i + 1] for k, v in inputs.items()}, {k: v[i : i + 1] for k, v in masks_missing.items()})
        torch.testing.assert_close(one[0], ref[i], rtol=1e-4, atol=1e-5)

    # the loss reaches every trainable parameter used for present inputs
    model.train()
    loss = nn.functional.cross_entropy(model(inputs, masks), torch.arange(6) % K)
    loss.backward()
    assert all(p.grad is not None for p in model.encoders.parameters() if p.requires_grad)

    out, info = model.eval()(inputs, masks, return_intermediates=True)
    assert isinstance(info, FusionIntermediates)
    torch.testing.assert_close(out, model(inputs, masks))


@pytest.mark.parametrize(("fusion", "options"), fusion_cases(), ids=lambda v: str(v))
def test_config_rebuilds_the_same_model(fusion: str, options: dict) -> None:
    torch.manual_seed(0)
    model = build_model(SPECS, K, fusion, hidden_dim=8, fusion_options=options).eval()
    config = json.loads(json.dumps(model.config))
    torch.manual_seed(123)  # other initial weights: only the architecture must match
    again = build_model_from_config(config).eval()
    again.load_state_dict(model.state_dict(), strict=True)
    inputs, masks = batch(tiny_dataset())
    assert torch.equal(again(inputs, masks), model(inputs, masks))


def test_decision_level_late_fusion_has_no_head() -> None:
    model = build_model(SPECS, K, "late", hidden_dim=8, fusion_options={"level": "decision"})
    assert model.fusion.outputs_logits and isinstance(model.head, nn.Identity)
    assert model.fusion.output_dim == K
    inputs, masks = batch(tiny_dataset())
    logp = model(inputs, masks)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(6))  # log-probabilities
    feature = build_model(SPECS, K, "late", hidden_dim=8)
    assert not feature.fusion.outputs_logits and not isinstance(feature.head, nn.Identity)


def test_hand_assembled_model_equals_its_parts() -> None:
    enc = {"a": nn.Linear(3, 4), "b": nn.Linear(2, 4)}
    fusion = create_fusion("early", input_dims={"a": 4, "b": 4}, output_dim=5)
    head = nn.Linear(5, 2)
    model = MultimodalModel(enc, fusion, head)
    x = {"b": torch.randn(3, 2), "a": torch.randn(3, 3)}  # dict order does not matter
    masks = {"a": torch.tensor([True, False, True])}
    want = head(fusion({"a": enc["a"](x["a"]), "b": enc["b"](x["b"])}, masks))
    torch.testing.assert_close(model(x, masks), want)
    assert model.config is None and model.modalities == ("a", "b")


def test_decision_fusion_refuses_a_head() -> None:
    fusion = create_fusion("late", input_dims={"a": 4, "b": 4}, output_dim=2, level="decision")
    with pytest.raises(FusionError, match="expected no head"):
        MultimodalModel({"a": nn.Identity(), "b": nn.Identity()}, fusion, nn.Linear(2, 2))
    model = MultimodalModel({"a": nn.Identity(), "b": nn.Identity()}, fusion)
    assert isinstance(model.head, nn.Identity)


def test_unimodal_reads_one_modality_only() -> None:
    torch.manual_seed(0)
    uni = build_unimodal_model(SPECS, K, "seq", hidden_dim=8).eval()
    assert isinstance(uni, UnimodalModel)
    inputs, masks = batch(tiny_dataset())
    logits, info = uni(inputs, masks, return_intermediates=True)
    assert info is None and logits.shape == (6, K)
    other = {**inputs, "vec": torch.randn(6, 4), "img": torch.zeros(6, 1, 8, 8)}
    assert torch.equal(uni(other, masks), logits)
    # the pooled baseline is the encoder's masked token mean through the head
    feats, tok = uni.encoder(inputs["seq"], masks["seq"])
    pooled = (feats * tok.unsqueeze(-1)).sum(1) / tok.sum(1, keepdim=True)
    torch.testing.assert_close(logits, uni.head(pooled))
    # same encoder architecture as the fused model uses
    fused = build_model(SPECS, K, "early", hidden_dim=8)
    assert {k: v.shape for k, v in uni.encoder.state_dict().items()} == {
        k: v.shape for k, v in fused.encoders["seq"].state_dict().items()
    }
    again = build_model_from_config(json.loads(json.dumps(uni.config)))
    assert isinstance(again, UnimodalModel) and again.modality == "seq"


def test_modalities_subset() -> None:
    model = build_model(SPECS, K, "early", hidden_dim=8, modalities=["vec", "img"])
    assert model.modalities == ("img", "vec")
    inputs, masks = batch(tiny_dataset())
    assert model(inputs, masks).shape == (6, K)  # extra modalities in the batch are ignored


def test_build_from_the_dataset_itself() -> None:
    ds = tiny_dataset()
    torch.manual_seed(0)
    from_ds = build_model(ds, fusion="gated", hidden_dim=8)
    torch.manual_seed(0)
    from_specs = build_model(SPECS, K, "gated", hidden_dim=8)
    assert from_ds.config == from_specs.config
    inputs, masks = batch(ds)
    torch.testing.assert_close(from_ds.eval()(inputs, masks), from_specs.eval()(inputs, masks))
    uni = build_unimodal_model(ds, modality="vec", hidden_dim=8)
    assert uni.config["num_classes"] == K
    with pytest.raises(FusionError, match="num_classes"):
        build_model(SPECS, fusion="gated")
    with pytest.raises(FusionError, match="modality"):
        build_unimodal_model(ds)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"fusion": "nope"}, "unknown fusion"),
        ({"modalities": ["vec", "audio"]}, "modalities"),
        ({"fusion_options": {"bogus": 1}}, "bogus"),
        ({"encoder_options": {"zzz": {}}}, "encoder_options"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_build_model_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"num_classes": K, "fusion": "early", **kwargs}
    with pytest.raises(FusionError, match=match):
        build_model(SPECS, args.pop("num_classes"), args.pop("fusion"), **args)


def test_bad_model_inputs_raise() -> None:
    model = build_model(SPECS, K, "early", hidden_dim=8)
    inputs, masks = batch(tiny_dataset())
    with pytest.raises(FusionError, match="modality 'vec': expected a tensor"):
        model({k: v for k, v in inputs.items() if k != "vec"}, masks)
    with pytest.raises(FusionError, match="expected input shape"):
        model({**inputs, "vec": torch.randn(6, 5)}, masks)
    with pytest.raises(FusionError, match="inputs"):
        model([inputs], masks)  # type: ignore[arg-type]
    with pytest.raises(FusionError, match="every modality"):
        model(inputs, {k: torch.zeros(6, dtype=torch.bool) for k in inputs})
    with pytest.raises(FusionError, match="unimodal|modality"):
        build_unimodal_model(SPECS, K, "audio")


def test_mmfuse_exports_and_no_lightning() -> None:
    import subprocess
    import sys

    code = "import sys, mmfuse; mmfuse.MultimodalModel; mmfuse.build_model; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("fusion", ["gated", "cross_attention", "low_rank"])
def test_any_string_is_a_modality_name_in_build_model(fusion: str) -> None:
    """Column names become modality names: '.' and attribute names of nn.Module /
    nn.ModuleDict ('items', 'training', 'keys', 'type') must work and round-trip."""
    rename = {"img": "items", "seq": "a.b", "txt": "training", "vec": "type"}
    ds = tiny_dataset()
    specs = {rename[k]: v for k, v in SPECS.items()}
    inputs = {rename[k]: v for k, v in ds.inputs.items()}
    masks = {rename[k]: v for k, v in ds.masks.items()}
    torch.manual_seed(0)
    model = build_model(specs, K, fusion, hidden_dim=8).eval()
    assert model.modalities == tuple(sorted(rename.values()))
    assert list(model.encoders) == sorted(rename.values())
    logits = model(inputs, masks)
    assert logits.shape == (6, K) and torch.isfinite(logits).all()
    # a missing modality under an escaped name has no influence
    masks_missing = {**masks, "type": torch.tensor([True, False, True, False, True, True])}
    ref = model(inputs, masks_missing)
    noisy = {**inputs, "type": inputs["type"].clone()}
    noisy["type"][[1, 3]] = 100.0
    torch.testing.assert_close(model(noisy, masks_missing), ref, rtol=0, atol=0)
    rebuilt = build_model_from_config(json.loads(json.dumps(model.config)))
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(inputs, masks), logits, rtol=0, atol=0)


@pytest.mark.parametrize("fusion, options", [("late", {"level": "decision"}), ("gated", {})])
def test_the_fusion_is_built_once_with_weights(fusion: str, options: dict, monkeypatch) -> None:
    """A decision-level fusion was built with weights, thrown away and built again with the class
    count; now only one build draws weights (a question asked on the meta device draws none)."""
    import mmfuse.models.builder as builder

    real_builds = []
    real = builder.create_fusion

    def counting(name, **kw):
        fuse = real(name, **kw)
        if any(p.device.type != "meta" for p in fuse.parameters()):
            real_builds.append(kw["output_dim"])
        return fuse

    monkeypatch.setattr(builder, "create_fusion", counting)
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(ds, fusion=fusion, hidden_dim=8, fusion_options=options)
    assert real_builds == [ds.num_classes if fusion == "late" else 8]
    assert isinstance(model.head, nn.Identity) == (fusion == "late")
