"""Every script in benchmarks/ runs in every test run, in its --quick mode (tiny shapes, one
repeat, one epoch), so that a change of the library that breaks one shows here instead of
on the day someone measures.

A script is imported as a module and its ``main(argv)`` called in this process: torch,
Lightning and the rest are imported once for all of them (a fresh interpreter spends
4-10 s of CPU on its imports alone, more than most quick runs). Only what a script
measures in a fresh process starts one: ``startup.py``'s imports, ``serve_speed.py``'s
server, ``predict_speed.py``'s memory children (with ``OMP_NUM_THREADS=1``).

Nothing here checks a time. A run passes when it exits 0 and its result file, written
under the test's tmp folder (never under ``benchmarks/results/``), has the rows and the
columns the full run writes, with finite numbers where they must be. The scripts that
read the real datasets skip without them, as the data tests do.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _fraction(x: Any) -> bool:
    return isinstance(x, int | float) and 0.0 <= x <= 1.0


def _read(path: Path) -> Any:
    assert path.is_file(), f"{path.name} not written"
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


# ------------------------------------------------------------------ what each script must write
def _balance(out: Path, module: Any) -> None:
    rows = _read(out.with_suffix(".jsonl"))
    fused = [r for r in rows if not r["fusion"].startswith("alone:")]
    assert {r["method"] for r in fused} == set(module.METHODS)
    assert {r["fusion"] for r in rows} >= {"alone:x0", "alone:x1", "late"}
    for r in rows:
        assert _fraction(r["acc"]) and r["epochs"] >= 1, r
    for r in fused:
        assert _fraction(r["acc_missing"]) and set(r["probe"]) == {"x0", "x1"}, r
        assert all(math.isnan(v) or _fraction(v) for v in r["probe"].values()), r
    assert "| fusion | balance | fused acc |" in out.with_suffix(".md").read_text()


def _embedding_cache(out: Path, module: Any) -> None:
    doc = _read(out.with_suffix(".json"))
    assert [r["model"] for r in doc["runs"]] == ["tiny"]
    for key in ("encode_cold_s", "cache_read_s", "fit_on_cached_s", "fit_cache_off_s", "total_on_s", "total_off_s",
                "ratio_total_off_over_on", "ratio_per_run_off_over_on"):
        assert _positive(doc["runs"][0][key]), (key, doc["runs"][0])


def _export_speed(out: Path, module: Any) -> None:
    doc = _read(out.with_suffix(".json"))
    assert doc["failed"] == [] and [r["case"] for r in doc["cases"]] == ["early"]
    rec = doc["cases"][0]
    assert all(_positive(rec[k]) for k in ("params", "trace_s", "pt2_export_s", "onnx_export_s", "pt2_bytes",
                                           "onnx_bytes")), rec
    assert set(rec["parity"]) == {"onnx b=1", "onnx b=37", "pt2 b=1", "pt2 b=37"}
    for p in rec["parity"].values():  # the exported graphs compute the eager logits
        assert p["nan_rows_match"] and p["max_abs_diff"] < 1e-4, rec["parity"]
    speeds = doc["speed"]["early"]
    assert set(speeds) == {"1 threads, b=1", "1 threads, b=64"}
    assert all(_positive(v[k]["median"]) for v in speeds.values() for k in ("eager", "onnxruntime", "pt2")), speeds
    assert "| early | 1 threads, b=64 |" in out.with_suffix(".md").read_text()


def _fit_overhead(out: Path, module: Any) -> None:
    r = _read(out.with_suffix(".json"))
    assert all(_positive(r[k]) for k in ("fit_s_median", "bare_s_median", "fit_samples_per_s", "bare_samples_per_s"))
    assert math.isfinite(r["overhead_fraction"]) and r["overhead_fraction"] < 1 and r["repeats"] == 1, r


def _fit_threads(out: Path, module: Any) -> None:
    r = _read(out.with_suffix(".json"))
    assert [row["hidden_dim"] for row in r["sweep"]] == [16]
    assert _positive(r["sweep"][0]["t1_ms"]) and _positive(r["sweep"][0]["ratio"]), r["sweep"]
    assert r["sweep"][0]["auto_threads_if_idle"] >= 1
    fit = r["fit"]
    assert all(_positive(v) for v in fit["default_threads_s"] + fit["auto_s"]) and _positive(fit["default_over_auto"])


def _fusion_speed(out: Path, module: Any) -> None:
    import mmfuse

    doc = _read(out.with_suffix(".json"))
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    assert all(_positive(r["ms"]) for r in ok), ok
    # every strategy ran at M=2 in at least one input form (a form it does not take is skipped with the reason)
    assert {r["name"] for r in ok if r["group"] == "strategy"} == set(mmfuse.list_fusions())
    skipped = [r for r in doc["results"] if r["status"] != "ok"]
    assert all(r["reason"] for r in skipped), skipped
    assert doc["speedups"] and all(_positive(s["time_ratio"]) for s in doc["speedups"]), doc["speedups"]


def _missing_fallback(out: Path, module: Any) -> None:
    rows = _read(out.with_suffix(".json"))
    assert [r["model"] for r in rows][-1] == "late" and rows[0]["model"].startswith("uni:"), rows
    for r in rows:
        assert _fraction(r["full"]) and r["epochs"] == 1, r
    assert _fraction(rows[-1]["without:fac"]) and rows[-1]["modality_dropout"] == 0.3
    assert "| late | 0.3 |" in out.with_suffix(".md").read_text()


def _peers(out: Path, module: Any) -> None:
    rows = _read(out.with_suffix(".json"))["rows"]
    timed = [r for r in rows if r["ratio"] is not None]
    assert len(timed) >= len(rows) / 2, rows  # most pairs ran (a peer that is not installed is noted)
    assert all(_positive(r[k]) for r in timed for k in ("mmfuse_ms", "peer_ms", "ratio")), timed


def _predict_speed(out: Path, module: Any) -> None:
    doc = _read(out.with_suffix(".json"))
    by = doc["speed"]["by_threads"]
    assert list(by) == ["1"] and doc["speed"]["rows"] == 400
    assert all(_positive(v) for v in by["1"]["rows_per_s"].values()), by
    assert _positive(by["1"]["ratio_predict_file_to_forward"])
    assert doc["profile"] and all(p["ncalls"] >= 1 for p in doc["profile"])
    stream = doc["memory"]["stream"]  # every row predicted once, in order
    assert stream["rc"] == 0 and stream["output_rows"] == doc["stream_data"]["rows"] == 4000, stream
    assert stream["output_in_input_order"] and stream["peak"] >= stream["before"] > 0
    assert doc["memory"]["one_file_at_once"]["rows"] == doc["stream_data"]["rows_per_file"]


def _serve_speed(out: Path, module: Any) -> None:
    doc = _read(out.with_suffix(".json"))
    res = doc["results"]
    assert len(res) == 6 and sum(k.startswith("served") for k in res) == 3, list(res)
    assert all(_positive(r["rows_per_s"]) for r in res.values()), res
    # the server's CPU time is read in clock ticks (10 ms): a quick case of few requests can use
    # less than one, so each is a finite non-negative number, and the case of the most requests
    # (one row each, sequential: ~20 in 0.2 s at ~7 ms of server CPU each) shows some
    served = [r["cpu_ms_per_row_server"] for k, r in res.items() if k.startswith("served")]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in served), res
    assert _positive(res["served, batch 1 (1 row a request, sequential)"]["cpu_ms_per_row_server"]), res
    assert _positive(res["served, batch 1 from 8 concurrent clients"]["requests_per_model_call"])


def _startup(out: Path, module: Any) -> None:
    doc = _read(out.with_suffix(".json"))
    assert set(doc["seconds"]) == set(module.QUICK_CASES) <= set(module.CASES)
    assert all(len(v) == 1 and _positive(v[0]) for v in doc["seconds"].values()), doc


def _tmc_mfeat(out: Path, module: Any) -> None:
    rows = _read(out.with_suffix(".jsonl"))
    assert [r["config"] for r in rows] == ["trusted", "late"], rows
    for r in rows:
        assert _fraction(r["acc"]) and _positive(r["params"]) and r["epochs"] == 1, r
    assert "| trusted |" in out.with_suffix(".md").read_text()


def _train_baselines(out: Path, module: Any) -> None:
    rows = _read(out.with_suffix(".json"))["rows"]
    assert [r["model"] for r in rows] == ["unimodal:x0", "early", "late"], rows
    assert sum(r["best_unimodal"] for r in rows) == 1
    for r in rows:
        assert all(_fraction(r[k]) for k in ("val_acc", "test_acc", "test_macro_f1")) and r["epochs"] == 1, r


@dataclass(frozen=True)
class Quick:
    """How the test runs one script: its argv (``{out}``: a path under the test's tmp folder,
    without suffix), whether it reads the real datasets, and the check of what it wrote."""

    argv: tuple[str, ...]
    check: Callable[[Path, Any], None]
    needs_data: bool = False


QUICK: dict[str, Quick] = {
    "balance.py": Quick(("--quick", "--out", "{out}"), _balance),
    "embedding_cache.py": Quick(("--quick", "--out", "{out}"), _embedding_cache, needs_data=True),
    "export_speed.py": Quick(("--quick", "--out", "{out}.json"), _export_speed),
    "fit_overhead.py": Quick(("--quick", "--json", "{out}.json"), _fit_overhead),
    "fit_threads.py": Quick(("--quick", "--json", "{out}.json"), _fit_threads),
    "fusion_speed.py": Quick(("--quick", "--repeats", "1", "--out", "{out}"), _fusion_speed),
    "missing_fallback.py": Quick(("--quick", "--out", "{out}"), _missing_fallback, needs_data=True),
    "peers.py": Quick(("--quick", "--out", "{out}"), _peers),
    "predict_speed.py": Quick(("--quick", "--out", "{out}.json"), _predict_speed, needs_data=True),
    "serve_speed.py": Quick(("--quick", "--out", "{out}"), _serve_speed),
    "startup.py": Quick(("--quick", "--out", "{out}"), _startup),
    "tmc_mfeat.py": Quick(("--quick", "--out", "{out}"), _tmc_mfeat, needs_data=True),
    "train_baselines.py": Quick(("--quick", "--out", "{out}"), _train_baselines),
}


def test_every_script_has_a_quick_run() -> None:
    assert set(QUICK) == set(SCRIPTS), {"no quick run here": sorted(set(SCRIPTS) - set(QUICK)),
                                        "no such script": sorted(set(QUICK) - set(SCRIPTS))}


def _load(script: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"_benchmark_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmark_runs_quickly(script: str, tmp_path: Path, request: pytest.FixtureRequest,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    quick = QUICK[script]
    if quick.needs_data:
        request.getfixturevalue("data_root")
    # the children a script starts (servers, fresh imports) import this checkout, on one thread
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # anything written to a relative path lands here
    out = tmp_path / "out" / script[:-3]
    out.parent.mkdir()
    results = BENCHMARKS / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()} if results.is_dir() else {}
    threads = torch.get_num_threads()
    try:
        module = _load(script, monkeypatch)
        code = module.main([a.replace("{out}", str(out)) for a in quick.argv])
    finally:
        torch.set_num_threads(threads)  # scripts set their own counts
    assert code in (0, None), f"benchmarks/{script} --quick returned {code}"
    after = {p.name: p.stat().st_mtime_ns for p in results.iterdir()} if results.is_dir() else {}
    assert after == before, "a quick run wrote under benchmarks/results/"
    quick.check(out, module)
