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
from mmfuse.experiment import MeasureConfig
from mmfuse.training import TrainConfig

pytestmark = pytest.mark.timeout(240)

WANTED = ["gated", "cross_modal_transformer"]


def _fusions() -> list[str]:
    names = mmfuse.list_fusions()
    missing = [f for f in WANTED if f not in names]
    assert not missing, f"built-in strategies {missing} are not registered"  # a failure, not a silent swap
    return list(WANTED)


def _tiny(out: Path, **kw: object) -> BenchConfig:
    base: dict[str, object] = dict(
        datasets=["synthetic"], synthetic_tasks=["synergy"], dataset_options={"synthetic": {"n": 240, "dim": 8}},
        fusions=_fusions(), seeds=1, dropout_seeds=1, hidden_dim=16,
        train=TrainConfig(epochs=2, batch_size=64, patience=0, lr=3e-3, progress=False),
        measure=MeasureConfig(noise_scales=(1.0,), intermediates_samples=32), executor="serial", out=str(out),
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
    assert len(outcome.records) == 6 and outcome.failed == 0, [r.error for r in outcome.records]
    assert outcome.trained == 6
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 6
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 6
    assert {r["model"] for r in rows} == {"uni:x0", "uni:x1", *fusions}
    assert {r["variant"] for r in rows if r["model"] in fusions} == {"standard", "modality_dropout"}
    for r in rows:
        for col in ("accuracy", "macro_f1", "params", "train_time_s", "throughput_sps", "memory_mb", "noise:1"):
            assert r[col] != "", (r["model"], col)
        if not r["model"].startswith("uni:"):
            assert r["missing:x0"] != "" and r["missing:x1"] != ""
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        # the model's own memory: at least its parameters x 4 (weights, grads, two AdamW moments)
        assert float(r["throughput_sps"]) > 0 and float(r["memory_mb"]) >= 4 * 4 * float(r["params"]) / 2**20
    pngs = {p.name: p.stat().st_size for p in (out / "plots").glob("*.png")}
    for name in ("accuracy.png", "cost_params.png", "robustness_noise.png", "robustness_missing.png"):
        assert pngs.get(name, 0) > 5000, (name, pngs)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) >= 4
    assert "<table>" in html and all(f in html for f in fusions) and "uni:x0" in html
    # every trained model is saved as a run bundle under its training key, for re-measuring and predicting
    assert {p.parent.name for p in (out / "models").glob("*/bundle.json")} == {r.train_key for r in outcome.records}
    assert all((out / "models" / r.train_key / "model.safetensors").is_file() for r in outcome.records)


def test_measurements_obey_their_invariants(tiny_run) -> None:
    from mmfuse.experiment import build_for, load_data

    _, outcome = tiny_run
    for rec in outcome.records:
        m = rec.measurement
        assert m.noise_mean["1"] == pytest.approx(sum(m.noise[k]["1"] for k in m.noise) / len(m.noise))
        if rec.label.startswith("uni:"):  # a baseline is noised on its own modality only
            assert set(m.noise) == {rec.label[4:]} and m.missing == {}
        else:
            assert set(m.noise) == {"x0", "x1"} and set(m.missing) == {"x0", "x1"}
        # the parameter count is the one of the architecture the spec describes
        model = build_for(rec.spec, load_data(rec.spec.data))
        assert rec.training.params == sum(p.numel() for p in model.parameters())
    learned = {r.label: r.measurement.learned for r in outcome.records
               if r.spec.variant.value == "standard" and r.measurement.learned is not None}
    if "gated" in learned:
        w = learned["gated"].modality_weights
        assert set(w) == {"x0", "x1"} and len(w["x0"]) == 32
        assert all(a + b == pytest.approx(1.0, abs=1e-3) for a, b in zip(w["x0"], w["x1"], strict=True))
    if "cross_modal_transformer" in learned:
        att = learned["cross_modal_transformer"].attention
        assert att and all(len(a.samples) == 4 for a in att.values())


def test_new_test_time_settings_re_measure_without_training(tiny_run, tmp_path: Path) -> None:
    out, first = tiny_run
    copy = tmp_path / "res"
    shutil.copytree(out, copy)
    cfg = _tiny(copy, measure=MeasureConfig(noise_scales=(1.0, 3.0), intermediates_samples=32))
    again = run_bench(cfg, executor=SerialExecutor(), console=_quiet())
    assert again.ran == 6 and again.trained == 0 and again.failed == 0  # measured again, nothing trained
    assert all(not r.training.trained_now for r in again.records)
    before = {r.train_key: r.measurement for r in first.records}
    for rec in again.records:
        assert set(rec.measurement.noise_mean) == {"1", "3"}
        # the same saved weights: the clean score and the old noise column are unchanged
        assert rec.measurement.metrics == before[rec.train_key].metrics
        assert rec.measurement.noise_mean["1"] == before[rec.train_key].noise_mean["1"]
    rows = list(csv.DictReader((copy / "results.csv").open()))
    assert all(r["noise:3"] != "" for r in rows)
    assert "noise 3" in (copy / "report.html").read_text()


def test_a_bench_run_and_mmfuse_train_give_bit_identical_weights(tiny_run, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from mmfuse.cli import main

    out, outcome = tiny_run
    rec = next(r for r in outcome.records if r.label == "gated" and r.spec.variant.value == "standard")
    t = rec.spec.train
    argv = ["train", "--dataset", "synthetic", "--fusion", "gated", "--out", str(tmp_path / "run"),
            "data.task=synergy", "data.n=240", "data.dim=8", "hidden_dim=16", f"epochs={t.epochs}",
            f"batch_size={t.batch_size}", f"patience={t.patience}", f"lr={t.lr}", "progress=false"]
    assert main(argv) == 0
    spec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert spec["train_key"] == rec.train_key  # the same settings are the same model...
    a = load_file(str(out / "models" / rec.train_key / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # ...with the same weights, bit for bit


def test_a_run_that_breaks_is_recorded_and_the_rest_complete(tmp_path: Path) -> None:
    fusions = _fusions()
    # a tensor fusion over these dims is refused when built (max_size): a failure at run time
    cfg = _tiny(tmp_path / "res", unimodal=False, modality_dropout=0.0, plots=False, report=False,
                fusions=[fusions[0], "tensor"], fusion_options={"tensor": {"max_size": 2}})
    outcome = run_bench(cfg, executor=SerialExecutor(), console=_quiet())
    status = {r.label: r for r in outcome.records}
    assert status[fusions[0]].ok
    bad = status["tensor"]
    assert bad.status == "failed" and "max_size" in bad.error and "Traceback" in bad.traceback
    assert outcome.failed == 1
    assert [r.ok for r in ResultsStore(cfg.out).records()].count(True) == 1


def test_ray_executor_runs_the_same_grid(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mmfuse[ray]')")
    cfg = _tiny(tmp_path / "res", executor="ray", modality_dropout=0.0, plots=False, report=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_bench(cfg, executor=RayExecutor(), console=_quiet())
    finally:
        ray.shutdown()
    assert outcome.failed == 0, [r.error for r in outcome.records]
    assert len(outcome.records) == 4 and outcome.ran == 4
    import os

    assert all(r.pid != os.getpid() for r in outcome.records)  # ran in Ray workers
    assert all(r.training.threads == 1 for r in outcome.records)


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

    from mmfuse.data import ModalitySpec, MultimodalDataset
    from mmfuse.experiment.run import _others_present

    ds = MultimodalDataset(
        "t", {"a": torch.zeros(4, 3), "b": torch.zeros(4, 5, 2)}, torch.tensor([0, 1, 0, 1]),
        specs={"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("sequence", (5, 2))}, num_classes=2,
        masks={"a": torch.tensor([True, True, False, True]),
               "b": torch.tensor([[True] * 5, [False] * 5, [True, False, False, False, False], [False] * 5])},
    )
    # without a, only samples whose b has a valid token remain; without b, those where a is present
    assert _others_present(ds, "a").tolist() == [True, False, True, False]
    assert _others_present(ds, "b").tolist() == [True, True, False, True]


def test_balance_variants_run_and_are_reported_with_the_probe(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path / "res", fusions=["gated"], modality_dropout=0.0, plots=False, balance=["aux", "mmpareto"],
                measure=MeasureConfig(noise_scales=(), intermediates_samples=0))
    outcome = run_bench(cfg, executor=SerialExecutor(), console=_quiet())
    assert outcome.failed == 0, [r.error for r in outcome.records]
    variants = sorted(r.spec.variant_label for r in outcome.records if r.label == "gated")
    assert variants == ["balance:aux", "balance:mmpareto", "standard"]
    for r in outcome.records:
        if r.label == "gated":  # every fused model gets the probe, balanced or not
            assert set(r.measurement.probe) == {"x0", "x1"}
            assert all(0.0 <= v <= 1.0 for v in r.measurement.probe.values())
    html = (tmp_path / "res" / "report.html").read_text()
    assert "<h2>Balanced training</h2>" in html and "balanced: aux" in html and "x0 inside (alone" in html
