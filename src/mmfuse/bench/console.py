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
from mmfuse.bench.summary import SummaryRow, datasets_of
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


def summary_tables(rows: Sequence[SummaryRow]) -> list[Table]:
    """One table per dataset: standard-training rows, with the modality-dropout variant as extra columns."""
    tables = []
    for ds in datasets_of(rows):
        rs = [r for r in rows if r.dataset == ds]
        mdrop = {r.model: r for r in rs if r.variant == "modality_dropout"}
        std = [r for r in rs if r.standard]
        sign = 1 if (std and std[0].higher_is_better) else -1
        std.sort(key=lambda r: (not r.unimodal, -sign * (r.score_mean if r.score_mean is not None else -sign * 1e9)))
        best = next((r.best_unimodal for r in std if r.best_unimodal), None)
        metric = std[0].metric if std else "score"
        t = Table(title=f"[bold]{escape(ds)}[/]  ({escape(metric)}; * best unimodal: {escape(best or 'n/a')}; "
                  "gain = better than it by)",
                  title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        top = max((float(s) for r in std for s in r.noise_mean), default=None)
        for col in ("model", f"{metric[:8]} ± sd", "gain", "params", "train s", "samp/s", "MiB",
                    "worst miss", "noise " + (f"{top:g}" if top is not None else "max"), "mdrop",
                    "mdrop miss"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
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
            score = "—" if r.score_mean is None else (
                f"{r.score_mean:.3f}" + (f"±{r.score_std:.3f}" if r.score_std is not None else ""))
            g = r.gain
            gain = "—" if g is None else (f"[red]{g:+.3f}[/]" if g < -0.0005 else
                                          f"[green]{g:+.3f}[/]" if g > 0.0005 else f"{g:+.3f}")
            noise_max = r.noise_mean[max(r.noise_mean, key=float)] if r.noise_mean else None
            md = mdrop.get(r.model)
            t.add_row(name, score, gain, fmt_si(r.params), fmt_num(r.train_time_s, 1),
                      fmt_si(r.throughput_sps), fmt_num(r.memory_mb, 1), fmt_num(r.missing_worst),
                      fmt_num(noise_max), fmt_num(md.score_mean) if md else "",
                      fmt_num(md.missing_worst) if md else "")
        tables.append(t)
    return tables


def print_summary(console: Console, rows: Sequence[SummaryRow],
                  found: Mapping[str, DatasetVerdict] | None = None) -> None:
    """The tables, each followed by its dataset's recommendation."""
    found = found or {}
    for ds, t in zip(datasets_of(rows), summary_tables(rows), strict=True):
        console.print(t)
        if ds in found and found[ds].sentences():
            console.print(f"[bold]→ {escape(ds)}:[/] {escape(found[ds].sentences())}", highlight=False)
        console.print()

