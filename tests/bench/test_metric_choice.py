"""The ranking metric (--metric, YAML metric:, metric=NAME; macro-F1 by default on an imbalanced
target), records written before it, and the console table at 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mmfuse.bench.config import BenchConfig, BenchConfigError, load_config
from mmfuse.bench.summary import SummaryRow
from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.experiment.specs import SPEC_SCHEMA, MeasureConfig, measure_key, stable_hash
from mmfuse.training.metrics import choose_metric


# ------------------------------------------------------------------------------ default choice
def _labels(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])


@pytest.mark.parametrize(("task", "counts", "expected"), [
    ("binary", [82, 18], ("macro_f1", True)),  # the reviews' 82/18
    ("binary", [60, 40], ("accuracy", True)),
    ("binary", [70, 30], ("accuracy", True)),  # exceeds 70 %, not reaches it
    ("binary", [71, 29], ("macro_f1", True)),
    ("multiclass", [75, 15, 10], ("macro_f1", True)),
    ("multiclass", [40, 30, 30], ("accuracy", True)),
    ("multilabel", None, ("map", True)),
    ("regression", None, ("rmse", False)),
])
def test_auto_ranks_an_imbalanced_classification_target_by_macro_f1(task: str, counts: list[int] | None,
                                                                   expected: tuple[str, bool]) -> None:
    labels = _labels(counts) if counts else None
    assert choose_metric("auto", task, labels) == expected
    assert choose_metric(None, task, labels) == expected


def test_an_explicit_metric_wins_and_one_the_task_lacks_is_refused_listing_the_tasks_metrics() -> None:
    assert choose_metric("accuracy", "binary", _labels([90, 10])) == ("accuracy", True)
    assert choose_metric("auroc", "multiclass") == ("auroc", True)
    assert choose_metric("mae", "regression") == ("mae", False)
    with pytest.raises(ConfigError, match=re.escape("expected one of ['accuracy', 'macro_f1', 'auroc', 'auto'] "
                                                    "for a binary task, got 'rmse'")):
        choose_metric("rmse", "binary")


# --------------------------------------------------------------------- one grammar, every route
def test_metric_through_yaml_settings_and_flag(tmp_path: Path) -> None:
    assert BenchConfig().measure.metric == "auto"
    path = tmp_path / "b.yaml"
    path.write_text("metric: auroc\n")
    assert load_config(path).measure.metric == "auroc"
    assert load_config(path, settings=["metric=accuracy"]).measure.metric == "accuracy"  # setting over YAML
    assert load_config(path, settings=["measure.metric=accuracy"]).measure.metric == "accuracy"
    assert load_config(path, settings=["metric=accuracy"], metric="macro_f1").measure.metric == "macro_f1"
    assert load_config(path, metric=None).measure.metric == "auroc"  # a flag not given sets nothing
    nested = tmp_path / "n.yaml"
    nested.write_text("measure:\n  metric: r2\n")
    assert load_config(nested).measure.metric == "r2"


@pytest.mark.parametrize("how", ["yaml", "setting", "flag"])
def test_an_unknown_metric_is_refused_by_every_route(tmp_path: Path, how: str) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("metric: f1\n" if how == "yaml" else "seeds: 1\n")
    with pytest.raises(BenchConfigError, match=r"metric: expected 'auto' or one of \['accuracy', 'macro_f1'"):
        load_config(path, settings=["metric=f1"] if how == "setting" else None,
                    metric="f1" if how == "flag" else None)


def test_cli_metric_flag_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, BenchConfig] = {}

    def fake_run_bench(config: BenchConfig, **kw: object) -> object:
        seen["cfg"] = config
        return type("Outcome", (), {"failed": 0})()

    monkeypatch.setattr("mmfuse.bench.run_bench", fake_run_bench)
    assert main(["bench", "--dataset", "mfeat", "--metric", "auroc", "--out", str(tmp_path / "o")]) == 0
    assert seen["cfg"].measure.metric == "auroc"


def test_a_metric_the_datasets_task_lacks_is_refused_before_any_run(tmp_path: Path, data_root: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    rc = main(["bench", "--dataset", "mfeat", "--fusions", "early", "--metric", "rmse", "--seeds", "1",
               "--executor", "serial", "--out", str(out), "--no-progress", "--data-root", str(data_root)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "dataset 'mfeat'" in err and "['accuracy', 'macro_f1', 'auroc', 'auto'] for a multiclass task" in err
    assert not (out / "runs.jsonl").exists() or (out / "runs.jsonl").read_text() == ""


# ------------------------------------------------------------------ records from before --metric
def test_records_written_before_the_metric_setting_keep_their_keys() -> None:
    old = {"noise_scales": [1.0], "intermediates_samples": 0, "throughput_batch": 512, "missing": True,
           "attribution": True, "sample_scores": True, "probe": False}
    cfg = MeasureConfig.from_json(old)
    assert cfg.metric is None  # read as "the task's main metric", as they were measured
    assert cfg.to_json() == old
    assert measure_key("t", cfg) == stable_hash({"train": "t", "measure": old, "schema": SPEC_SCHEMA})
    # the default of a new bench is another measurement (re-measured, not retrained)
    assert measure_key("t", MeasureConfig(noise_scales=(1.0,))) != measure_key("t", cfg)
    from mmfuse.experiment.results import Measurement

    m = Measurement.from_json({"metric": "accuracy", "higher_is_better": True, "metrics": {"accuracy": 0.8},
                               "n_test": 2, "sample_scores": [1.0, 0.0]})
    assert m.sample_labels is None and m.sample_predictions is None
    again = Measurement.from_json(json.loads(json.dumps(m.to_json())))
    assert again == m


# -------------------------------------------------------------------------- the console at 80
def _row(model: str, score: float, *, unimodal: bool = False, acc: float = 0.85, one: int = 0) -> SummaryRow:
    return SummaryRow(
        dataset="reviews.csv", model=model, variant="unimodal" if unimodal else "standard", unimodal=unimodal,
        metric="macro_f1", higher_is_better=True, seeds=[0, 1], n_ok=2, n_failed=0, errors=[],
        score_mean=score, score_std=0.012,
        metrics={"accuracy": acc, "macro_f1": score, "auroc": 0.901}, params=123456.0, train_time_s=12.3,
        throughput_sps=45678.0, memory_mb=12.5, missing={"text": 0.5, "tabular": 0.6}, missing_worst=0.5,
        noise_mean={"0.5": 0.7, "2": 0.61}, best_unimodal="uni:tabular", best_unimodal_score=0.451,
        gain=score - 0.451, majority_rate=0.82, one_class_seeds=one)


def test_the_console_fits_80_columns_and_says_where_the_full_table_is() -> None:
    from rich.console import Console

    from mmfuse.bench.console import print_summary

    rows = [_row("uni:tabular", 0.451, unimodal=True, acc=0.82, one=2), _row("uni:Review Text", 0.71, unimodal=True),
            _row("early", 0.752), _row("hierarchical_attention_long_name", 0.748), _row("tensor", 0.74, one=1)]
    console = Console(width=80, record=True, color_system=None)
    print_summary(console, rows, where="bench-out/reviews/results.csv and bench-out/reviews/report.html")
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in text  # no header, name or number cut
    header = next(line for line in lines if "macro_f1 ± sd" in line)
    for col in ("model", "acc", "AUROC", "gain"):  # the ranking metric, the task's others, the gain
        assert col in header
    assert "0.752±0.012" in text
    assert "hierarchical_attenti" in text and "on_long_name" in text  # a long name wraps, it is not cut
    assert "bench-out/reviews/results.csv" in text and "not shown at 80 columns:" in text
    # the baseline at the majority-class rate, and a model that predicts one class in a seed, are marked
    assert "uni:tabular is at the majority-class rate (0.82): it predicts one class" in text
    assert "tensor predicts one class in 1 of 2 seeds" in text
    wide = Console(width=200, record=True, color_system=None)
    print_summary(wide, rows, where="x/results.csv")
    text = wide.export_text()
    assert "not shown" not in text and "samp/s" in text and "MiB" in text and "params" in text


def test_majority_class_marks_say_what_the_numbers_show() -> None:
    from mmfuse.bench.verdict import majority_sentence

    at_rate = _row("uni:tabular", 0.45, unimodal=True, acc=0.82, one=2)  # every seed predicts one class
    assert at_rate.majority_note() == "is at the majority-class rate (0.82): it predicts one class"
    near = _row("late", 0.47, acc=0.824)  # within 0.005 of the rate, predicting both classes
    assert near.majority_note() == "is at the majority-class rate (0.82)"
    some = _row("tensor", 0.70, acc=0.86, one=1)
    assert some.majority_note() == "predicts one class in 1 of 2 seeds"
    good = _row("early", 0.75, acc=0.90)
    assert good.majority_note() is None
    assert majority_sentence([at_rate, good]) == ("Note: uni:tabular is at the majority-class rate (0.82): it "
                                                  "predicts one class.")
    assert majority_sentence([good]) is None
