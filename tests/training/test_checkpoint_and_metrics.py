"""Checkpoint files (safetensors + JSON, atomic, no pickle) and evaluate()'s metrics
against the formulas written out by hand."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from torch import nn

from mmfuse.data import ModalitySpec, MultimodalDataset
from mmfuse.data.transforms import MissingModality
from mmfuse.fusions import create_fusion
from mmfuse.models import MultimodalModel, build_model
from mmfuse.training import CheckpointError, evaluate, load_checkpoint, save_checkpoint
from mmfuse.training import checkpoint as ckpt

SPECS = {"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("text", (4,), {"vocab_size": 9, "pad_id": 0})}


def test_tree_round_trip_keeps_types_and_values(tmp_path) -> None:
    tree = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 1: {}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False}],
        "best": math.inf,
        "none": None,
        "ints": torch.arange(5, dtype=torch.int64),
        "bools": torch.tensor([True, False]),
        "bytes": torch.tensor([1, 255], dtype=torch.uint8),
        "__weird": "key starting with underscores",
        "nested": [(1, "x"), [2.5, {"k": torch.zeros(0)}]],
    }
    path = ckpt.save_tree(tree, tmp_path / "t.safetensors")
    back = ckpt.load_tree(path)
    assert back["state"].keys() == {0, 1}
    assert torch.equal(back["state"][0]["exp_avg"], tree["state"][0]["exp_avg"])
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["best"] == math.inf and back["none"] is None and back["__weird"] == tree["__weird"]
    assert back["ints"].dtype == torch.int64 and torch.equal(back["bools"], tree["bools"])
    assert back["bytes"].dtype == torch.uint8
    assert back["nested"][0] == (1, "x") and back["nested"][1][1]["k"].shape == (0,)


def test_files_are_safetensors_with_json_header(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(SPECS, 2, "early", hidden_dim=4)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # a plain JSON header: no pickle anywhere
    assert header["__metadata__"]["format"] == "mmfuse.model/1"
    assert json.loads(header["__metadata__"]["config"]) == json.loads(json.dumps(model.config))
    assert set(model.state_dict()) <= set(header)


def test_unstorable_objects_and_configless_models_raise(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint.x: cannot store a object"):
        ckpt.save_tree({"x": object()}, tmp_path / "t.safetensors")
    fusion = create_fusion("early", input_dims={"a": 2}, output_dim=2)
    hand = MultimodalModel({"a": nn.Identity()}, fusion)
    with pytest.raises(CheckpointError, match="no config"):
        save_checkpoint(hand, tmp_path / "h.safetensors")
    model = build_model(SPECS, 2, "early", hidden_dim=4, fusion_options={"act_layer": nn.ReLU})
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(model, tmp_path / "j.safetensors")


def test_bad_checkpoint_files_raise(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(junk)
    tree = ckpt.save_tree({"a": 1}, tmp_path / "tree.safetensors")
    with pytest.raises(CheckpointError, match=r"expected a record of format mmfuse.model/1, got format 'mmfuse.tree/1' \(another kind of file\)"):
        load_checkpoint(tree)
    torch.manual_seed(0)
    small = save_checkpoint(build_model(SPECS, 2, "early", hidden_dim=4), tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match="expected a record of format mmfuse.tree/1"):
        ckpt.load_tree(small)


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch) -> None:
    path = ckpt.save_tree({"v": torch.tensor([1.0])}, tmp_path / "last.safetensors")

    import mmfuse.io

    def crash(fd):  # the temp file holds the whole new content when the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(mmfuse.io.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_tree({"v": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_tree(path)["v"], torch.tensor([1.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


class FixedLogits(nn.Module):
    """Returns the logits stored in input 'z' where 'z' is present, else a constant row."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen_masks: list[torch.Tensor] = []

    def forward(self, inputs, masks=None):
        m = masks["z"]
        self.seen_masks.append(m)
        fallback = torch.zeros(inputs["z"].shape[1])
        fallback[0] = 5.0
        return torch.where(m.unsqueeze(1), inputs["z"], fallback) + self.w


def fixed_dataset(logits: torch.Tensor, labels: torch.Tensor) -> MultimodalDataset:
    k = logits.shape[1]
    return MultimodalDataset("fixed", {"z": logits}, labels, specs={"z": ModalitySpec("vector", (k,))}, num_classes=k)


def test_evaluate_multiclass_by_hand() -> None:
    logits = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 4, 0], [2, 0, 0], [0, 0, 3]])
    labels = torch.tensor([0, 1, 2, 2, 1, 2])  # preds: 0 1 2 1 0 2
    out = evaluate(FixedLogits(), fixed_dataset(logits, labels), batch_size=4)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6)
    # per class F1 = 2 tp / (2 tp + fp + fn): class 0: 1,1,0 ; class 1: 1,1,1 ; class 2: 2,0,1
    f1 = [2 / (2 + 1), 2 / (2 + 1 + 1), 4 / (4 + 1)]
    assert out["macro_f1"] == pytest.approx(sum(f1) / 3, rel=1e-6)
    # one-vs-rest AUROC of the softmax probability, averaged over the classes:
    # P(p_c of a sample of class c > p_c of another), ties 1/2
    probs = torch.softmax(logits, dim=1)
    aucs = []
    for c in range(3):
        pos, neg = probs[labels == c, c], probs[labels != c, c]
        wins = [(1.0 if p > q else 0.5 if p == q else 0.0) for p in pos for q in neg]
        aucs.append(sum(wins) / len(wins))
    assert out["auroc"] == pytest.approx(sum(aucs) / 3)


def test_evaluate_binary_auroc_by_hand() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    logits = torch.stack([torch.zeros(6), torch.logit(scores)], 1)
    out = evaluate(FixedLogits(), fixed_dataset(logits, labels))
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos.unsqueeze(1) > neg.unsqueeze(0)).float().mean()  # P(score+ > score-), no ties
    assert out["auroc"] == pytest.approx(float(pairs))


def test_evaluate_applies_the_corruption_to_every_batch() -> None:
    logits = torch.eye(3).repeat(3, 1) * 4
    labels = torch.arange(3).repeat(3)
    model = FixedLogits()
    assert evaluate(model, fixed_dataset(logits, labels), batch_size=4)["accuracy"] == 1.0
    model.seen_masks.clear()
    corrupted = evaluate(model, fixed_dataset(logits, labels), corruption=MissingModality("z"), batch_size=4)
    assert corrupted["accuracy"] == pytest.approx(1 / 3)  # the fallback always says class 0
    assert len(model.seen_masks) == 3 and not any(bool(m.any()) for m in model.seen_masks)


def test_evaluate_restores_training_mode_and_rejects_empty() -> None:
    model = FixedLogits().train()
    ds = fixed_dataset(torch.eye(2), torch.arange(2))
    evaluate(model, ds)
    assert model.training
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, ds.subset([]))
