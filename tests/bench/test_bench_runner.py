"""The bench runner with a fake run function: results files, resume, failures, executors, summary maths."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from pathlib import Path

import pytest
from _bench_fakes import BASE, accuracy_of, dying_run, failing_run, fake_run, modalities_of
from rich.console import Console

from mmfuse.bench import (
    BenchConfig,
    ProcessPoolExecutor,
    ResultsStore,
    SerialExecutor,
    run_bench,
)
from mmfuse.bench.store import CSV_COLUMNS
from mmfuse.errors import ConfigError
from mmfuse.training import TrainConfig

FUSIONS = ["alpha", "beta"]


def _config(out: Path | None, **kw) -> BenchConfig:
    base = dict(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=2, dropout_seeds=1,
                train=TrainConfig(epochs=1, progress=False), out=None if out is None else str(out))
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
    assert len(outcome.runs) == 10 and outcome.ran == 10 and outcome.failed == 0
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
    assert doc["format"] == "mmfuse.bench_results/1"
    assert {"data", "model", "train", "format"} <= set(doc["runs"][0]["spec"])
    assert doc["runs"][0]["format"] == "mmfuse.run_record/3" and doc["runs"][0]["spec"]["format"] == (
        "mmfuse.experiment_spec/3")
    assert {"options", "seed"} <= set(doc["runs"][0]["spec"]["data"])

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 10
    header = list(rows[0])
    assert header[: len(CSV_COLUMNS)] == CSV_COLUMNS
    assert {"missing:a", "missing:b", "noise:0.5", "noise:1", "noise:2"} <= set(header)
    assert "noise:0" not in header  # clean data is the score itself, not a noise column
    by_key = {r["key"]: r for r in rows}
    for rec in doc["runs"]:
        row = by_key[rec["key"]]
        seed, variant = rec["spec"]["train"]["seed"], row["variant"]
        want = accuracy_of(rec["label"], seed) - (0.05 if variant == "modality_dropout" else 0)
        assert float(row["accuracy"]) == pytest.approx(want) == float(row["score"])
        if not rec["label"].startswith("uni:"):
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
    rows = {r.model: r for r in outcome.summary}
    assert set(rows) == {"uni:a", "uni:b", *FUSIONS}
    for model in BASE:
        accs = [accuracy_of(model, s) for s in range(3)]
        r = rows[model]
        assert r.variant == ("unimodal" if model.startswith("uni:") else "standard") and r.standard
        assert r.metric == "accuracy" and r.higher_is_better
        assert r.score_mean == pytest.approx(statistics.fmean(accs))
        assert r.score_std == pytest.approx(statistics.stdev(accs))
        assert r.metrics["macro_f1"] == pytest.approx(statistics.fmean(accs) - 0.02)
        assert r.best_unimodal == "uni:b"
        assert r.gain == pytest.approx(statistics.fmean(accs) - (0.70 + 0.01))
    assert rows["beta"].gain == pytest.approx(-0.05)
    assert rows["alpha"].noise_mean["1"] == pytest.approx(0.81 - 0.15)


def test_resume_skips_finished_runs(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    quiet = {"plots": False, "report": False}
    first = _run(_config(out, seeds=1, **quiet))
    assert first.ran == 6 and _n_calls(calls) == 6
    stamps = {r.key: r.finished_at for r in ResultsStore(out).records()}

    again = _run(_config(out, seeds=1, **quiet))
    assert again.ran == 0 and again.skipped == 6
    assert _n_calls(calls) == 6  # the run function was not called again
    assert len(ResultsStore(out).records()) == 6
    assert {r.key: r.finished_at for r in again.records} == stamps

    more = _run(_config(out, seeds=2, **quiet))  # one more seed: only the new runs execute
    assert more.ran == 4 and more.skipped == 6 and _n_calls(calls) == 10
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 10

    changed = _run(_config(out, seeds=1, train=TrainConfig(epochs=2, progress=False), **quiet))
    assert changed.ran == 6  # a changed training setting is a new run

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
    outcome = _run(_config(out, seeds=1), run_fn=failing_run)
    assert outcome.failed == 2  # beta standard + beta with dropout
    recs = ResultsStore(out).records()
    assert len(recs) == 6
    bad = [r for r in recs if r.status == "failed"]
    assert {r.label for r in bad} == {"beta"}
    for r in bad:
        assert "broke at run time" in r.error and "ValueError" in r.error
        assert "Traceback" in r.traceback and "failing_run" in r.traceback
        assert r.measurement is None and not r.ok
    assert all(r.measurement.score > 0 for r in recs if r.ok)

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["status"] for r in rows) == ["failed"] * 2 + ["ok"] * 4
    assert all("broke" in r["error"] for r in rows if r["status"] == "failed")
    html = (out / "report.html").read_text()
    assert "2 run(s) failed" in html and "id='failed'" in html and "broke at run time" in html

    # a failed run is run again on resume; the finished ones are not
    n = _n_calls(calls)
    retry = _run(_config(out, seeds=1, plots=False, report=False), run_fn=failing_run)
    assert retry.ran == 2 and _n_calls(calls) == n + 2


def test_the_whole_config_is_checked_before_the_first_run(tmp_path: Path, calls: Path) -> None:
    with pytest.raises(ConfigError, match="fusion 'gated': unknown option 'explode'"):
        run_bench(_config(tmp_path / "a", fusion_options={"gated": {"explode": True}}), run_fn=fake_run,
                  executor=SerialExecutor(), modalities_of=modalities_of, fusions=["gated"],
                  console=Console(file=open("/dev/null", "w")))
    with pytest.raises(ConfigError, match="'film' is not among the strategies compared"):
        run_bench(_config(tmp_path / "b", fusion_options={"film": {"dim": 4}}), run_fn=fake_run,
                  executor=SerialExecutor(), modalities_of=modalities_of, fusions=["gated"],
                  console=Console(file=open("/dev/null", "w")))
    assert _n_calls(calls) == 0


def test_a_torn_last_line_never_swallows_the_next_record(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    _run(_config(out, seeds=1, modality_dropout=0.0, plots=False, report=False))
    log = out / "runs.jsonl"
    lines = log.read_text().splitlines()
    # the process died mid-write of the last record
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    with pytest.warns(UserWarning, match="torn"):
        again = _run(_config(out, seeds=1, modality_dropout=0.0, plots=False, report=False))
    assert again.ran == 1 and again.failed == 0  # the torn run is run again, and recorded whole
    assert len(ResultsStore(out).records()) == 4 == len(json.loads((out / "results.json").read_text())["runs"])
    assert all(json.loads(line) for line in log.read_text().splitlines())


def _as_schema_2(record: dict) -> dict:
    """A run record as the previous mmfuse wrote it: ``"schema": 2`` and the five flat balance
    settings in its spec (the layout before BalanceOptions)."""
    old = {k: v for k, v in record.items() if k != "format"}
    spec = {k: v for k, v in old["spec"].items() if k != "format"}
    train = dict(spec["train"])
    balance = train.pop("balance")
    train.update(balance=balance["method"], balance_weight=balance["weight"], ogm_alpha=balance["alpha"],
                 gblend_every=balance["every"], gblend_floor=balance["floor"], pareto_gamma=balance["gamma"])
    return {**old, "schema": 2, "spec": {**spec, "schema": 2, "train": train}}


def test_records_of_another_version_are_trained_again_and_said_once(tmp_path: Path, calls: Path) -> None:
    """A folder the previous mmfuse wrote: its records are not re-used (their keys are not this
    version's), the runs train again, and the bench says so in one line, once."""
    out = tmp_path / "res"
    quiet = {"plots": False, "report": False, "seeds": 1, "modality_dropout": 0.0}
    assert _run(_config(out, **quiet)).ran == 4 and _n_calls(calls) == 4
    log = out / "runs.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    legacy = [json.dumps(_as_schema_2(r)) for r in lines]
    log.write_text("\n".join([*legacy, json.dumps({"key": "k", "status": "ok", "spec": {}})]) + "\n")  # + 0.1's
    assert ResultsStore(out).records() == []
    buf = io.StringIO()
    again = run_bench(_config(out, **quiet), run_fn=fake_run, executor=SerialExecutor(), modalities_of=modalities_of,
                      fusions=FUSIONS, console=Console(file=buf, width=60), progress=False)
    assert again.ran == 4 and again.skipped == 0 and _n_calls(calls) == 8
    said = [line for line in buf.getvalue().splitlines() if "another version" in line]
    assert said == [f"note: {log}: 5 records written by another version of mmfuse (record version 2, none; this one "
                    "writes 3) not re-used: their runs are trained again"]
    assert len(ResultsStore(out).records()) == 4  # this version's, read back


def test_no_plots_writes_no_png_and_stale_plots_are_removed(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    _run(_config(out, seeds=1, plots=False))
    assert not (out / "plots").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # drawn in memory for the report
    (out / "plots").mkdir()
    (out / "plots" / "old_figure.png").write_bytes(b"stale")
    _run(_config(out, seeds=1))
    names = {p.name for p in (out / "plots").glob("*.png")}
    assert "old_figure.png" not in names and "accuracy.png" in names
    assert (out / "report.html").read_text().count("data:image/png;base64,") == len(names)


def test_default_folder_per_dataset_set_and_no_silent_mixing(tmp_path: Path, monkeypatch, calls: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _config(None, seeds=1, modality_dropout=0.0, plots=False, report=False)
    assert cfg.out_dir == Path("bench-out/synthetic")
    _run(cfg)
    assert (tmp_path / "bench-out" / "synthetic" / "results.json").is_file()
    other = _config(tmp_path / "bench-out" / "synthetic", datasets=["mfeat"], seeds=1, plots=False, report=False)
    with pytest.raises(ConfigError, match="holds a comparison of \\['synthetic'\\], not \\['mfeat'\\]"):
        run_bench(other, run_fn=fake_run, executor=SerialExecutor(), modalities_of=modalities_of, fusions=FUSIONS,
                  console=Console(file=open("/dev/null", "w")))


def test_a_read_only_out_folder_fails_before_any_run(tmp_path: Path, calls: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        out = blocker / "res"  # a folder under a file: not creatable, even for root
    else:
        out = tmp_path / "ro"
        out.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="is not writable"):
        _run(_config(out, seeds=1))
    assert _n_calls(calls) == 0


def test_process_pool_runs_the_grid_and_survives_a_dying_worker(tmp_path: Path, calls: Path) -> None:
    out = tmp_path / "res"
    cfg = _config(out, seeds=1, modality_dropout=0.0, plots=False, report=False)
    outcome = _run(cfg, executor=ProcessPoolExecutor(2, threads=1), run_fn=dying_run)
    status = {r.label: r.status for r in outcome.records}
    assert status == {"uni:a": "ok", "uni:b": "ok", "alpha": "ok", "beta": "failed"}
    beta = next(r for r in outcome.records if r.label == "beta")
    assert "worker process died" in beta.error
    pids = {r.pid for r in outcome.records if r.ok}
    assert os.getpid() not in pids  # ran in worker processes


def _bench_script(tmp_path: Path) -> Path:
    script = tmp_path / "slow_bench.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _bench_fakes import modalities_of, slow_run
from rich.console import Console
from mmfuse.bench import BenchConfig, ProcessPoolExecutor, run_bench
from mmfuse.training import TrainConfig
if __name__ == "__main__":
    cfg = BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=2, modality_dropout=0.0,
                      train=TrainConfig(epochs=1, progress=False), out={str(tmp_path / 'res')!r}, plots=False,
                      report=False)
    run_bench(cfg, run_fn=slow_run, executor=ProcessPoolExecutor(2, threads=1), modalities_of=modalities_of,
              fusions=["alpha"], console=Console(file=open("/dev/null", "w")), progress=False)
""")
    return script


def _children(pid: int) -> set[int]:
    """Every process whose parent chain reaches ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killing_the_bench_leaves_no_worker_behind(tmp_path: Path, sig: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "MMFUSE_BENCH_TEST_STARTED": str(started)}
    proc = subprocess.Popen([sys.executable, str(_bench_script(tmp_path))], start_new_session=True, env=env)
    try:
        deadline = time.time() + 180  # a loaded machine takes a while to start two workers
        while time.time() < deadline and len(list(started.iterdir())) < 2:
            time.sleep(0.5)
        workers = {int(p.name.split(".")[0]) for p in started.iterdir()}
        assert len(workers) == 2, "the workers did not start their runs"
        workers |= _children(proc.pid)  # the resource tracker too
        os.kill(proc.pid, getattr(signal, sig))
        proc.wait(timeout=30)

        def alive(p: int) -> bool:
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                return False
            return state != "Z"

        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if alive(p)], f"left running after {sig}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _children(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_the_report_and_the_terminal_open_with_a_recommendation(tmp_path: Path, calls: Path) -> None:
    import io

    out = tmp_path / "res"
    buf = io.StringIO()
    outcome = run_bench(_config(out, seeds=2, diagnose=False), run_fn=fake_run, executor=SerialExecutor(),
                        modalities_of=modalities_of, fusions=FUSIONS, console=Console(file=buf, width=200),
                        progress=False)
    html = (out / "report.html").read_text()
    assert html.index("<h2>Recommendations</h2>") < html.index("<h2>Summary</h2>")
    # alpha (0.80/0.81 on 100 samples) is significantly better than beta (0.65/0.66): the test says so
    rec = json.loads((out / "results.json").read_text())["meta"]["verdicts"]["synthetic/synergy"]["recommendation"]
    assert rec["best"] == "alpha" and rec["pick"] == "alpha" and rec["tied"] == ["alpha"] and rec["decisive"]
    import html as htmllib

    assert htmllib.escape(rec["sentence"]) in html and "bootstrap" in rec["test"]
    assert f"synthetic/synergy: {rec['sentence']}" in " ".join(buf.getvalue().split())
    assert outcome.failed == 0


def test_hierarchical_is_left_out_where_its_groups_would_be_single_modalities(tmp_path: Path) -> None:
    from mmfuse.bench import build_grid
    from mmfuse.bench.groups import choose_groups
    from mmfuse.bench.verdict import Skipped
    from mmfuse.data import ModalitySpec

    specs = {"a": ModalitySpec("vector", (3,)), "b": ModalitySpec("vector", (3,))}
    skipped: list[Skipped] = []
    runs = build_grid(_config(tmp_path, seeds=1, modality_dropout=0.0), fusions=["gated", "hierarchical"],
                      modalities_of=modalities_of, groups_of=lambda d: choose_groups(specs), skipped=skipped)
    assert "hierarchical" not in {r.label for r in runs}
    assert [(s.model, s.dataset) for s in skipped] == [("hierarchical", "synthetic/synergy")]
    assert skipped[0].reason
    # with groups that mean something, it runs with them
    four = {m: ModalitySpec("vector", (3,), meta={"group": g}) for m, g in zip("abcd", "xxyy", strict=True)}
    runs = build_grid(_config(tmp_path, seeds=1, modality_dropout=0.0), fusions=["hierarchical"],
                      modalities_of=modalities_of, groups_of=lambda d: choose_groups(four), skipped=skipped)
    (hier,) = [r for r in runs if r.label == "hierarchical"]
    assert hier.spec.model.fusion_options["groups"] == [["a", "b"], ["c", "d"]]


def test_concurrent_appenders_lose_no_record_and_a_second_bench_is_refused(tmp_path: Path) -> None:
    """3 processes x 40 records of ~200 kB into one log keep all 120 (the repair never cuts
    another process's append); a second bench into a held folder is refused with its pid."""
    import subprocess
    import sys
    import textwrap

    from mmfuse.bench.store import ResultsStore
    from mmfuse.errors import ConfigError

    script = textwrap.dedent(f"""
        import sys
        from mmfuse.bench.store import ResultsStore
        from mmfuse.experiment import ExperimentSpec, MeasureConfig, RunRecord
        from mmfuse.experiment.specs import DataSpec, ModelSpec
        from mmfuse.training import TrainConfig
        store = ResultsStore({str(tmp_path / "out")!r})
        who = int(sys.argv[1])
        for i in range(40):
            spec = ExperimentSpec(data=DataSpec(name="synthetic"), model=ModelSpec(fusion="late"),
                                  train=TrainConfig(seed=who * 1000 + i))
            store.append(RunRecord(spec=spec, measure=MeasureConfig(), status="failed", error="x" * 200_000))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)]) for k in range(3)]
    for p in procs:
        assert p.wait(timeout=240) == 0
    records = ResultsStore(tmp_path / "out").records()
    assert len(records) == 120 and len({r.spec.seed for r in records}) == 120

    first = ResultsStore(tmp_path / "held")
    first.hold()
    try:
        with pytest.raises(ConfigError, match=rf"in use by another mmfuse bench \(pid {os.getpid()}\)"):
            ResultsStore(tmp_path / "held").hold()
    finally:
        first.release()
    again = ResultsStore(tmp_path / "held")
    again.hold()  # released: free again
    again.release()


def test_ogm_ge_on_three_modalities_is_refused_before_any_run(tmp_path: Path) -> None:
    from mmfuse.bench import load_config, run_bench
    from mmfuse.bench.config import BenchConfigError

    config = load_config(settings=["epochs=1"], datasets=["synthetic"], fusions=["late"], balance=["ogm_ge"],
                         dataset_options={"synthetic": {"task": "reliability", "n": 120}}, out=str(tmp_path / "o"))
    calls = []
    with pytest.raises(BenchConfigError, match=r"--balance ogm_ge: synthetic/reliability has 3 modalities"):
        run_bench(config, run_fn=lambda run: calls.append(run), progress=False)
    assert calls == []


def test_a_record_with_a_string_score_is_refused_on_load(tmp_path: Path) -> None:
    from mmfuse.bench.store import ResultsStore
    from mmfuse.errors import ConfigError
    from mmfuse.experiment import ExperimentSpec, MeasureConfig, Measurement, RunRecord
    from mmfuse.experiment.specs import DataSpec, ModelSpec
    from mmfuse.training import TrainConfig

    store = ResultsStore(tmp_path)
    spec = ExperimentSpec(data=DataSpec(name="synthetic"), model=ModelSpec(fusion="late"), train=TrainConfig())
    m = Measurement(metric="accuracy", higher_is_better=True, metrics={"accuracy": 0.9}, n_test=10)
    store.append(RunRecord(spec=spec, measure=MeasureConfig(), status="ok", measurement=m))
    text = store.log.read_text().replace('"accuracy": 0.9', '"accuracy": "0.99 (best!)"')
    store.log.write_text(text)
    with pytest.raises(ConfigError, match=r"line 1: measurement: metrics.accuracy: expected a number, got '0.99 \(best!\)'"):
        store.records()


def test_a_damaged_saved_model_is_trained_again_with_a_warning(tmp_path: Path) -> None:
    from mmfuse.bench.grid import BenchRun
    from mmfuse.bench.run import run_one
    from mmfuse.experiment import ExperimentSpec, MeasureConfig
    from mmfuse.experiment.specs import DataSpec, ModelSpec
    from mmfuse.training import TrainConfig

    spec = ExperimentSpec(data=DataSpec(name="synthetic", options={"task": "redundancy", "n": 160}),
                          model=ModelSpec(fusion="late", hidden_dim=8), train=TrainConfig(epochs=1, progress=False))
    run = BenchRun(spec=spec, measure=MeasureConfig(noise_scales=(), attribution=False), models_dir=str(tmp_path))
    first = run_one(run)
    assert first.training.trained_now
    weights = tmp_path / run.train_key / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the tensor data
    weights.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="the saved model cannot be used .*damaged.*training it again"):
        again = run_one(run)
    assert again.training.trained_now  # trained, not failed
    assert not run_one(run).training.trained_now  # and saved again: the next run loads it


def test_a_table_with_one_modality_says_there_is_nothing_to_fuse(tmp_path: Path, capsys) -> None:
    import json

    import numpy as np
    import pandas as pd

    from mmfuse.cli import main

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=150), "b": rng.normal(size=150)})
    frame["y"] = (frame["a"] > 0).astype(int)
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "bench"
    assert main(["bench", "--data", str(tmp_path / "t.csv"), "--target", "y", "--fusions", "late,gated",
                 "--seeds", "1", "--no-unimodal", "--no-plots", "--no-report", "--no-progress", "--jobs", "1",
                 "--out", str(out), "epochs=1", "hidden_dim=8", "measure.attribution=false"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in doc["runs"]} == {"uni:tabular"}  # the baseline only, even with --no-unimodal
    (verdict,) = doc["meta"]["verdicts"].values()
    assert verdict["recommendation"] is None
    assert verdict["problem"].startswith("the data has one modality, so there is nothing to fuse: 'tabular'")
    assert "fusion gain" not in capsys.readouterr().out
