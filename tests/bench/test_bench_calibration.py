"""Calibration through the bench: summary means, results.csv columns, the report's table and
reliability diagram, and the verdict's sentence when tied strategies differ in calibration.

A fake run function gives two fusions with the same per-sample scores (so the paired test
ties them) and known calibration: alpha's mean confidence is 0.81 at accuracy 0.80 (ECE
0.01), gamma's 0.90 (ECE 0.10).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest
from _bench_fakes import modalities_of
from rich.console import Console

from mmfuse.bench import BenchConfig, SerialExecutor, run_bench
from mmfuse.bench.grid import BenchRun
from mmfuse.bench.plots import plot_reliability
from mmfuse.bench.run import RunResult
from mmfuse.bench.store import ResultsStore
from mmfuse.bench.summary import summarize
from mmfuse.bench.verdict import calibration_sentence
from mmfuse.experiment.results import Measurement, TrainingFacts
from mmfuse.training import TrainConfig
from mmfuse.training.calibration import N_BINS, CalibrationStats, ReliabilityBins

#: model -> (bin, mean confidence) of its 100 test samples; accuracy 0.80 for all
CONF = {"alpha": (12, 0.81), "gamma": (13, 0.90), "uni:a": (13, 0.88), "uni:b": (12, 0.79)}


def _stats(label: str, seed: int) -> CalibrationStats:
    b, conf = CONF[label]
    conf += 0.002 * seed  # seed 0 and 1: the summary means them
    counts = [0] * N_BINS
    counts[b] = 100
    bins = ReliabilityBins(counts=counts, confidence=[conf if i == b else None for i in range(N_BINS)],
                           accuracy=[0.8 if i == b else None for i in range(N_BINS)])
    return CalibrationStats(ece=abs(conf - 0.8), nll=0.5 + abs(conf - 0.8), brier=0.3, aurc=0.05,
                            selective={"100": 0.8, "90": 0.85, "80": 0.9, "50": 0.95}, bins=bins)


def calibrated_run(run: BenchRun) -> RunResult:
    spec = run.spec
    unimodal = spec.model.unimodal is not None
    stats = _stats(spec.label, spec.seed)
    return RunResult(
        training=TrainingFacts(params=1000 if spec.label != "gamma" else 900, fusion_params=None, train_time_s=1.0,
                               epochs_run=1, best_epoch=0, val_metrics={}, threads=1),
        measurement=Measurement(
            metric="accuracy", higher_is_better=True, metrics={"accuracy": 0.8}, n_test=100,
            missing={} if unimodal else {"a": 0.7, "b": 0.6}, sample_scores=[1.0] * 80 + [0.0] * 20,
            calibration=stats, calibration_missing={} if unimodal else {"a": stats, "b": stats},
            calibration_noise={"a": {"1": dataclasses.replace(stats, ece=0.2)}, "b": {"1": dataclasses.replace(stats, ece=0.4)}},
            temperature=None if unimodal else 1.5, uncalibrated=None if unimodal else stats),
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cal") / "res"
    cfg = BenchConfig(datasets=["synthetic"], synthetic_tasks=["synergy"], seeds=2, dropout_seeds=0,
                      modality_dropout=0.0, train=TrainConfig(epochs=1, progress=False), out=str(out),
                      diagnose=False)
    buf = io.StringIO()
    run_bench(cfg, run_fn=calibrated_run, executor=SerialExecutor(), modalities_of=modalities_of,
              fusions=["alpha", "gamma"], console=Console(file=buf, width=200), progress=False)
    return out, buf.getvalue()


def test_summary_means_calibration_over_seeds(bench: tuple[Path, str]) -> None:
    out, _ = bench
    rows = {r.model: r for r in summarize(ResultsStore(out).records())}
    # gamma: ECE 0.10 at seed 0 and 0.102 at seed 1
    assert rows["gamma"].calibration["ece"] == pytest.approx(0.101)
    assert rows["gamma"].calibration["acc@80"] == pytest.approx(0.9)
    assert rows["gamma"].calibration_missing["a"]["ece"] == pytest.approx(0.101)
    assert rows["gamma"].temperature == pytest.approx(1.5) and rows["uni:a"].temperature is None


def test_results_csv_has_the_calibration_columns(bench: tuple[Path, str]) -> None:
    out, _ = bench
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    alpha0 = next(r for r in rows if r["model"] == "alpha" and r["seed"] == "0")
    assert float(alpha0["ece"]) == pytest.approx(0.01) and float(alpha0["acc@50"]) == pytest.approx(0.95)
    assert float(alpha0["temperature"]) == 1.5 and float(alpha0["ece_uncalibrated"]) == pytest.approx(0.01)
    assert float(alpha0["ece:missing:b"]) == pytest.approx(0.01)
    assert float(alpha0["ece:noise:1"]) == pytest.approx((0.2 + 0.4) / 2)  # mean over the noised modalities
    uni = next(r for r in rows if r["model"] == "uni:a")
    assert uni["temperature"] == "" and "ece:missing:a" in uni  # the column exists, empty for a baseline


def test_the_verdict_says_the_tied_strategies_differ_in_calibration(bench: tuple[Path, str]) -> None:
    out, console = bench
    doc = json.loads((out / "results.json").read_text())
    verdict = doc["meta"]["verdicts"]["synthetic/synergy"]
    assert set(verdict["recommendation"]["tied"]) == {"alpha", "gamma"}
    sentence = verdict["calibration"]
    assert sentence.startswith("Their probabilities differ: alpha is the best calibrated of them (test ECE 0.011")
    assert "gamma the least (ECE 0.101" in sentence
    if verdict["recommendation"]["pick"] == "gamma":  # the cheaper one
        assert "prefer alpha to gamma" in sentence
    html = (out / "report.html").read_text()
    assert sentence in html and sentence in " ".join(console.split())


def test_the_report_has_the_calibration_table_and_a_reliability_diagram(bench: tuple[Path, str]) -> None:
    out, _ = bench
    html = (out / "report.html").read_text()
    table = html[html.index("<h2>Calibration</h2>"):]
    table = table[:table.index("</table>")]
    assert "<th>ECE before T</th>" in table and "<td class='l'>alpha</td>" in table
    assert "Reliability: synthetic/synergy" in html


def test_reliability_figure_pools_seeds_and_skips_records_without_bins(bench: tuple[Path, str]) -> None:
    out, _ = bench
    records = ResultsStore(out).records()
    figs = plot_reliability(records)
    assert len(figs) == 1 and figs[0].png.startswith(b"\x89PNG")
    no_bins = [r.replace(measurement=Measurement(metric="accuracy", higher_is_better=True,
                                                 metrics={"accuracy": 0.8}, n_test=1)) for r in records]
    assert plot_reliability(no_bins) == []


def test_calibration_sentence_only_for_a_clear_gap() -> None:
    from mmfuse.bench.summary import SummaryRow

    def row(model: str, ece: float) -> SummaryRow:
        return SummaryRow(dataset="d", model=model, variant="standard", unimodal=False, metric="accuracy",
                          higher_is_better=True, seeds=[0], n_ok=1, n_failed=0, errors=[], score_mean=0.9,
                          score_std=None, calibration={"ece": ece, "nll": 0.3})

    rows = {"x": row("x", 0.010), "y": row("y", 0.019), "z": row("z", 0.040)}
    assert calibration_sentence(["x", "y"], rows) is None  # 0.019 < 2 x 0.010
    assert calibration_sentence(["x"], rows) is None  # one strategy: nothing to compare
    rows["y"] = row("y", 0.025)
    assert calibration_sentence(["x", "y"], rows) is None  # twice, but only 0.015 apart
    text = calibration_sentence(["x", "y", "z"], rows, pick="z")
    assert text is not None and "x is the best calibrated" in text and "prefer x to z" in text
