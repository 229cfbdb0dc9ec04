"""Figures of a comparison, drawn with matplotlib's Agg canvas (no display, no global backend switch).

Shape legend: ``m`` modalities, ``t_q``/``t_k`` query/key tokens of an attention map.

Every function takes summary rows (see :mod:`mmfuse.bench.summary`) or run records
and a folder, writes PNG files and returns them as :class:`Figure` entries (path,
title, caption) for the report. A figure with nothing to show is not written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter, LogLocator

__all__ = ["Figure", "make_all_plots"]

_UNI_COLOR = "#9a9a9a"
_DPI = 110


@dataclass(frozen=True)
class Figure:
    path: Path
    title: str
    caption: str


def _colors(models: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    fusions = sorted(m for m in set(models) if not m.startswith("uni:"))
    cmap = colormaps["tab20"] if len(fusions) > 10 else colormaps["tab10"]
    out: dict[str, Any] = {m: cmap(i % cmap.N) for i, m in enumerate(fusions)}
    out.update({m: _UNI_COLOR for m in models if m.startswith("uni:")})
    return out


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _save(fig: MplFigure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", facecolor="white")
    return path


def _datasets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in rows:
        if r["dataset"] not in out:
            out.append(r["dataset"])
    return out


def _ok(rows: Sequence[Mapping[str, Any]], dataset: str, variant: str = "standard") -> list[Mapping[str, Any]]:
    return [r for r in rows if r["dataset"] == dataset and r["variant"] == variant and r["accuracy_mean"] is not None]


# --------------------------------------------------------------------- accuracy
def plot_accuracy(rows: Sequence[Mapping[str, Any]], out: Path) -> Figure | None:
    datasets = [d for d in _datasets(rows) if _ok(rows, d)]
    if not datasets:
        return None
    colors = _colors([r["model"] for r in rows])
    nrows, ncols = _grid(len(datasets))
    height = max(len(_ok(rows, d)) for d in datasets) * 0.32 + 1.2
    fig = MplFigure(figsize=(5.2 * ncols, height * nrows), layout="constrained")
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        rs = sorted(_ok(rows, ds), key=lambda r: r["accuracy_mean"])
        y = np.arange(len(rs))
        acc = [r["accuracy_mean"] for r in rs]
        err = [r["accuracy_std"] or 0.0 for r in rs]
        ax.barh(y, acc, xerr=err, color=[colors[r["model"]] for r in rs], capsize=2.5,
                error_kw={"elinewidth": 0.8})
        ax.set_yticks(y, [r["model"] for r in rs], fontsize=8)
        best = next((r for r in rs if r["model"] == r.get("best_unimodal")), None)
        if best is not None:
            ax.axvline(best["accuracy_mean"], color="black", linestyle="--", linewidth=1,
                       label=f"best unimodal ({best['model']})")
            ax.legend(loc="lower right", fontsize=7)
        lo = min(a - e for a, e in zip(acc, err, strict=True))
        ax.set_xlim(max(0.0, lo - 0.05), min(1.0, max(a + e for a, e in zip(acc, err, strict=True)) + 0.02))
        failed = sorted({r["model"] + (" +mdrop" if r["variant"] != "standard" else "")
                         for r in rows if r["dataset"] == ds and r["n_failed"]})
        if failed:
            ax.text(0.01, 0.005, "failed runs: " + ", ".join(failed), transform=ax.transAxes, fontsize=7,
                    color="#b3261e", va="bottom", ha="left", wrap=True)
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("test accuracy (mean ± std over seeds)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    return Figure(_save(fig, out / "accuracy.png"), "Test accuracy per strategy",
                  "Bars: mean test accuracy over seeds, whiskers: standard deviation. Grey bars are unimodal "
                  "baselines; the dashed line is the best of them: a fusion left of it did not help. "
                  "Strategies with failed runs are named in red (see the failed runs table).")


# ------------------------------------------------------------------------- cost
def _plain(v: float, _pos: int) -> str:
    """Axis label without exponents: 0.5, 2, 20k, 1.5M."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def plot_cost(rows: Sequence[Mapping[str, Any]], out: Path, *, field: str, xlabel: str, name: str,
              title: str) -> Figure | None:
    datasets = [d for d in _datasets(rows) if any(r.get(field) for r in _ok(rows, d))]
    if not datasets:
        return None
    colors = _colors([r["model"] for r in rows])
    nrows, ncols = _grid(len(datasets))
    fig = MplFigure(figsize=(4.8 * ncols + 1.8, 3.8 * nrows), layout="constrained")
    handles: dict[str, Any] = {}
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        rs = [r for r in _ok(rows, ds) if r.get(field)]
        for r in rs:
            h = ax.errorbar(r[field], r["accuracy_mean"], yerr=r["accuracy_std"] or 0.0,
                            fmt="s" if r["unimodal"] else "o", color=colors[r["model"]], markersize=6,
                            capsize=2, elinewidth=0.8, markeredgecolor="black" if r["unimodal"] else "none")
            if r["unimodal"]:  # baselines share one colour: name them on the plot
                ax.annotate(r["model"], (r[field], r["accuracy_mean"]), fontsize=7,
                            xytext=(4, -3), textcoords="offset points")
            else:
                handles.setdefault(r["model"], h)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(_plain))
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=7)
    return Figure(_save(fig, out / f"{name}.png"), title,
                  f"Each point is one strategy (mean over seeds, whiskers: std); x: {xlabel}, log scale. "
                  "Grey squares: unimodal baselines. Up and to the left is better.")


# ------------------------------------------------------------------- robustness
def plot_noise(rows: Sequence[Mapping[str, Any]], out: Path) -> Figure | None:
    datasets = [d for d in _datasets(rows) if any(r["noise_mean"] for r in _ok(rows, d))]
    if not datasets:
        return None
    variants = [v for v in ("standard", "modality_dropout")
                if any(r["variant"] == v and r["noise_mean"] for r in rows)]
    colors = _colors([r["model"] for r in rows])
    ncols = len(datasets)
    fig = MplFigure(figsize=(4.4 * ncols + 1.8, 3.6 * len(variants)), layout="constrained")
    handles: dict[str, Any] = {}
    for vi, variant in enumerate(variants):
        for di, ds in enumerate(datasets):
            ax = fig.add_subplot(len(variants), ncols, vi * ncols + di + 1)
            for r in _ok(rows, ds, variant):
                pts = [(float(s), a) for s, a in r["noise_mean"].items() if a is not None]
                if not pts:
                    continue
                xs, ys = zip(*sorted(pts), strict=True)
                (line,) = ax.plot(xs, ys, marker="o", markersize=3, color=colors[r["model"]],
                                  linestyle="--" if r["unimodal"] else "-", linewidth=1.2, label=r["model"])
                handles.setdefault(r["model"], line)
            ax.set_title(f"{ds}\n{'trained with modality dropout' if variant != 'standard' else 'standard training'}",
                         fontsize=9)
            ax.set_xlabel("noise std on one modality", fontsize=8)
            ax.set_ylabel("test accuracy (mean over noised modality)", fontsize=7)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    for di in range(ncols):
        col = [fig.axes[vi * ncols + di] for vi in range(len(variants))]
        lo = min(ax.get_ylim()[0] for ax in col)
        hi = max(ax.get_ylim()[1] for ax in col)
        for ax in col:
            ax.set_ylim(lo, hi)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=7)
    return Figure(_save(fig, out / "robustness_noise.png"), "Robustness to noise",
                  "Gaussian noise of rising standard deviation is added to one modality at a time at test time; "
                  "the curve is the accuracy averaged over which modality is noised. Dashed grey: unimodal "
                  "baselines (unaffected when another modality is noised). Bottom row: the fusions trained with "
                  "modality dropout.")


def plot_missing(rows: Sequence[Mapping[str, Any]], out: Path) -> Figure | None:
    datasets = [d for d in _datasets(rows)
                if any(r["missing"] for r in rows if r["dataset"] == d and r["accuracy_mean"] is not None)]
    if not datasets:
        return None
    from matplotlib import colormaps

    blocks = []
    for ds in datasets:
        std = [r for r in _ok(rows, ds) if r["missing"]]
        std.sort(key=lambda r: (not r["unimodal"], r["model"]))
        drop = {r["model"]: r for r in _ok(rows, ds, "modality_dropout") if r["missing"]}
        mods = sorted({m for r in std for m in r["missing"]})
        cols = ["clean"] + [f"no {m}" for m in mods]
        variants: list[tuple[str, dict[str, Mapping[str, Any]]]] = [("", {r["model"]: r for r in std})]
        if drop:
            cols += ["+mdrop clean"] + [f"+mdrop no {m}" for m in mods]
            variants.append(("+mdrop", drop))
        data = np.full((len(std), len(cols)), np.nan)
        for y, r in enumerate(std):
            for vi, (_, by_model) in enumerate(variants):
                rr = by_model.get(r["model"])
                if rr is None:
                    continue
                vals = [rr["accuracy_mean"]] + [rr["missing"].get(m) for m in mods]
                for j, v in enumerate(vals):
                    data[y, vi * (len(mods) + 1) + j] = np.nan if v is None else v
        blocks.append((ds, [r["model"] for r in std], cols, data))
    nrows, ncols = _grid(len(blocks))
    height = max(len(b[1]) for b in blocks) * 0.3 + 1.6
    width = max(len(b[2]) for b in blocks) * 0.62 + 2.6
    fig = MplFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    cmap = colormaps["RdYlGn"]
    im = None
    for i, (ds, labels, cols, data) in enumerate(blocks):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (y, x), v in np.ndenumerate(data):
            if not np.isnan(v):
                ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="black" if 0.2 < v < 0.8 else "white")
        split = (len(cols) - 1) // 2 + 0.5 if cols[-1].startswith("+mdrop") else None
        if split is not None:
            ax.axvline(split, color="black", linewidth=1.5)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=35, ha="right")
        ax.set_title(ds, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.5, label="test accuracy")
    return Figure(_save(fig, out / "robustness_missing.png"), "Missing modalities",
                  "Test accuracy with all modalities (clean) and with each modality removed in turn at test "
                  "time (mean over seeds). Right of the black line: the same strategy trained with modality "
                  "dropout ('+mdrop'). Unimodal baselines fall to chance when their own modality is removed.")


# ------------------------------------------------------- what the fusions learned
def _learned(records: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
    out: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for rec in records:
        res = rec.get("result") or {}
        if rec.get("status") == "ok" and res.get("learned"):
            out.setdefault(rec["spec"]["dataset_label"], []).append((rec["label"], res["learned"]))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def _weight_panels(learned: Mapping[str, Any]) -> list[tuple[str, dict[str, list[float]]]]:
    """``(panel title, {group: values})`` per weight-like intermediate."""
    panels: list[tuple[str, dict[str, list[float]]]] = []
    if learned.get("modality_weights"):
        panels.append(("modality weights", dict(learned["modality_weights"])))
    for key, g in (learned.get("gates") or {}).items():
        if "per_modality" in g:
            extra = " (mean over features)" if len(g.get("shape") or []) > 1 else ""
            panels.append((f"gate '{key}'{extra}", dict(g["per_modality"])))
        elif "mean" in g:
            panels.append((f"gate '{key}' (mean over {g.get('shape')})", {key: list(g["mean"])}))
    return panels


def plot_gates(records: Sequence[Mapping[str, Any]], out: Path) -> list[Figure]:
    figs: list[Figure] = []
    for ds, items in _learned(records).items():
        entries = [(model, title, groups) for model, learned in items for title, groups in _weight_panels(learned)]
        if not entries:
            continue
        nrows, ncols = _grid(len(entries), 4)
        fig = MplFigure(figsize=(3.6 * ncols, 2.9 * nrows), layout="constrained")
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
            ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20 if len(names) > 3 else 0)
            ax.set_title(f"{model}: {title}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{ds}: gate and modality-weight distributions on test samples", fontsize=10)
        slug = ds.replace("/", "_")
        figs.append(Figure(_save(fig, out / f"gates_{slug}.png"), f"What the gates learned: {ds}",
                           "Distribution over test samples of each modality's weight or gate value "
                           "(seed 0, standard training); dotted line: equal weights (1/m). A weight far "
                           "above it means the strategy relies on that modality."))
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


def plot_attention(records: Sequence[Mapping[str, Any]], out: Path) -> list[Figure]:
    figs: list[Figure] = []
    for ds, items in _learned(records).items():
        # a query over a single key (one token per modality) always has weight 1: nothing to see
        maps = [(model, key, att, learned.get("modalities") or [])
                for model, learned in items for key, att in (learned.get("attention") or {}).items()
                if np.asarray(att["mean"], dtype=float).ndim == 2 and np.asarray(att["mean"]).shape[1] > 1]
        if not maps:
            continue
        n_samples = max(len(att["samples"]) for _, _, att, _ in maps)
        ncols = 1 + n_samples
        fig = MplFigure(figsize=(2.3 * ncols + 0.6, 2.3 * len(maps) + 0.4), layout="constrained")
        for i, (model, key, att, mods) in enumerate(maps):
            panels = [("mean over test samples", att["mean"])] + [
                (f"sample {j}", s) for j, s in enumerate(att["samples"])]
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
                if j == len(panels) - 1:
                    fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        fig.suptitle(f"{ds}: attention (query rows x key columns), averaged over heads", fontsize=10)
        slug = ds.replace("/", "_")
        figs.append(Figure(_save(fig, out / f"attention_{slug}.png"), f"What the attention learned: {ds}",
                           "Attention weights averaged over heads: the mean over test samples, then a few "
                           "single test samples (seed 0, standard training). Rows are queries, columns keys. "
                           "Maps over a single key (one token per modality, e.g. vector inputs) are always 1 "
                           "and are left out."))
    return figs


def make_all_plots(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                   out: str | Path) -> list[Figure]:
    """Every figure of the comparison, written under ``out``."""
    out = Path(out)
    figs: list[Figure | None] = [
        plot_accuracy(rows, out),
        plot_cost(rows, out, field="params", xlabel="parameters", name="cost_params",
                  title="Accuracy vs parameter count"),
        plot_cost(rows, out, field="train_time_s", xlabel="training time (s)", name="cost_train_time",
                  title="Accuracy vs training time"),
        plot_noise(rows, out),
        plot_missing(rows, out),
    ]
    figs += plot_gates(records, out)
    figs += plot_attention(records, out)
    return [f for f in figs if f is not None]
