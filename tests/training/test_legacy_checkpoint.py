"""A checkpoint written by mmfuse 0.1 (``Mlp`` weights as ``net.<i>``, no weights hash) loads
through ``load_checkpoint`` and predicts exactly what the model it was saved from predicts."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmfuse.data import ModalitySpec
from mmfuse.models import build_model
from mmfuse.training.checkpoint import load_checkpoint, save_checkpoint


def test_a_0_1_checkpoint_loads_with_its_old_mlp_names(tmp_path) -> None:
    specs = {"a": ModalitySpec("vector", (5,)), "b": ModalitySpec("vector", (3,))}
    torch.manual_seed(0)
    model = build_model(specs, 2, "early", hidden_dim=8, dropout=0.0).eval()
    path = save_checkpoint(model, tmp_path / "new.safetensors")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    state = load_file(str(path))
    # 0.1's nn.Sequential layout: Linear, [LayerNorm], activation, Linear
    legacy = {}
    for key, value in state.items():
        if key == "temperature":  # 0.1 had no temperature buffer: it loads as T = 1
            continue
        prefix, layer, param = key.rsplit(".", 2)
        if layer in ("fc1", "norm1", "fc_out"):
            has_norm = f"{prefix}.norm1.weight" in state
            index = {"fc1": 0, "norm1": 1, "fc_out": 3 if has_norm else 2}[layer]
            key = f"{prefix}.net.{index}.{param}"
        legacy[key] = value
    assert any(".net.3." in k for k in legacy) and not any(".fc1." in k for k in legacy)
    save_file(legacy, str(tmp_path / "old.safetensors"),
              metadata={k: v for k, v in metadata.items() if k != "weights_sha256"})
    loaded = load_checkpoint(tmp_path / "old.safetensors")
    x = {"a": torch.randn(4, 5), "b": torch.randn(4, 3)}
    assert torch.equal(loaded(x), model(x))
