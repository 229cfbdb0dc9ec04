"""``mmfuse bench --data TABLE --target COL`` end to end on a small real table: a classification and a
regression target, with results, plots and the report (which names the file and shows its schema)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmfuse.cli import main

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def table(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    src = data_root / "clothing_reviews" / "WomensClothingE-CommerceReviews.parquet.brotli"
    df = pd.read_parquet(src).sample(400, random_state=0)
    path = tmp_path_factory.mktemp("table") / "reviews_small.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("target", "task", "metric", "higher"), [
    # 82/18 in the reviews: ranked by macro-F1 unless --metric says otherwise
    ("Recommended IND", "binary", "macro_f1", True),
    ("Rating", "regression", "rmse", False),
])
def test_bench_on_a_users_table(table: Path, tmp_path: Path, target: str, task: str, metric: str,
                                higher: bool) -> None:
    out = tmp_path / "bench"
    argv = [
        "bench", "--data", str(table), "--target", target, "--task", task, "--fusions", "late,gated", "--seeds", "2",
        "--modality-dropout", "0", "--executor", "serial", "--out", str(out), "--no-progress",
        "epochs=2", "hidden_dim=16", "measure.noise_scales=[1]"]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    runs = doc["runs"]
    assert runs and all(r["status"] == "ok" for r in runs)
    assert {r["dataset"] for r in runs} == {"reviews_small.csv"}
    m = runs[0]["measurement"]
    assert m["metric"] == metric and m["higher_is_better"] is higher
    # unimodal baselines of every modality the table gave, and the two fusions
    labels = {r["label"] for r in runs}
    assert {"late", "gated"} <= labels and any(lab.startswith("uni:") for lab in labels)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert all(r["metric"] == metric and r["score"] != "" for r in rows)
    # the recommendation works for both directions of "better"
    rec = doc["meta"]["verdicts"]["reviews_small.csv"]["recommendation"]
    assert rec is not None and rec["pick"] in ("late", "gated")
    html = (out / "report.html").read_text()
    assert "<h2>Data</h2>" in html and "reviews_small.csv" in html and target in html
    # the score figure is named by the metric it plots, never "accuracy" for macro-F1 or RMSE
    assert {p.name for p in (out / "plots").glob("score*.png")} == {f"score_{metric}.png"}
    assert not (out / "plots" / "accuracy.png").exists()
    if task == "binary":  # what the test of macro-F1 recomputes per resample, and the other metrics shown
        n = m["n_test"]
        assert len(m["sample_labels"]) == len(m["sample_predictions"]) == len(m["sample_probabilities"]) == n
        assert abs(sum(m["sample_labels"]) / n - 0.82) < 0.1  # class 1 (recommended) is the reviews' majority
        assert "<th>accuracy</th>" in html and "<th>auroc</th>" in html and "macro_f1 (ranks)" in html
        assert "macro_f1" in rec["sentence"]
        for row in doc["summary"]:  # the test split's majority-class rate, from the recorded classes
            share = sum(m["sample_labels"]) / n
            assert row["majority_rate"] == pytest.approx(max(share, 1 - share))
            assert 0 <= row["one_class_seeds"] <= row["n_ok"]
