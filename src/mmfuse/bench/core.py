"""Running a comparison end to end: grid, resume, execution, results, plots, report, table."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from mmfuse.bench.config import BenchConfig, BenchConfigError
from mmfuse.bench.console import default_console, make_progress, print_summary
from mmfuse.bench.executors import Executor, RunFn, available_cpus, make_executor
from mmfuse.bench.grid import RunSpec, build_grid
from mmfuse.bench.store import ResultsStore
from mmfuse.bench.summary import summarize

__all__ = ["BenchOutcome", "environment", "resolve_fusions", "run_bench", "write_outputs"]

_PACKAGES = ("mmfuse", "torch", "numpy", "lightning", "torchmetrics", "scipy", "pandas", "matplotlib",
             "rich", "pyyaml", "safetensors", "ray")


@dataclass
class BenchOutcome:
    """What :func:`run_bench` did.

    Attributes:
        out: the results folder.
        specs: every run of the grid.
        records: the latest record of each run, in grid order.
        summary: one row per dataset x model x variant (see :mod:`mmfuse.bench.summary`).
        ran: runs executed by this call; skipped: runs already finished in ``out``.
        failed: runs whose latest record is a failure.
        files: written files by kind (``json``, ``csv``, ``report``, ``plots``).
        wall_s: wall time of this call.
    """

    out: Path
    specs: list[RunSpec]
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    ran: int
    skipped: int
    failed: int
    files: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def _git_commit() -> tuple[str | None, bool | None]:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=5, check=True).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment() -> dict[str, Any]:
    """Package versions, platform and git commit, for reproducing a comparison."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    commit, dirty = _git_commit()
    return {
        "versions": versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": available_cpus(),
        "git_commit": commit,
        "git_dirty_src": dirty,
    }


def resolve_fusions(config: BenchConfig) -> list[str]:
    """The strategies to compare: ``config.fusions`` checked against the registry, or all of them."""
    from mmfuse.fusions import list_fusions

    registered = list_fusions()
    if config.fusions is None:
        return registered
    unknown = [f for f in config.fusions if f not in registered]
    if unknown:
        raise BenchConfigError(f"fusions: unknown strategy {unknown[0]!r}: expected names from {registered}")
    return list(dict.fromkeys(config.fusions))


def _dataset_modalities(dataset: str, options: Mapping[str, Any], config: BenchConfig) -> list[str]:
    from mmfuse.bench.run import _load

    return list(_load(dataset, json.dumps(dict(options), sort_keys=True), config.data_seed, config.data_root)
                .modalities)


def run_bench(
    config: BenchConfig,
    *,
    run_fn: RunFn | None = None,
    executor: Executor | None = None,
    modalities_of: Callable[[str, Mapping[str, Any]], Sequence[str]] | None = None,
    fusions: Sequence[str] | None = None,
    console: Console | None = None,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> BenchOutcome:
    """Run the comparison described by ``config`` and write its results, plots and report.

    Runs already finished in ``config.out`` (same settings hash) are skipped; failed
    ones are run again. Each record is appended to ``runs.jsonl`` as its run ends.

    Args:
        config: the settings.
        run_fn: ``RunSpec -> result dict``; default
            :func:`mmfuse.bench.run.train_and_evaluate`. Must be a module-level
            function for the process-pool and Ray executors.
        executor: default from ``config.executor`` / ``config.jobs``.
        modalities_of: ``(dataset, options) -> modality names`` for the unimodal
            baselines; default loads the dataset.
        fusions: strategies to compare; default :func:`resolve_fusions`.
        console: where the progress bar and the table go (default: stdout).
        progress: show the progress bar.
        argv: the command line, recorded in the results.
    """
    t0 = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    console = console or default_console()
    if run_fn is None:
        from mmfuse.bench.run import train_and_evaluate

        run_fn = train_and_evaluate
    names = list(fusions) if fusions is not None else resolve_fusions(config)
    if modalities_of is None:
        def modalities_of(ds: str, opts: Mapping[str, Any]) -> Sequence[str]:
            return _dataset_modalities(ds, opts, config)
    specs = build_grid(config, fusions=names, modalities_of=modalities_of)
    if not specs:
        raise BenchConfigError("the grid is empty: no strategy and no unimodal baseline to run")

    store = ResultsStore(config.out)
    finished = store.finished()
    todo = [s for s in specs if s.key not in finished]
    executor = executor or make_executor(config.executor, jobs=config.jobs, ray_address=config.ray_address)
    console.print(f"[bold]mmfuse bench[/]: {len(specs)} runs ({len(specs) - len(todo)} already done in "
                  f"{config.out}), {len(names)} strategies, executor {executor.name}"
                  + (f" x {config.jobs} jobs" if executor.name == "local" else ""))

    # which code produced each record: a resumed folder may mix runs of several versions
    env = environment()
    code = {"mmfuse": env["versions"].get("mmfuse"), "git_commit": env["git_commit"],
            "git_dirty_src": env["git_dirty_src"]}
    n_failed_now = 0
    if todo:
        prog = make_progress(console) if progress else None
        task = prog.add_task("", total=len(todo), failed=0) if prog else None
        if prog:
            prog.start()
        try:
            for record in executor.map_unordered(run_fn, todo):
                record["code"] = code
                store.append(record)
                if record["status"] != "ok":
                    n_failed_now += 1
                    console.print(f"[red]failed[/] {record['label']} on {record['spec']['dataset_label']} "
                                  f"seed {record['spec']['seed']}: {record.get('error')}")
                if prog is not None and task is not None:
                    prog.update(task, advance=1, failed=n_failed_now,
                                description=f"{record['label']} · {record['spec']['dataset_label']}")
        finally:
            if prog:
                prog.stop()

    latest = store.latest(s.key for s in specs)
    records = [latest[s.key] for s in specs if s.key in latest]
    rows = summarize(records)
    meta = {
        "config": config.to_dict(),
        "fusions": names,
        "command": list(argv) if argv is not None else sys.argv,
        "executor": executor.name,
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs_total": len(specs),
        "runs_executed_now": len(todo),
        "runs_skipped": len(specs) - len(todo),
        "peak_memory_note": "peak_rss_mb: resident-set high-water mark of the process running the run, "
                            "reset at its start (vmhwm_reset) or, where that is impossible, since the process "
                            "started (ru_maxrss_process); includes interpreter, torch and the dataset.",
        "throughput_note": "throughput_sps: test samples per second of the trained model's forward pass, "
                           "batches of 512, after one warm-up batch, torch threads per run as recorded.",
        "code_versions": sorted({json.dumps(r.get("code"), sort_keys=True) for r in records}),
        **env,
    }
    files = write_outputs(config, rows, records, meta)
    n_failed = sum(1 for r in records if r.get("status") != "ok")
    print_summary(console, rows)
    wall = time.perf_counter() - t0
    console.print(f"{len(records)} runs ({len(todo)} now, {len(specs) - len(todo)} resumed), "
                  f"{n_failed} failed, {wall:.1f}s. Results: {files['json']}, {files['csv']}"
                  + (f"; report: {files['report']}" if files.get("report") else ""))
    return BenchOutcome(out=Path(config.out), specs=specs, records=records, summary=rows, ran=len(todo),
                        skipped=len(specs) - len(todo), failed=n_failed, files=files, wall_s=wall)


def write_outputs(config: BenchConfig, rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                  meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.csv`` and, as configured, the plots and the report."""
    store = ResultsStore(config.out)
    files: dict[str, Any] = {
        "json": store.write_json(records, meta, rows),
        "csv": store.write_csv(records),
    }
    figures = []
    if config.plots or config.report:
        from mmfuse.bench.plots import make_all_plots

        figures = make_all_plots(rows, records, store.root / "plots")
        files["plots"] = [f.path for f in figures]
    if config.report:
        from mmfuse.bench.report import write_report

        files["report"] = write_report(store.root / "report.html", rows, records, figures, meta)
    return files
