"""Terminal output of a comparison: a progress bar while runs finish, then one rich table per dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mmfuse.bench.report import fmt_num, fmt_si
from mmfuse.bench.summary import SummaryRow, datasets_of, other_metrics
from mmfuse.bench.verdict import DatasetVerdict

__all__ = ["default_console", "make_progress", "print_summary", "summary_tables"]


def default_console() -> Console:
    """Stdout; at least 150 columns wide when it is not a terminal (a log file), so tables are not cut."""
    console = Console()
    if not console.is_terminal and console.width < 150:
        console = Console(width=150)
    return console


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.description}"),
        console=console,
        transient=False,
    )


#: short headers of the metrics shown beside the ranking one
_SHORT = {"accuracy": "acc", "macro_f1": "F1", "auroc": "AUROC", "micro_f1": "µF1", "map": "mAP",
          "rmse": "RMSE", "mae": "MAE", "r2": "R²"}


def _columns(std: Sequence[SummaryRow], mdrop: Mapping[str, SummaryRow], best: str | None
             ) -> list[tuple[int, str, list[str]]]:
    """Every column of a dataset's table as ``(priority, header, cells)``; a lower priority is
    kept longer when the console is narrow."""
    metric = std[0].metric if std else "score"
    cols: list[tuple[int, str, list[str]]] = []
    names, scores, gains = [], [], []
    for r in std:
        model = escape(r.model)  # a user's modality name is in unimodal labels
        if r.n_ok == 0:
            name = f"[red]{model} ✗ failed[/]"
        elif r.n_failed:
            name = f"{model} [red]({r.n_failed} failed)[/]"
        else:
            name = model
        if r.unimodal:
            name = f"[dim]{name}[/]" if r.model != best else f"[bold]{name}[/] *"
        if r.majority_note():
            name += " [yellow]†[/]"
        names.append(name)
        scores.append("—" if r.score_mean is None else (
            f"{r.score_mean:.3f}" + (f"±{r.score_std:.3f}" if r.score_std is not None else "")))
        g = r.gain
        gains.append("—" if g is None else (f"[red]{g:+.3f}[/]" if g < -0.0005 else
                                            f"[green]{g:+.3f}[/]" if g > 0.0005 else f"{g:+.3f}"))
    cols.append((0, "model", names))
    cols.append((0, f"{metric} ± sd", scores))
    for i, k in enumerate(other_metrics(std)):
        cols.append((1 + i, _SHORT.get(k, k), [fmt_num(r.metrics.get(k)) for r in std]))
    cols.append((2, "gain", gains))
    cols.append((3, "train s", [fmt_num(r.train_time_s, 1) for r in std]))
    cols.append((4, "worst miss", [fmt_num(r.missing_worst) for r in std]))
    top = max((float(s) for r in std for s in r.noise_mean), default=None)
    cols.append((5, "noise " + (f"{top:g}" if top is not None else "max"),
                 [fmt_num(r.noise_mean[max(r.noise_mean, key=float)] if r.noise_mean else None) for r in std]))
    cols.append((6, "params", [fmt_si(r.params) for r in std]))
    cols.append((7, "samp/s", [fmt_si(r.throughput_sps) for r in std]))
    cols.append((8, "MiB", [fmt_num(r.memory_mb, 1) for r in std]))
    if mdrop:
        cols.append((9, "mdrop", [fmt_num(mdrop[r.model].score_mean) if r.model in mdrop else "" for r in std]))
        cols.append((10, "mdrop miss", [fmt_num(mdrop[r.model].missing_worst) if r.model in mdrop else ""
                                        for r in std]))
    return cols


def _table(title: str, cols: Sequence[tuple[int, str, list[str]]], model_width: int | None = None) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for _, header, _cells in cols:
        # model names wrap (at model_width) when the console is narrow; numbers and headers never do
        model = header == "model"
        t.add_column(header, justify="left" if model else "right", no_wrap=not model, overflow="fold",
                     max_width=model_width if model else None)
    for i in range(len(cols[0][2])):
        t.add_row(*(c[2][i] for c in cols))
    return t


#: the width a model name is wrapped to when the console is too narrow for it on one line
_MODEL_WRAP = 20


def _fitted(title: str, cols: list[tuple[int, str, list[str]]], width: int | None) -> tuple[Table, list[str]]:
    """The table with as many columns as fit in ``width`` (lowest priority dropped first, model
    names wrapped at :data:`_MODEL_WRAP`), and the headers left out."""
    dropped: list[str] = []
    if width is None:
        return _table(title, cols), dropped
    measure = Console(width=10_000)
    while True:
        t = _table(title, cols, model_width=_MODEL_WRAP)
        if measure.measure(t).maximum <= width or not any(c[0] > 1 for c in cols):
            return t, dropped
        last = max((c for c in cols if c[0] > 1), key=lambda c: c[0])
        cols = [c for c in cols if c is not last]
        dropped.insert(0, last[1])


def summary_tables(rows: Sequence[SummaryRow], *, width: int | None = None) -> list[Table]:
    """One table per dataset: standard-training rows, with the modality-dropout variant as extra
    columns, as many columns as fit in ``width`` (all without it), the ranking metric's column
    next to the task's other metrics (F1, AUROC); a model no better than the majority class
    marked †."""
    return [t for t, _ in _dataset_tables(rows, width)]


def _dataset_tables(rows: Sequence[SummaryRow], width: int | None) -> list[tuple[Table, list[str]]]:
    out = []
    for ds in datasets_of(rows):
        rs = [r for r in rows if r.dataset == ds]
        mdrop = {r.model: r for r in rs if r.variant == "modality_dropout"}
        std = [r for r in rs if r.standard]
        sign = 1 if (std and std[0].higher_is_better) else -1
        std.sort(key=lambda r: (not r.unimodal, -sign * (r.score_mean if r.score_mean is not None else -sign * 1e9)))
        best = next((r.best_unimodal for r in std if r.best_unimodal), None)
        metric = std[0].metric if std else "score"
        title = (f"[bold]{escape(ds)}[/]  (ranked by {escape(metric)}; * best unimodal: {escape(best or 'n/a')}; "
                 "gain = better than it by)")
        out.append(_fitted(title, _columns(std, mdrop, best), width))
    return out


def print_summary(console: Console, rows: Sequence[SummaryRow],
                  found: Mapping[str, DatasetVerdict] | None = None, *, where: str | None = None) -> None:
    """The tables, fitted to the console's width, each followed by its dataset's recommendation;
    ``where`` (the files that hold the full table) is said when columns were left out."""
    found = found or {}
    for ds, (t, dropped) in zip(datasets_of(rows), _dataset_tables(rows, console.width), strict=True):
        console.print(t)
        if dropped:
            console.print(f"[dim]not shown at {console.width} columns: {escape(', '.join(dropped))}"
                          + (f"; the full table: {escape(where)}" if where else "") + "[/]", highlight=False)
        std = [r for r in rows if r.dataset == ds and r.standard]
        marked = [f"† {r.model} {r.majority_note()}" for r in std if r.majority_note()]
        if marked and not (ds in found and found[ds].majority):
            console.print(escape("; ".join(marked)), highlight=False)
        if ds in found and found[ds].sentences():
            console.print(f"[bold]→ {escape(ds)}:[/] {escape(found[ds].sentences())}", highlight=False)
        console.print()
