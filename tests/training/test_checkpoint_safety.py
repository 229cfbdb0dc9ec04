"""Damaged or hostile checkpoint files: each refused with a CheckpointError that names
the file, before any model of the size they ask for is allocated."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmfuse.data import ModalitySpec
from mmfuse.models import build_model
from mmfuse.training import CheckpointError, fit, load_checkpoint, save_checkpoint
from mmfuse.training import checkpoint as ckpt
from mmfuse.training.config import TrainConfig

SPECS = {"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("vector", (5,))}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(SPECS, 2, "gated", hidden_dim=4)
    return model, save_checkpoint(model, tmp_path / "model.safetensors")


def rewrite_config(path, change) -> None:
    """Edit the config in the header; the tensor data (and its recorded hash) stay as written."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    config = json.loads(meta["config"])
    change(config)
    meta["config"] = json.dumps(config)
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_current_files_carry_and_pass_their_hash(saved) -> None:
    model, path = saved
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    import hashlib

    assert meta["weights_sha256"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    loaded = load_checkpoint(path)
    x = {"a": torch.randn(2, 3), "b": torch.randn(2, 5)}
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_files_without_a_hash_still_load(saved, tmp_path) -> None:
    model, path = saved
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    del meta["weights_sha256"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=meta)
    assert load_checkpoint(old).config == model.config


def test_a_flipped_byte_in_the_weights_is_refused(saved) -> None:
    _, path = saved
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights are damaged: SHA-256"):
        load_checkpoint(path)


def test_a_flipped_byte_in_a_training_state_is_refused(tmp_path) -> None:
    path = ckpt.save_tree({"w": torch.arange(10.0)}, tmp_path / "last.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x80
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="last.safetensors: the weights are damaged"):
        ckpt.load_tree(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.pop("specs"), "missing"),
        (lambda c: c.update(specs={"../../evil": c["specs"]["a"], "b": c["specs"]["b"]}), "invalid|do not fit"),
        (lambda c: c["specs"]["a"].update(shape=[-3]), "shape"),
        (lambda c: c["specs"]["a"].update(shape="3"), "shape"),
        (lambda c: c.update(num_classes="two"), "invalid"),
        (lambda c: c.update(fusion="nope"), "invalid"),
        (lambda c: c.update(hidden_dim=8), "shape"),
    ],
    ids=["no-specs", "evil-name", "negative-shape", "shape-not-list", "bad-classes", "bad-fusion", "other-width"],
)
def test_bad_configs_are_refused_naming_the_file(saved, change, match) -> None:
    _, path = saved
    rewrite_config(path, change)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_huge_config_is_refused_before_allocating(saved, monkeypatch) -> None:
    _, path = saved
    rewrite_config(path, lambda c: c.update(hidden_dim=2**22))
    import mmfuse.models

    devices = []
    real = mmfuse.models.build_model_from_config

    def spy(config):
        devices.append(torch.get_default_device().type)
        return real(config)

    monkeypatch.setattr(mmfuse.models, "build_model_from_config", spy)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*the config describes shape"):
        load_checkpoint(path)
    assert devices == ["meta"]  # only the allocation-free skeleton was ever built


@pytest.mark.parametrize(
    "tree",
    [{"__tensor__": "t99"}, {"__items__": [[{"k": 1}, 2]]}, {"__tuple__": 5}],
    ids=["missing-tensor", "unhashable-key", "tuple-not-list"],
)
def test_malformed_trees_raise_naming_the_file(tmp_path, tree) -> None:
    path = tmp_path / "last.safetensors"
    save_file({"t0": torch.zeros(1)}, str(path), metadata={"format": ckpt.TREE_FORMAT, "tree": json.dumps(tree)})
    with pytest.raises(CheckpointError, match="last.safetensors: malformed structure"):
        ckpt.load_tree(path)


def test_resume_from_a_malformed_training_state_names_the_file(small_splits, tmp_path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False)
    torch.manual_seed(0)
    fit(build_model(small_splits, fusion="gated", hidden_dim=8), small_splits, cfg, tmp_path)
    last = tmp_path / "last.safetensors"
    good = ckpt.load_tree(last)

    broken = dict(good)
    del broken["optimizer_states"]
    ckpt.save_tree(broken, last)
    with pytest.raises(CheckpointError, match=r"last\.safetensors: .*missing 'optimizer_states'"):
        fit(build_model(small_splits, fusion="gated", hidden_dim=8), small_splits, cfg.replace(epochs=2),
            tmp_path, resume=True)

    broken = dict(good, callbacks={"mmfuse.ResumeState": {**good["callbacks"]["mmfuse.ResumeState"], "wait": "x"}})
    ckpt.save_tree(broken, last)
    with pytest.raises(CheckpointError, match=r"last\.safetensors: .*'wait'"):
        fit(build_model(small_splits, fusion="gated", hidden_dim=8), small_splits, cfg.replace(epochs=2),
            tmp_path, resume=True)

    ckpt.save_tree(good, last)  # another architecture cannot resume from it
    with pytest.raises(CheckpointError, match=r"last\.safetensors: its weights do not fit this model"):
        fit(build_model(small_splits, fusion="early", hidden_dim=8), small_splits, cfg.replace(epochs=2),
            tmp_path, resume=True)
