"""Terminal output of a comparison: a progress bar while runs finish, then one rich table per dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
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


def summary_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    """One table per dataset: standard-training rows, with the modality-dropout variant as extra columns."""
    tables = []
    datasets: list[str] = []
    for r in rows:
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    for ds in datasets:
        rs = [r for r in rows if r["dataset"] == ds]
        mdrop = {r["model"]: r for r in rs if r["variant"] != "standard"}
        std = [r for r in rs if r["variant"] == "standard"]
        std.sort(key=lambda r: (not r["unimodal"], -(r["accuracy_mean"] if r["accuracy_mean"] is not None else -1)))
        best = next((r["best_unimodal"] for r in std if r.get("best_unimodal")), None)
        t = Table(title=f"[bold]{ds}[/]  (* best unimodal: {best or 'n/a'}; gain = accuracy - best unimodal)",
                  title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        top = max((float(s) for r in std for s in r["noise_mean"]), default=None)
        for col in ("model", "acc ± sd", "F1", "gain", "params", "train s", "samp/s", "MiB",
                    "worst miss", "noise " + (f"{top:g}" if top is not None else "max"), "mdrop acc",
                    "mdrop miss"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in std:
            if r["n_ok"] == 0:
                name = f"[red]{r['model']} ✗ failed[/]"
            elif r["n_failed"]:
                name = f"{r['model']} [red]({r['n_failed']} failed)[/]"
            else:
                name = r["model"]
            if r["unimodal"]:
                name = f"[dim]{name}[/]" if r["model"] != best else f"[bold]{name}[/] *"
            acc = "—" if r["accuracy_mean"] is None else (
                f"{r['accuracy_mean']:.3f}" + (f"±{r['accuracy_std']:.3f}" if r["accuracy_std"] is not None else ""))
            f1 = fmt_num(r["macro_f1_mean"])
            g = r["gain"]
            gain = "—" if g is None else (f"[red]{g:+.3f}[/]" if g < -0.0005 else
                                          f"[green]{g:+.3f}[/]" if g > 0.0005 else f"{g:+.3f}")
            noise_max = None
            if r["noise_mean"]:
                noise_max = r["noise_mean"][max(r["noise_mean"], key=float)]
            md = mdrop.get(r["model"])
            t.add_row(name, acc, f1, gain, fmt_si(r["params"]), fmt_num(r["train_time_s"], 1),
                      fmt_si(r["throughput_sps"]), fmt_num(r["peak_rss_mb"], 0), fmt_num(r["missing_worst"]),
                      fmt_num(noise_max), fmt_num(md["accuracy_mean"]) if md else "",
                      fmt_num(md["missing_worst"]) if md else "")
        tables.append(t)
    return tables


def print_summary(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    for t in summary_tables(rows):
        console.print(t)
        console.print()
