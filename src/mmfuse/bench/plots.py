"""Figures of a comparison, drawn with matplotlib's Agg canvas (no display, no global backend switch).

Shape legend: ``m`` modalities, ``t_q``/``t_k`` query/key tokens of an attention map.

Every function takes summary rows (:class:`~mmfuse.bench.summary.SummaryRow`) or run
records (:class:`~mmfuse.experiment.RunRecord`) and returns :class:`Figure` entries
(file name, title, caption, PNG bytes drawn in memory): the report embeds them, and
:func:`write_plots` writes them as files only when asked. A figure with nothing to show
is not drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter, LogLocator

from mmfuse.bench.summary import SummaryRow, datasets_of
from mmfuse.experiment.results import Learned, RunRecord
from mmfuse.io import atomic_write

__all__ = ["Figure", "make_all_plots", "write_plots"]

_UNI_COLOR = "#9a9a9a"
_DPI = 110


@dataclass(frozen=True)
class Figure:
    """One drawn figure: its file name, title and caption, and the PNG itself."""

    name: str
    title: str
    caption: str
    png: bytes


def _colors(models: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    fusions = sorted(m for m in set(models) if not m.startswith("uni:"))
    cmap = colormaps["tab20"] if len(fusions) > 10 else colormaps["tab10"]
    out: dict[str, Any] = {m: cmap(i % cmap.N) for i, m in enumerate(fusions)}
    out.update({m: _UNI_COLOR for m in models if m.startswith("uni:")})
    return out


#: one marker per strategy, so no two strategies are told apart by colour alone
_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "H", "8")
_UNI_MARKERS = ("s", "D", "^", "v", "<", ">", "p", "h")


def _markers(models: Sequence[str]) -> dict[str, str]:
    """A marker per model: the fusions (sorted, as :func:`_colors` colours them) and, apart, the unimodal
    baselines (one colour, so the marker is what tells them apart)."""
    fusions = sorted(m for m in set(models) if not m.startswith("uni:"))
    unis = sorted(m for m in set(models) if m.startswith("uni:"))
    out = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(fusions)}
    out.update({m: _UNI_MARKERS[i % len(_UNI_MARKERS)] for i, m in enumerate(unis)})
    return out


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _png(fig: MplFigure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _figure(fig: MplFigure, name: str, title: str, caption: str) -> Figure:
    return Figure(name=f"{name}.png", title=title, caption=caption, png=_png(fig))


def write_plots(figures: Sequence[Figure], folder: str | Path) -> list[Path]:
    """Write ``figures`` as PNG files into ``folder``, removing PNGs of earlier runs that
    these figures do not replace (the folder then shows exactly what the report shows)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in figures}
    for old in folder.glob("*.png"):
        if old.name not in names:
            old.unlink()
    paths = []
    for f in figures:
        atomic_write(folder / f.name, f.png)
        paths.append(folder / f.name)
    return paths


def _datasets(rows: Sequence[SummaryRow]) -> list[str]:
    return datasets_of(rows)


def _ok(rows: Sequence[SummaryRow], dataset: str, variant: str = "standard") -> list[SummaryRow]:
    """Rows of ``dataset`` with a score: standard training (unimodal baselines included) or modality dropout."""
    return [r for r in rows if r.dataset == dataset and r.score_mean is not None
            and (r.standard if variant == "standard" else r.variant == variant)]


def _metric(rows: Sequence[SummaryRow]) -> tuple[str, bool]:
    """The metric name of these rows (``"score"`` if they mix tasks) and its direction."""
    names = {(r.metric, r.higher_is_better) for r in rows}
    return next(iter(names)) if len(names) == 1 else ("score", True)


_BOUNDED = {"accuracy", "macro_f1", "micro_f1", "auroc", "map", "score"}
#: how a metric is named on an axis or in a title
_METRIC_LABEL = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "auroc": "AUROC",
                 "map": "mAP", "rmse": "RMSE", "mae": "MAE", "r2": "R²"}


def _label(metric: str) -> str:
    return _METRIC_LABEL.get(metric, metric)


def _score_metric(rows: Sequence[SummaryRow]) -> str | None:
    """The one metric the scored rows are ranked by; None when the datasets' metrics differ."""
    metrics = {r.metric for r in rows if r.score_mean is not None}
    return next(iter(metrics)) if len(metrics) == 1 else None


def score_figure_name(rows: Sequence[SummaryRow]) -> str:
    """The file name (without ``.png``) of the score figure: ``accuracy`` when every dataset is
    ranked by accuracy, ``score_<metric>`` when all are ranked by another one (``--metric``, or
    macro-F1 on an imbalanced target, RMSE for a regression), ``score`` when the datasets' metrics differ."""
    metric = _score_metric(rows)
    return "score" if metric is None else "accuracy" if metric == "accuracy" else f"score_{metric}"


# --------------------------------------------------------------------- score
def plot_accuracy(rows: Sequence[SummaryRow]) -> Figure | None:
    """Test score per strategy and dataset, a panel a dataset, two a row; the figure, its title and
    every axis are named by the metric plotted (:func:`score_figure_name`)."""
    datasets = [d for d in _datasets(rows) if _ok(rows, d)]
    if not datasets:
        return None
    colors = _colors([r.model for r in rows])
    nrows, ncols = _grid(len(datasets), 2)  # two panels a row: readable at a page's width
    height = max(len(_ok(rows, d)) for d in datasets) * 0.32 + 1.2
    fig = MplFigure(figsize=(5.2 * ncols, height * nrows), layout="constrained")
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        metric, higher = _metric(_ok(rows, ds))
        # the best on top (the last bar of barh), whichever way the metric points
        rs = sorted(_ok(rows, ds), key=lambda r: r.score_mean if higher else -r.score_mean)
        y = np.arange(len(rs))
        acc = [r.score_mean for r in rs]
        err = [r.score_std or 0.0 for r in rs]
        ax.barh(y, acc, xerr=err, color=[colors[r.model] for r in rs], capsize=2.5,
                error_kw={"elinewidth": 0.8})
        ax.set_yticks(y, [r.model for r in rs], fontsize=8)
        best = next((r for r in rs if r.model == r.best_unimodal), None)
        if best is not None:
            ax.axvline(best.score_mean, color="black", linestyle="--", linewidth=1,
                       label=f"best unimodal ({best.model})")
            ax.legend(loc="lower right", fontsize=7)
        # one scale for every panel, from zero: small gaps must look small
        if metric in _BOUNDED:
            ax.set_xlim(0.0, 1.0)
        else:
            ax.set_xlim(min(0.0, min(acc)), max(a + e for a, e in zip(acc, err, strict=True)) * 1.05)
        failed = sorted({r.model + ("" if r.standard else f" ({r.training})")
                         for r in rows if r.dataset == ds and r.n_failed})
        if failed:
            ax.text(0.01, 0.005, "failed runs: " + ", ".join(failed), transform=ax.transAxes, fontsize=7,
                    color="#b3261e", va="bottom", ha="left", wrap=True)
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel(f"test {_label(metric)} (mean ± std over seeds; {'higher' if higher else 'lower'} is better)",
                      fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    metric = _score_metric(rows)
    plotted = "score (each dataset's metric, on its axis)" if metric is None else _label(metric)
    return _figure(fig, score_figure_name(rows), f"Test {plotted} per strategy",
                   f"Bars: mean test {plotted} (the metric the bench ranks by) over seeds, whiskers: standard "
                   "deviation, from 0 on every panel, the best strategy on top. Grey bars are unimodal baselines; "
                   "the dashed line is the best of them. Strategies with failed runs are named in red (see the "
                   "failed runs table).")


# ------------------------------------------------------------------------- cost
def _plain(v: float, _pos: int) -> str:
    """Axis label without exponents: 0.5, 2, 20k, 1.5M."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def plot_cost(rows: Sequence[SummaryRow], *, field: str, xlabel: str, name: str,
              title: str) -> Figure | None:
    datasets = [d for d in _datasets(rows) if any(getattr(r, field) for r in _ok(rows, d))]
    if not datasets:
        return None
    colors = _colors([r.model for r in rows])
    markers = _markers([r.model for r in rows])
    nrows, ncols = _grid(len(datasets), 2)  # two panels a row: readable at a page's width
    fig = MplFigure(figsize=(4.8 * ncols + 2.0, 3.8 * nrows), layout="constrained")
    handles: dict[str, Any] = {}
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        rs = [r for r in _ok(rows, ds) if getattr(r, field)]
        for r in rs:
            # a colour and a marker per strategy; the baselines share grey and differ by marker (in the
            # legend, not as labels on the plot, which overlap where baselines score and cost alike)
            h = ax.errorbar(getattr(r, field), r.score_mean, yerr=r.score_std or 0.0,
                            fmt=markers[r.model], color=colors[r.model], markersize=6.5,
                            capsize=2, elinewidth=0.8, markeredgecolor="black", markeredgewidth=0.5,
                            label=r.model)
            handles.setdefault(r.model, h)
        front = _pareto([r for r in rs if not r.unimodal], field)
        if len(front) > 1:
            ax.plot([getattr(r, field) for r in front], [r.score_mean for r in front], color="black",
                    linewidth=0.8, linestyle=":", zorder=0, label="Pareto front")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(_plain))
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(f"test {_label(_metric(rs)[0])}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    if handles:
        order = sorted(handles, key=lambda m: (m.startswith("uni:"), m))  # fusions, then the baselines
        fig.legend([handles[m] for m in order], order, loc="outside right center", fontsize=8)
    return _figure(fig, name, title,
                   f"Each point is one strategy (mean over seeds, whiskers: std); x: {xlabel}, log scale. "
                   "Each strategy has its own colour and marker; grey points are unimodal baselines, told "
                   "apart by their marker. Left is cheaper; up is better for a score where higher "
                   "is better. The dotted line joins the Pareto front of the fusions: no other fusion is both "
                   "cheaper and better than a point on it.")


def _pareto(rows: Sequence[SummaryRow], field: str) -> list[SummaryRow]:
    """The rows no other row beats on both cost (lower ``field``) and score, by cost."""
    pts = [r for r in rows if getattr(r, field) and r.score_mean is not None]
    front = []
    for r in sorted(pts, key=lambda r: getattr(r, field)):
        if not front or r.better(r.score_mean, front[-1].score_mean):  # type: ignore[arg-type]
            front.append(r)
    return front


# ------------------------------------------------------------------- robustness
def plot_noise(rows: Sequence[SummaryRow]) -> Figure | None:
    datasets = [d for d in _datasets(rows) if any(r.noise_mean for r in _ok(rows, d))]
    if not datasets:
        return None
    variants = [v for v in ("standard", "modality_dropout")
                if any((r.standard if v == "standard" else r.variant == v) and r.noise_mean for r in rows)]
    colors = _colors([r.model for r in rows])
    markers = _markers([r.model for r in rows])
    # a row per dataset, a column per training variant: at most two panels side by side, so the
    # figure stays readable at a page's width however many datasets there are
    ncols = len(variants)
    fig = MplFigure(figsize=(4.6 * ncols + 2.0, 3.2 * len(datasets)), layout="constrained")
    handles: dict[str, Any] = {}
    for di, ds in enumerate(datasets):
        row = []
        for vi, variant in enumerate(variants):
            ax = fig.add_subplot(len(datasets), ncols, di * ncols + vi + 1)
            row.append(ax)
            for r in _ok(rows, ds, variant):
                pts = [(float(s), a) for s, a in r.noise_mean.items() if a is not None]
                if not pts:
                    continue
                xs, ys = zip(*sorted(pts), strict=True)
                (line,) = ax.plot(xs, ys, marker=markers[r.model], markersize=4.5, color=colors[r.model],
                                  markeredgecolor="black", markeredgewidth=0.4,
                                  linestyle="--" if r.unimodal else "-", linewidth=1.2, label=r.model)
                handles.setdefault(r.model, line)
            ax.set_title(f"{ds}: {'trained with modality dropout' if variant != 'standard' else 'standard training'}",
                         fontsize=9)
            ax.set_xlabel("noise std on one modality", fontsize=8)
            ax.set_ylabel(f"test {_metric(rows)[0]}\n(mean over noised modality)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        lo = min(ax.get_ylim()[0] for ax in row)  # one y scale per dataset, across the variants
        hi = max(ax.get_ylim()[1] for ax in row)
        for ax in row:
            ax.set_ylim(lo, hi)
    order = sorted(handles, key=lambda m: (m.startswith("uni:"), m))
    fig.legend([handles[m] for m in order], order, loc="outside right center", fontsize=8)
    return _figure(fig, "robustness_noise", "Robustness to noise",
                  "Gaussian noise of rising standard deviation is added to one modality at a time at test time; "
                  "the curve is the accuracy averaged over which modality is noised. Each strategy has its own "
                  "colour and marker; dashed grey: unimodal baselines (unaffected when another modality is "
                  "noised). One row per dataset"
                  + ("; right: the fusions trained with modality dropout." if len(variants) > 1 else "."))


def plot_missing(rows: Sequence[SummaryRow]) -> Figure | None:
    datasets = [d for d in _datasets(rows)
                if any(r.missing for r in rows if r.dataset == d and r.score_mean is not None)]
    if not datasets:
        return None
    from matplotlib import colormaps

    blocks = []
    for ds in datasets:
        std = [r for r in _ok(rows, ds) if r.missing]
        std.sort(key=lambda r: (not r.unimodal, r.model))
        drop = {r.model: r for r in _ok(rows, ds, "modality_dropout") if r.missing}  # balance rows: the report
        mods = sorted({m for r in std for m in r.missing})
        cols = ["clean"] + [f"no {m}" for m in mods]
        variants: list[tuple[str, dict[str, SummaryRow]]] = [("", {r.model: r for r in std})]
        if drop:
            cols += ["+mdrop clean"] + [f"+mdrop no {m}" for m in mods]
            variants.append(("+mdrop", drop))
        data = np.full((len(std), len(cols)), np.nan)
        for y, r in enumerate(std):
            for vi, (_, by_model) in enumerate(variants):
                rr = by_model.get(r.model)
                if rr is None:
                    continue
                vals = [rr.score_mean] + [rr.missing.get(m) for m in mods]
                for j, v in enumerate(vals):
                    data[y, vi * (len(mods) + 1) + j] = np.nan if v is None else v
        blocks.append((ds, [r.model for r in std], cols, data))
    width = max(len(b[2]) for b in blocks) * 0.62 + 2.6
    nrows, ncols = _grid(len(blocks), 1 if width > 6.5 else 2)  # at most ~13 in wide: numbers readable
    height = max(len(b[1]) for b in blocks) * 0.3 + 1.6
    fig = MplFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    cmap = colormaps["RdYlGn"]
    im = None
    for i, (ds, labels, cols, data) in enumerate(blocks):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (y, x), v in np.ndenumerate(data):
            if not np.isnan(v):
                ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if 0.2 < v < 0.8 else "white")
        split = (len(cols) - 1) // 2 + 0.5 if cols[-1].startswith("+mdrop") else None
        if split is not None:
            ax.axvline(split, color="black", linewidth=1.5)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xticks(range(len(cols)), cols, fontsize=8, rotation=35, ha="right")
        ax.set_title(ds, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.5, label=f"test {_metric(rows)[0]}")
    return _figure(fig, "robustness_missing", "Missing modalities",
                  "Test accuracy with all modalities (clean) and with each modality removed in turn at test "
                  "time (mean over seeds). Right of the black line: the same strategy trained with modality "
                  "dropout ('+mdrop'). Unimodal baselines fall to chance when their own modality is removed.")


# ------------------------------------------------------------------ calibration
def _pooled_bins(records: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Reliability bins pooled over the seeds of one model: ``(counts, confidence, accuracy)``
    per bin (NaN where empty) and the pooled ECE."""
    bins = [r.measurement.calibration.bins for r in records  # type: ignore[union-attr]
            if r.measurement is not None and r.measurement.calibration is not None
            and r.measurement.calibration.bins is not None]
    if not bins or len({b.n_bins for b in bins}) != 1:
        return None
    counts = np.sum([b.counts for b in bins], axis=0).astype(float)
    conf_sum = np.sum([[c * (v or 0.0) for c, v in zip(b.counts, b.confidence, strict=True)] for b in bins], axis=0)
    acc_sum = np.sum([[c * (v or 0.0) for c, v in zip(b.counts, b.accuracy, strict=True)] for b in bins], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = conf_sum / counts, acc_sum / counts
    keep = counts > 0
    ece = float(np.sum(counts[keep] / counts.sum() * np.abs(acc[keep] - conf[keep])))
    return counts, conf, acc, ece


def plot_reliability(records: Sequence[RunRecord]) -> list[Figure]:
    """One reliability diagram per classification dataset: small multiples, one panel per
    model trained the standard way (fusions, then unimodal baselines), best-calibrated first."""
    out = []
    datasets = list(dict.fromkeys(r.dataset for r in records if r.ok))
    for i, ds in enumerate(datasets):
        by_model: dict[str, list[RunRecord]] = {}
        for r in records:
            if r.ok and r.dataset == ds and r.spec.variant.value in ("standard", "unimodal"):
                by_model.setdefault(r.label, []).append(r)
        pooled = {m: p for m, rs in by_model.items() if (p := _pooled_bins(rs)) is not None}
        if not pooled:
            continue
        models = sorted(pooled, key=lambda m: (m.startswith("uni:"), pooled[m][3]))
        nrows, ncols = _grid(len(models), 4)
        fig = MplFigure(figsize=(2.2 * ncols, 2.25 * nrows), layout="constrained")
        colors = _colors(models)
        for j, m in enumerate(models):
            counts, conf, acc, ece = pooled[m]
            n_bins = len(counts)
            edges = np.linspace(0, 1, n_bins + 1)
            centers = (edges[:-1] + edges[1:]) / 2
            ax = fig.add_subplot(nrows, ncols, j + 1)
            few = max(5.0, 0.005 * counts.sum())  # bins this small say little: drawn faded
            for keep, alpha in ((counts >= few, 1.0), ((counts > 0) & (counts < few), 0.25)):
                ax.bar(centers[keep], acc[keep], width=1 / n_bins, color=colors[m], alpha=0.85 * alpha,
                       edgecolor="white", linewidth=0.4)
                ax.bar(centers[keep], (conf - acc)[keep], bottom=acc[keep], width=1 / n_bins, color="none",
                       edgecolor="#b3261e", hatch="////", linewidth=0.4, alpha=alpha)
            ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
            share = counts / counts.sum()
            ax.step(edges, np.r_[share, share[-1]], where="post", color="#555", linewidth=0.7)  # samples per bin
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_title(f"{m}  ECE {ece:.3f}", fontsize=8)
            ax.tick_params(labelsize=6)
            if j % ncols == 0:
                ax.set_ylabel("accuracy", fontsize=7)
            if j >= len(models) - ncols:
                ax.set_xlabel("confidence", fontsize=7)
        out.append(_figure(
            fig, f"reliability_{i}_{''.join(c if c.isalnum() else '_' for c in ds)}", f"Reliability: {ds}",
            "Top-label reliability diagrams on the test split (15 equal-width confidence bins, pooled over "
            "seeds; best-calibrated first). Bars: the accuracy of the samples in each bin; hatched: from there to "
            "their mean confidence (above the bar: overconfident; reaching down into it: underconfident); "
            "dashed: perfect calibration; grey step: the share of samples in each bin; faded: bins of fewer than "
            "5 samples (or 0.5 % of them), whose accuracy is mostly chance. ECE is the sample-weighted mean "
            "gap. A model calibrated with calibrate=temperature is shown after scaling."))
    return out


# ------------------------------------------------------- what the fusions learned
def _learned(records: Sequence[RunRecord]) -> dict[str, list[tuple[str, Learned]]]:
    out: dict[str, list[tuple[str, Learned]]] = {}
    for rec in records:
        if rec.ok and rec.measurement is not None and rec.measurement.learned is not None:
            out.setdefault(rec.dataset, []).append((rec.label, rec.measurement.learned))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def _weight_panels(learned: Learned) -> list[tuple[str, dict[str, list[float]]]]:
    """``(panel title, {group: values})`` per weight-like intermediate."""
    panels: list[tuple[str, dict[str, list[float]]]] = []
    if learned.modality_weights:
        panels.append(("modality weights", dict(learned.modality_weights)))
    for key, g in learned.gates.items():
        if g.per_modality is not None:
            extra = " (mean over features)" if len(g.shape) > 1 else ""
            panels.append((f"gate '{key}'{extra}", dict(g.per_modality)))
        elif g.mean is not None:
            panels.append((f"gate '{key}' (mean over {g.shape})", {key: list(g.mean)}))
    return panels


def _fixed(groups: Mapping[str, Sequence[float]]) -> dict[str, float] | None:
    """``{group: value}`` when every group's values are one value for every sample, else None."""
    out = {}
    for name, values in groups.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0 or float(v.max() - v.min()) > 1e-6:
            return None
        out[name] = float(v[0])
    return out


def plot_gates(records: Sequence[RunRecord]) -> list[Figure]:
    """Per dataset: the distribution over test samples of each weight and gate.

    Weights that are one value for every sample (``late``'s and ``hierarchical``'s fixed
    averages) would be flat lines: they are named with their values in the caption instead
    of drawn. The y axis is the weights' whole range (0 to 1), so a gate that moves by
    0.02 around 0.5 looks as small as it is."""
    figs: list[Figure] = []
    for ds, items in _learned(records).items():
        entries, fixed = [], []
        for model, learned in items:
            for title, groups in _weight_panels(learned):
                same = _fixed(groups)
                if same is None:
                    entries.append((model, title, groups))
                else:
                    fixed.append(f"{model} ({title}: " + ", ".join(f"{k} {v:.2f}" for k, v in same.items()) + ")")
        if not entries and not fixed:
            continue
        nrows, ncols = _grid(max(1, len(entries)), 4)
        fig = MplFigure(figsize=(3.6 * ncols, 2.9 * nrows if entries else 1.2), layout="constrained")
        for i, (model, title, groups) in enumerate(entries):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            names = list(groups)
            data = [np.asarray(groups[n], dtype=float) for n in names]
            data = [d[np.isfinite(d)] for d in data]
            keep = [j for j, d in enumerate(data) if d.size]
            if keep:
                parts = ax.violinplot([data[j] for j in keep], positions=keep, showmedians=True, widths=0.8)
                for body in parts["bodies"]:
                    body.set_alpha(0.55)
            if len(names) > 1:
                ax.axhline(1.0 / len(names), color="black", linestyle=":", linewidth=1)
            lo = min([0.0, *(float(d.min()) for d in data if d.size)])
            hi = max([1.0, *(float(d.max()) for d in data if d.size)])
            ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))  # the whole range: small moves look small
            ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20 if len(names) > 3 else 0)
            ax.set_title(f"{model}: {title}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
        if not entries:  # only fixed weights: say so rather than draw flat lines
            ax = fig.add_subplot(1, 1, 1)
            ax.axis("off")
            ax.text(0.0, 0.5, "every weight here is the same for every test sample (see the caption)",
                    fontsize=9, va="center", transform=ax.transAxes)
        fig.suptitle(f"{ds}: gate and modality-weight distributions on test samples", fontsize=10)
        slug = ds.replace("/", "_")
        caption = ("Distribution over test samples of each modality's weight or gate value "
                   "(seed 0, standard training), on the whole 0-1 range; dotted line: equal weights (1/m). "
                   "A weight far above it means the strategy relies on that modality.")
        if fixed:
            caption += (" Not drawn, because their weights are the same for every sample (a fixed average, "
                        "not a per-sample choice): " + "; ".join(fixed) + ".")
        figs.append(_figure(fig, f"gates_{slug}", f"What the gates learned: {ds}", caption))
    return figs


def _token_names(key: str, mods: Sequence[str]) -> dict[str, list[str] | None]:
    """Token names read from a ``"query->key"`` attention key whose sides name modalities (``a+b``)."""
    out: dict[str, list[str] | None] = {"x": None, "y": None}
    if "->" in key:
        q, k = key.split("/")[0].split("->", 1)
        for axis, side in (("y", q), ("x", k)):
            parts = side.split("+")
            if all(p in mods for p in parts):
                out[axis] = parts
    return out


def plot_attention(records: Sequence[RunRecord]) -> list[Figure]:
    figs: list[Figure] = []
    for ds, items in _learned(records).items():
        # a query over a single key (one token per modality) always has weight 1: nothing to see
        maps = [(model, key, att, learned.modalities)
                for model, learned in items for key, att in learned.attention.items()
                if np.asarray(att.mean, dtype=float).ndim == 2 and np.asarray(att.mean).shape[1] > 1]
        if not maps:
            continue
        n_samples = max(len(att.samples) for _, _, att, _ in maps)
        ncols = 1 + n_samples
        fig = MplFigure(figsize=(2.3 * ncols + 0.6, 2.3 * len(maps) + 0.4), layout="constrained")
        for i, (model, key, att, mods) in enumerate(maps):
            panels = [("mean over test samples", att.mean)] + [
                (f"sample {j}", s) for j, s in enumerate(att.samples)]
            for j, (sub, mat) in enumerate(panels):
                ax = fig.add_subplot(len(maps), ncols, i * ncols + j + 1)
                a = np.asarray(mat, dtype=float)
                if a.ndim != 2:
                    ax.axis("off")
                    continue
                im = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(np.nanmax(a))))
                names = _token_names(key, mods)
                for axis, size in (("x", a.shape[1]), ("y", a.shape[0])):
                    labels = names[axis] if names[axis] and len(names[axis]) == size else (
                        mods if size == len(mods) else None)
                    if labels and size <= 8:
                        ticks = (ax.set_xticks if axis == "x" else ax.set_yticks)
                        ticks(range(size), labels, fontsize=6, rotation=45 if axis == "x" else 0)
                    else:
                        ax.tick_params(axis=axis, labelsize=6)
                ax.set_title(f"{model} [{key}]\n{sub}" if j == 0 else sub, fontsize=7)
                q_side, _, k_side = key.split("/")[0].partition("->")
                ax.set_ylabel(f"query tokens ({q_side})" if k_side else "query tokens", fontsize=6)
                ax.set_xlabel(f"key tokens ({k_side})" if k_side else "key tokens", fontsize=6)
                if j == len(panels) - 1:
                    fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        fig.suptitle(f"{ds}: attention (query rows x key columns), averaged over heads", fontsize=10)
        slug = ds.replace("/", "_")
        figs.append(_figure(fig, f"attention_{slug}", f"What the attention learned: {ds}",
                           "Attention weights averaged over heads: the mean over test samples, then a few "
                           "single test samples (seed 0, standard training). Rows are queries, columns keys. "
                           "Maps over a single key (one token per modality, e.g. vector inputs) are always 1 "
                           "and are left out."))
    return figs


# ------------------------------------------------- attribution and interactions
def plot_attribution(records: Sequence[RunRecord]) -> list[Figure]:
    """Per dataset: each fusion's Shapley value per modality (mean over seeds)."""
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    metric = "score"
    for rec in records:
        m = rec.measurement
        if not rec.ok or m is None or m.shapley is None or rec.spec.variant.value != "standard":
            continue
        metric = m.metric
        for mod, v in m.shapley["values"].items():
            per.setdefault(rec.dataset, {}).setdefault(rec.label, {}).setdefault(mod, []).append(float(v))
    figs = []
    for ds, models in per.items():
        names = sorted(models)
        mods = sorted({k for v in models.values() for k in v})
        fig = MplFigure(figsize=(max(5.0, 0.55 * len(names) * max(1, len(mods)) / 2 + 2.5), 3.6),
                        layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(1, len(mods))
        for j, mod in enumerate(mods):
            vals = [float(np.mean(models[n].get(mod, [np.nan]))) for n in names]
            ax.bar(np.arange(len(names)) + (j - (len(mods) - 1) / 2) * width, vals, width, label=mod)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right")
        ax.set_ylabel(f"Shapley value ({metric})", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, title="modality", title_fontsize=7)
        ax.set_title(ds, fontsize=10)
        slug = ds.replace("/", "_")
        figs.append(_figure(fig, f"attribution_{slug}", f"What each modality contributes: {ds}",
                            "Each modality's Shapley value for the test score of each fusion (mean over seeds): "
                            "its average gain when added to every subset of the other modalities, the others "
                            "removed through the fusion's presence masks; the empty set scores as predicting "
                            "the training prior. The values of one fusion sum to its score minus that baseline."))
    return figs


def plot_interactions(found: Mapping[str, Any]) -> Figure | None:
    """Per dataset: redundancy, uniqueness and synergy (bits), summed over modality pairs."""
    diag = {ds: v.diagnosis for ds, v in found.items() if v.diagnosis is not None}
    if not diag:
        return None
    names = list(diag)
    terms = ("redundancy", "uniqueness", "synergy")
    fig = MplFigure(figsize=(max(5.0, 1.3 * len(names) + 2), 3.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    width = 0.26
    for j, term in enumerate(terms):
        vals = [diag[d].totals.get(term, 0.0) for d in names]
        ax.bar(np.arange(len(names)) + (j - 1) * width, vals, width, label=term)
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20, ha="right")
    ax.set_ylabel("bits (sum over modality pairs)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _figure(fig, "interactions", "What kind of interaction each dataset holds",
                   "Partial information decomposition of each pair of modalities about the label (Liang et al. "
                   "2023, convex estimator on discretised learned embeddings), summed over pairs: redundancy is "
                   "what either modality tells alone, uniqueness what only one tells, synergy what only the two "
                   "together tell. Estimates on discretised features: compare their sizes, not their digits.")


def make_all_plots(rows: Sequence[SummaryRow], records: Sequence[RunRecord],
                   found: Mapping[str, Any] | None = None) -> list[Figure]:
    """Every figure of the comparison, drawn in memory."""
    figs: list[Figure | None] = [
        plot_accuracy(rows),
        plot_cost(rows, field="params", xlabel="parameters", name="cost_params",
                  title="Score vs parameter count"),
        plot_cost(rows, field="train_time_s", xlabel="training time (s)", name="cost_train_time",
                  title="Score vs training time"),
        plot_noise(rows),
        plot_missing(rows),
    ]
    figs.append(plot_interactions(found or {}))
    figs += plot_attribution(records)
    figs += plot_gates(records)
    figs += plot_attention(records)
    figs += plot_reliability(records)
    return [f for f in figs if f is not None]
