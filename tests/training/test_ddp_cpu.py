"""Multi-process data-parallel training passes through to Lightning: two CPU processes
(gloo) under ``strategy=ddp`` train one model, rank 0 alone reports and writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfuse.training import load_checkpoint


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mmfuse"
    if not exe.exists():
        exe = Path(shutil.which("mmfuse") or "")
    if not exe.is_file():
        pytest.skip("the mmfuse console script is not installed next to this Python")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(exe), "train", "--dataset", "synthetic", "--fusion", "gated", "--out", str(out),
         "epochs=2", "accelerator=cpu", "devices=2", "strategy=ddp", "progress=false", "data.n=400"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one report (rank 0), one checkpoint that reloads on its own
    assert proc.stdout.count("checkpoint:") == 1, proc.stdout
    assert json.loads((out / "fit.json").read_text())["world_size"] == 2
    model = load_checkpoint(out / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) > 0
