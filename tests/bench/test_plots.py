"""The report's figures, read back from the matplotlib figures they are drawn from.

Records come from a fake run function over eleven strategies and six datasets (the size of
the default bench), so every check is about what a reader of the report sees: each
strategy told apart by more than colour, panels at most two a row where a page is narrow,
weights that never vary left out and named, and gates on their whole 0-1 range.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from mmfuse.bench import plots
from mmfuse.bench.config import BenchConfig
from mmfuse.bench.executors import guarded_run
from mmfuse.bench.grid import BenchRun, build_grid
from mmfuse.bench.run import RunResult
from mmfuse.bench.summary import summarize
from mmfuse.experiment.results import GateSummary, Learned, Measurement, TrainingFacts
from mmfuse.training import TrainConfig

STRATEGIES = ["attention", "bottleneck", "cross_modal", "early", "film", "gated", "hierarchical", "late",
              "low_rank", "multihead", "tensor"]
TASKS = ["synergy", "redundancy", "uniqueness", "alignment", "reliability", "groups"]
MODS = ("a", "b")
N = 16


def _score(label: str, task: str) -> float:
    return 0.5 + (zlib.crc32(f"{label}/{task}".encode()) % 400) / 1000


def _run(run: BenchRun) -> RunResult:
    label, task = run.spec.label, run.spec.data.options["task"]
    acc = _score(label, task)
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    learned = None
    if not label.startswith("uni:"):
        if label in ("late", "hierarchical"):  # a fixed average: the same weights for every sample
            learned = Learned(modalities=list(MODS), modality_weights={m: [0.5] * N for m in MODS})
        elif label == "gated":  # a gate that moves by +-0.02 around 0.5
            g = (0.5 + 0.02 * rng.uniform(-1, 1, N)).tolist()
            learned = Learned(modalities=list(MODS), gates={"gate": GateSummary(
                shape=[N, 8], per_modality={"a": g, "b": [1 - v for v in g]})})
    scales = [f"{s:g}" for s in run.measure.noise_scales]
    noise = {m: {s: acc - 0.05 * float(s) for s in scales} for m in MODS}
    return RunResult(
        training=TrainingFacts(params=1000 + 7 * len(label) ** 2, fusion_params=None, train_time_s=1.0 + len(label) / 10,
                               epochs_run=3, best_epoch=2, val_metrics={"accuracy": acc}, threads=1),
        measurement=Measurement(metric="accuracy", higher_is_better=True, metrics={"accuracy": acc}, n_test=100,
                                missing={m: acc - 0.1 for m in MODS}, noise=noise,
                                noise_mean={s: acc - 0.05 * float(s) for s in scales}, learned=learned))


@pytest.fixture(scope="module")
def results():
    config = BenchConfig(datasets=["synthetic"], synthetic_tasks=TASKS, seeds=1, dropout_seeds=1,
                         modality_dropout=0.3, train=TrainConfig(epochs=1, progress=False),
                         fusion_options={"hierarchical": {"groups": [["a"], ["b"]]}})
    runs = build_grid(config, fusions=STRATEGIES, modalities_of=lambda data: MODS)
    records = [guarded_run(_run, r) for r in runs]
    assert all(r.ok for r in records)
    return summarize(records), records


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plot functions draw, by the file name they give."""
    seen = {}
    real = plots._figure

    def keep(fig, name, title, caption):
        seen[name] = fig
        return real(fig, name, title, caption)

    monkeypatch.setattr(plots, "_figure", keep)
    monkeypatch.setattr(plots, "_png", lambda fig: b"")  # what is drawn is checked, not its pixels: no rendering
    return seen


def _styles(fig) -> dict[str, set[tuple[str, tuple[float, ...]]]]:
    """Label -> the (marker, colour) pairs its points and lines are drawn with, over every panel."""
    from matplotlib.colors import to_rgba

    out: dict[str, set] = {}
    for ax in fig.axes:
        drawn = [(c.get_label(), c.lines[0]) for c in ax.containers if c.lines and c.lines[0] is not None]
        drawn += [(line.get_label(), line) for line in ax.get_lines()]
        for label, line in drawn:
            if label.startswith("_") or label == "Pareto front":
                continue
            out.setdefault(label, set()).add((line.get_marker(), tuple(np.round(to_rgba(line.get_color()), 3))))
    return out


def _columns(fig) -> int:
    """Panels side by side in the figure (distinct left edges of its data axes)."""
    return len({round(ax.get_position().x0, 2) for ax in fig.axes if ax.get_label() != "<colorbar>"})


def test_every_strategy_has_its_own_marker_and_colour_in_the_cost_and_noise_plots(results, drawn) -> None:
    rows, _ = results
    plots.plot_cost(rows, field="params", xlabel="parameters", name="cost_params", title="t")
    plots.plot_noise(rows)
    for name in ("cost_params", "robustness_noise"):
        fig = drawn[name]
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert set(STRATEGIES) <= set(labels) and {"uni:a", "uni:b"} <= set(labels)
        styles = _styles(fig)
        assert all(len(v) == 1 for v in styles.values()), styles  # one style a strategy, in every panel
        styles = {k: next(iter(v)) for k, v in styles.items()}
        fusion_markers = [styles[s][0] for s in STRATEGIES]
        assert len(set(fusion_markers)) == len(STRATEGIES), f"{name}: {fusion_markers}"
        assert styles["uni:a"][0] != styles["uni:b"][0]  # one grey: the marker tells them apart
        # no point of the cost plot is labelled on the axes, where the baselines' names overlapped
        if name == "cost_params":
            assert not any(t.get_text().startswith("uni:") for ax in fig.axes for t in ax.texts)


def test_wide_grids_stay_at_most_two_panels_a_row(results, drawn) -> None:
    rows, _ = results
    plots.plot_noise(rows)
    plots.plot_missing(rows)
    plots.plot_cost(rows, field="params", xlabel="parameters", name="cost_params", title="t")
    plots.plot_accuracy(rows)
    noise = drawn["robustness_noise"]
    assert len(noise.axes) == 12 and _columns(noise) == 2  # was one row of 12 at the default bench's size
    assert _columns(drawn["cost_params"]) == 2
    score = drawn["accuracy"]
    assert len(score.axes) == len(TASKS) and _columns(score) == 2  # was three a row (1,728 px wide)
    assert score.get_size_inches()[0] <= 13
    missing = drawn["robustness_missing"]
    assert _columns(missing) <= 2
    assert noise.get_size_inches()[0] <= 13 and missing.get_size_inches()[0] <= 13
    numbers = [t for ax in missing.axes for t in ax.texts]
    assert numbers and min(t.get_fontsize() for t in numbers) >= 8


def test_fixed_weights_are_named_not_drawn_and_gates_span_zero_to_one(results, drawn) -> None:
    _, records = results
    figs = plots.plot_gates(records)
    assert len(figs) == len(TASKS)
    for fig in figs:
        mpl = drawn[fig.name[:-4]]
        titles = [ax.get_title() for ax in mpl.axes]
        assert titles and all(t.startswith("gated:") for t in titles), titles  # late, hierarchical: not drawn
        assert "late (modality weights: a 0.50, b 0.50)" in fig.caption
        assert "hierarchical (modality weights: a 0.50, b 0.50)" in fig.caption
        for ax in mpl.axes:  # the gate moves by 0.02: on a 0-1 axis it looks as small as it is
            lo, hi = ax.get_ylim()
            assert lo <= 0.0 and hi >= 1.0


def _ranked_by(rows, metric_of):
    """The rows as if each dataset were ranked by ``metric_of(dataset) -> (name, higher_is_better)``."""
    import dataclasses

    return [dataclasses.replace(r, metric=metric_of(r.dataset)[0], higher_is_better=metric_of(r.dataset)[1])
            for r in rows]


@pytest.mark.parametrize(("metric_of", "name", "title", "axis"), [
    (lambda ds: ("accuracy", True), "accuracy", "Test accuracy per strategy", {"test accuracy"}),
    (lambda ds: ("macro_f1", True), "score_macro_f1", "Test macro-F1 per strategy", {"test macro-F1"}),
    (lambda ds: ("rmse", False), "score_rmse", "Test RMSE per strategy", {"test RMSE"}),
    # the datasets' metrics differ: one file, each panel's axis names its own
    (lambda ds: ("r2", True) if ds.endswith("synergy") else ("accuracy", True), "score",
     "Test score (each dataset's metric, on its axis) per strategy", {"test R²", "test accuracy"}),
])
def test_the_score_figure_is_named_by_the_metric_it_plots(results, drawn, metric_of, name, title, axis) -> None:
    rows = _ranked_by(results[0], metric_of)
    fig = plots.plot_accuracy(rows)
    assert fig.name == f"{name}.png" and fig.title == title
    mpl = drawn[name]
    labels = {ax.get_xlabel().split(" (")[0] for ax in mpl.axes}
    assert labels == axis
    lower = metric_of("")[1] is False
    for ax in mpl.axes:  # the best strategy on top (barh's last bar), whichever way the metric points
        widths = [p.get_width() for p in ax.patches]
        assert widths[-1] == (min(widths) if lower else max(widths))
        assert ("lower is better" in ax.get_xlabel()) == lower
