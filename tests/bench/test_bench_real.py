"""The bench with real training on a tiny synthetic grid: files, invariants of the measurements, Ray, Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

import mmfuse
from mmfuse.bench import BenchConfig, RayExecutor, ResultsStore, SerialExecutor, run_bench

pytest.importorskip("mmfuse.training", reason="mmfuse.training is not available")
pytestmark = pytest.mark.timeout(240)

WANTED = ["gated", "cross_modal_transformer"]


def _fusions() -> list[str]:
    names = mmfuse.list_fusions()
    chosen = [f for f in WANTED if f in names]
    if len(chosen) < 2:
        chosen = names[:2]
    if len(chosen) < 2:
        pytest.skip(f"fewer than two fusions registered: {names}")
    return chosen


def _tiny(out: Path, **kw: object) -> BenchConfig:
    base: dict[str, object] = dict(
        datasets=["synthetic"], synthetic_tasks=["synergy"], dataset_options={"synthetic": {"n": 240, "dim": 8}},
        fusions=_fusions(), seeds=1, dropout_seeds=1, epochs=2, batch_size=64, hidden_dim=16, patience=0,
        noise_scales=[0, 1], intermediates_samples=32, executor="serial", out=str(out),
    )
    base.update(kw)
    return BenchConfig(**base)


def _quiet() -> Console:
    return Console(file=open("/dev/null", "w"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench") / "res"
    outcome = run_bench(_tiny(out), executor=SerialExecutor(), console=_quiet())
    return out, outcome


def test_tiny_grid_writes_complete_results(tiny_run) -> None:
    out, outcome = tiny_run
    fusions = _fusions()
    # 2 unimodal baselines + 2 fusions, 1 seed, plus the 2 fusions with modality dropout
    assert len(outcome.records) == 6 and outcome.failed == 0, [r.get("error") for r in outcome.records]
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 6
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 6
    assert {r["model"] for r in rows} == {"uni:x0", "uni:x1", *fusions}
    assert {r["variant"] for r in rows if r["model"] in fusions} == {"standard", "modality_dropout"}
    for r in rows:
        for col in ("accuracy", "macro_f1", "params", "train_time_s", "throughput_sps", "peak_rss_mb",
                    "missing:x0", "missing:x1", "noise:0", "noise:1"):
            assert r[col] != "", (r["model"], col)
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        assert float(r["throughput_sps"]) > 0 and float(r["peak_rss_mb"]) > 50
    pngs = {p.name: p.stat().st_size for p in (out / "plots").glob("*.png")}
    for name in ("accuracy.png", "cost_params.png", "robustness_noise.png", "robustness_missing.png"):
        assert pngs.get(name, 0) > 5000, (name, pngs)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) >= 4
    assert "<table>" in html and all(f in html for f in fusions) and "uni:x0" in html


def test_measurements_obey_their_invariants(tiny_run) -> None:
    _, outcome = tiny_run
    for rec in outcome.records:
        res = rec["result"]
        acc = res["metrics"]["accuracy"]
        assert res["noise"]["x0"]["0"] == acc and res["noise"]["x1"]["0"] == acc  # no noise is the clean score
        assert res["noise_mean"]["1"] == pytest.approx((res["noise"]["x0"]["1"] + res["noise"]["x1"]["1"]) / 2)
        if rec["label"] == "uni:x0":
            # a model of x0 alone does not see x1: removing or noising x1 changes nothing
            assert res["missing"]["x1"] == pytest.approx(acc)
            assert res["noise"]["x1"]["1"] == pytest.approx(acc)
        # the parameter count is the one of the architecture the spec describes
        spec = rec["spec"]
        from mmfuse.data import load_dataset
        from mmfuse.models import build_model, build_unimodal_model

        splits = load_dataset("synthetic", seed=0, **spec["dataset_options"])
        model = (build_unimodal_model(splits.specs, 2, modality=spec["modality"], hidden_dim=16)
                 if spec["model"] == "unimodal" else
                 build_model(splits.specs, 2, fusion=spec["model"], hidden_dim=16))
        assert res["params"] == sum(p.numel() for p in model.parameters())
    learned = {r["label"]: r["result"]["learned"] for r in outcome.records
               if r["spec"]["variant"] == "standard" and not r["spec"]["model"] == "unimodal"}
    if "gated" in learned:
        w = learned["gated"]["modality_weights"]
        assert set(w) == {"x0", "x1"} and len(w["x0"]) == 32
        assert all(a + b == pytest.approx(1.0, abs=1e-3) for a, b in zip(w["x0"], w["x1"], strict=True))
    if "cross_modal_transformer" in learned:
        att = learned["cross_modal_transformer"]["attention"]
        assert att and all(len(a["samples"]) == 4 for a in att.values())


def test_invalid_fusion_option_is_recorded_and_the_rest_complete(tmp_path: Path) -> None:
    fusions = _fusions()
    cfg = _tiny(tmp_path / "res", unimodal=False, modality_dropout=0.0, plots=False, report=False,
                fusion_options={fusions[0]: {"no_such_option": 1}})
    outcome = run_bench(cfg, executor=SerialExecutor(), console=_quiet())
    status = {r["label"]: r for r in outcome.records}
    assert status[fusions[1]]["status"] == "ok"
    bad = status[fusions[0]]
    assert bad["status"] == "failed" and "no_such_option" in bad["error"] and "Traceback" in bad["traceback"]
    assert outcome.failed == 1
    assert [r["status"] for r in ResultsStore(cfg.out).records()].count("ok") == 1


def test_ray_executor_runs_the_same_grid(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mmfuse[ray]')")
    cfg = _tiny(tmp_path / "res", executor="ray", modality_dropout=0.0, plots=False, report=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_bench(cfg, executor=RayExecutor(), console=_quiet())
    finally:
        ray.shutdown()
    assert outcome.failed == 0, [r.get("error") for r in outcome.records]
    assert len(outcome.records) == 4 and outcome.ran == 4
    import os

    assert all(r["pid"] != os.getpid() for r in outcome.records)  # ran in Ray workers
    assert all(r["result"]["torch_threads"] == 1 for r in outcome.records)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(tiny_run, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out, _ = tiny_run
    report = (out / "report.html").resolve()
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20000
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (1600, 1200)
    var = float(img.var())
    assert var > 100, f"screenshot looks blank (pixel variance {var:.1f})"
    # the table's rows: many distinct grey levels in the top half, not one flat colour
    assert len(np.unique(img[:800].round())) > 20
    dom = subprocess.run([exe, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0
    assert "<table>" in dom.stdout and "gain vs best unimodal" in dom.stdout
    assert all(f in dom.stdout for f in _fusions())


def test_missing_modality_is_scored_on_samples_that_keep_another() -> None:
    import torch

    from mmfuse.bench.run import _others_present
    from mmfuse.data import ModalitySpec, MultimodalDataset

    ds = MultimodalDataset(
        "t", {"a": torch.zeros(4, 3), "b": torch.zeros(4, 5, 2)}, torch.tensor([0, 1, 0, 1]),
        specs={"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("sequence", (5, 2))}, num_classes=2,
        masks={"a": torch.tensor([True, True, False, True]),
               "b": torch.tensor([[True] * 5, [False] * 5, [True, False, False, False, False], [False] * 5])},
    )
    # without a, only samples whose b has a valid token remain; without b, those where a is present
    assert _others_present(ds, "a").tolist() == [True, False, True, False]
    assert _others_present(ds, "b").tolist() == [True, True, False, True]
