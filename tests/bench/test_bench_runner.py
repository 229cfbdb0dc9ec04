"""The bench runner with a fake run function: results files, resume, failures, executors, summary maths."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest
from _bench_fakes import BASE, accuracy_of, dying_run, fake_run, modalities_of
from rich.console import Console

from mmfuse.bench import (
    BenchConfig,
    ProcessPoolExecutor,
    ResultsStore,
    SerialExecutor,
    run_bench,
)
from mmfuse.bench.store import CSV_COLUMNS

FUSIONS = ["alpha", "beta"]


def _config(out: Path, **kw) -> BenchConfig:
    base = dict(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=2, dropout_seeds=1,
                epochs=1, out=str(out), noise_scales=[0, 1])
    base.update(kw)
    return BenchConfig(**base)


def _run(cfg: BenchConfig, executor=None, run_fn=fake_run):
    return run_bench(cfg, run_fn=run_fn, executor=executor or SerialExecutor(), modalities_of=modalities_of,
                     fusions=FUSIONS, console=Console(file=open("/dev/null", "w")), progress=True)


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    monkeypatch.setenv("MMFUSE_BENCH_TEST_CALLS", str(path))
    return path


def _n_calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_results_files_are_complete(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    outcome = _run(_config(out))
    # grid: 2 unimodal x 2 seeds + 2 fusions x 2 seeds + 2 fusions x 1 dropout seed
    assert len(outcome.specs) == 10 and outcome.ran == 10 and outcome.failed == 0
    assert _n_calls(calls) == 10

    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 10
    assert {r["status"] for r in doc["runs"]} == {"ok"}
    meta = doc["meta"]
    assert meta["versions"]["torch"] and meta["versions"]["mmfuse"]
    assert meta["config"]["seeds"] == 2 and meta["fusions"] == FUSIONS
    assert "git_commit" in meta
    # every run says which code produced it; one version here
    assert all(set(r["code"]) == {"mmfuse", "git_commit", "git_dirty_src"} for r in doc["runs"])
    assert len(meta["code_versions"]) == 1
    # each run carries its full settings
    assert {"dataset_options", "train", "fusion_options", "seed", "variant"} <= set(doc["runs"][0]["spec"])

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 10
    header = list(rows[0])
    assert header[: len(CSV_COLUMNS)] == CSV_COLUMNS
    assert {"missing:a", "missing:b", "noise:0", "noise:1"} <= set(header)
    by_key = {r["key"]: r for r in rows}
    for rec in doc["runs"]:
        row = by_key[rec["key"]]
        spec = rec["spec"]
        want = accuracy_of(rec["label"], spec["seed"]) - (0.05 if spec["variant"] == "modality_dropout" else 0)
        assert float(row["accuracy"]) == pytest.approx(want)
        assert float(row["missing_worst"]) == pytest.approx(want - 0.4)

    pngs = {p.name: p.stat().st_size for p in (out / "plots").glob("*.png")}
    for name in ("accuracy.png", "cost_params.png", "cost_train_time.png", "robustness_noise.png",
                 "robustness_missing.png", "gates_synthetic_synergy.png", "attention_synthetic_synergy.png"):
        assert pngs.get(name, 0) > 5000, (name, pngs)

    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") == len(pngs)
    for name in ("alpha", "beta", "uni:a", "uni:b", "best unimodal", "gain vs best unimodal"):
        assert name in html
    assert "<table>" in html
    # no external resources
    assert "http://" not in html and "https://" not in html and "src='/" not in html
    # beta (0.65/0.66) is worse than the best unimodal baseline uni:b (0.70/0.71): shown as a negative gain
    assert "class=\"neg\">-0.050</td>" in html


def test_summary_mean_std_and_gain(tmp_path: Path, calls: Path) -> None:
    outcome = _run(_config(tmp_path / "res", seeds=3, modality_dropout=0.0, plots=False, report=False))
    rows = {(r["model"], r["variant"]): r for r in outcome.summary}
    assert set(rows) == {(m, "standard") for m in ["uni:a", "uni:b", *FUSIONS]}
    for model in BASE:
        accs = [accuracy_of(model, s) for s in range(3)]
        r = rows[(model, "standard")]
        assert r["accuracy_mean"] == pytest.approx(statistics.fmean(accs))
        assert r["accuracy_std"] == pytest.approx(statistics.stdev(accs))
        assert r["best_unimodal"] == "uni:b"
        assert r["gain"] == pytest.approx(statistics.fmean(accs) - (0.70 + 0.01))
    assert rows[("beta", "standard")]["gain"] == pytest.approx(-0.05)
    assert rows[("alpha", "standard")]["noise_mean"]["1"] == pytest.approx(0.81 - 0.15)


def test_resume_skips_finished_runs(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    quiet = {"plots": False, "report": False}
    first = _run(_config(out, seeds=1, **quiet))
    assert first.ran == 6 and _n_calls(calls) == 6
    stamps = {r["key"]: r["finished_at"] for r in ResultsStore(out).records()}

    again = _run(_config(out, seeds=1, **quiet))
    assert again.ran == 0 and again.skipped == 6
    assert _n_calls(calls) == 6  # the run function was not called again
    assert len(ResultsStore(out).records()) == 6
    assert {r["key"]: r["finished_at"] for r in again.records} == stamps

    more = _run(_config(out, seeds=2, **quiet))  # one more seed: only the new runs execute
    assert more.ran == 4 and more.skipped == 6 and _n_calls(calls) == 10
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 10

    changed = _run(_config(out, seeds=1, epochs=2, **quiet))  # a changed setting is a new run
    assert changed.ran == 6

    # runs resumed from an older version of the code are flagged in the report
    log = out / "runs.jsonl"
    lines = log.read_text().splitlines()
    old = json.loads(lines[0])
    old["code"] = {**old["code"], "git_commit": "0" * 40}
    log.write_text("\n".join([json.dumps(old), *lines[1:]]) + "\n")
    mixed = _run(_config(out, seeds=1))
    assert mixed.ran == 0
    assert "versions of the code" in (out / "report.html").read_text()


def test_failed_run_is_recorded_and_the_rest_complete(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    cfg = _config(out, seeds=1, fusion_options={"beta": {"explode": True}})
    outcome = _run(cfg)
    assert outcome.failed == 2  # beta standard + beta with dropout
    recs = ResultsStore(out).records()
    assert len(recs) == 6
    bad = [r for r in recs if r["status"] == "failed"]
    assert {r["label"] for r in bad} == {"beta"}
    for r in bad:
        assert "unknown option 'explode'" in r["error"] and "ValueError" in r["error"]
        assert "Traceback" in r["traceback"] and "fake_run" in r["traceback"]
        assert r["result"] is None
    assert all(r["result"]["metrics"]["accuracy"] > 0 for r in recs if r["status"] == "ok")

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["status"] for r in rows) == ["failed"] * 2 + ["ok"] * 4
    assert all("explode" in r["error"] for r in rows if r["status"] == "failed")
    html = (out / "report.html").read_text()
    assert "2 run(s) failed" in html and "id='failed'" in html and "explode" in html

    # a failed run is run again on resume; the finished ones are not
    n = _n_calls(calls)
    retry = _run(_config(out, seeds=1, fusion_options={"beta": {"explode": True}}, plots=False, report=False))
    assert retry.ran == 2 and _n_calls(calls) == n + 2


def test_torn_last_line_is_skipped(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    _run(_config(out, seeds=1, modality_dropout=0.0, plots=False, report=False))
    with (out / "runs.jsonl").open("a") as f:
        f.write('{"key": "abc", "status": "o')  # the process died mid-write
    with pytest.warns(UserWarning, match="not valid JSON"):
        again = _run(_config(out, seeds=1, modality_dropout=0.0, plots=False, report=False))
    assert again.ran == 0


def test_process_pool_runs_the_grid_and_survives_a_dying_worker(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    cfg = _config(out, seeds=1, modality_dropout=0.0, plots=False, report=False)
    outcome = _run(cfg, executor=ProcessPoolExecutor(2, threads=1), run_fn=dying_run)
    status = {r["label"]: r["status"] for r in outcome.records}
    assert status == {"uni:a": "ok", "uni:b": "ok", "alpha": "ok", "beta": "failed"}
    beta = next(r for r in outcome.records if r["label"] == "beta")
    assert "worker process died" in beta["error"]
    pids = {r["pid"] for r in outcome.records if r["status"] == "ok"}
    assert os.getpid() not in pids  # ran in worker processes
