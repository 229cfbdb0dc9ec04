"""Running a comparison end to end: grid, resume, execution, results, plots, report, table."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mmfuse.bench.config import BenchConfig, BenchConfigError
from mmfuse.bench.console import default_console, make_progress, print_summary
from mmfuse.bench.executors import Executor, RunFn, available_cpus, make_executor
from mmfuse.bench.grid import BenchRun, build_grid
from mmfuse.bench.store import ResultsStore
from mmfuse.bench.summary import SummaryRow, summarize
from mmfuse.bench.verdict import DatasetVerdict, Skipped, diagnose, verdicts
from mmfuse.errors import DiskFullError
from mmfuse.experiment.results import RunRecord
from mmfuse.experiment.specs import DataSpec

__all__ = ["BenchOutcome", "environment", "resolve_fusions", "run_bench", "write_outputs"]

_PACKAGES = ("mmfuse", "torch", "numpy", "lightning", "torchmetrics", "scipy", "pandas", "matplotlib",
             "rich", "pyyaml", "safetensors", "ray")


@dataclass
class BenchOutcome:
    """What :func:`run_bench` did.

    Attributes:
        out: the results folder.
        runs: every run of the grid.
        records: the latest record of each run, in grid order.
        summary: one row per dataset x model x variant (see :mod:`mmfuse.bench.summary`).
        ran: runs executed by this call; skipped: runs already finished in ``out``.
        trained: models trained by this call (the others were loaded from ``out/models``).
        failed: runs whose latest record is a failure.
        files: written files by kind (``json``, ``csv``, ``report``, ``plots``).
        wall_s: wall time of this call.
    """

    out: Path
    runs: list[BenchRun]
    records: list[RunRecord]
    summary: list[SummaryRow]
    ran: int
    skipped: int
    trained: int
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


def _dataset_modalities(data: DataSpec) -> list[str]:
    from mmfuse.experiment import load_data

    return list(load_data(data).modalities)


def _dataset_task(data: DataSpec) -> str:
    from mmfuse.experiment import load_data

    return str(load_data(data).task)


def _dataset_groups(data: DataSpec) -> Any:
    from mmfuse.bench.groups import choose_groups
    from mmfuse.experiment import load_data

    splits = load_data(data)
    return choose_groups(splits.specs, splits.info)


def _check_fusion_options(config: BenchConfig, names: Sequence[str]) -> None:
    """Every strategy named in ``fusion_options`` is compared, and every option exists."""
    from mmfuse.experiment.config import check_fusion_options

    for name, options in config.fusion_options.items():
        if name not in names:
            raise BenchConfigError(f"fusion_options: {name!r} is not among the strategies compared ({names})")
        check_fusion_options(name, options)
    if config.tune is not None:  # a space given for a strategy that is not compared would be ignored
        for key in config.tune.space:
            strategy, dot, _ = key.partition(".")
            if dot and strategy not in names:
                raise BenchConfigError(f"tune: space: {key}: {strategy!r} is not among the strategies compared "
                                       f"({names})")


def _check_metric(config: BenchConfig, runs: Sequence[Any]) -> None:
    """A ``metric`` that one of the datasets' tasks does not have: an error naming the dataset and
    the metrics its task has, before the first run."""
    if config.measure.metric in (None, "auto"):
        return
    from mmfuse.errors import ConfigError
    from mmfuse.experiment import load_data
    from mmfuse.training.metrics import choose_metric

    for data in {r.spec.data.display: r.spec.data for r in runs}.values():
        try:
            choose_metric(config.measure.metric, load_data(data).task)
        except ConfigError as exc:
            raise BenchConfigError(f"dataset {data.display!r}: {exc}") from exc


def _check_folder(store: ResultsStore, config: BenchConfig) -> None:
    """Refuse (without ``force``) a folder holding a comparison of other datasets."""
    store.check_writable()
    previous = store.root / "results.json"
    if config.force or not previous.is_file():
        return
    try:
        meta = json.loads(previous.read_text())["meta"]
        before = list(meta["config"]["datasets"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if sorted(before) != sorted(config.datasets):
        raise BenchConfigError(
            f"results folder {str(store.root)!r} holds a comparison of {before}, not {config.datasets}: choose "
            "another --out, or pass --force to write this comparison there")


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (``timeout``, a job scheduler) unwinds like Ctrl-C, so workers are stopped."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_bench(config: BenchConfig, **kwargs: Any) -> BenchOutcome:
    """Run the comparison described by ``config`` (see :func:`_run_bench`), holding its results
    folder for the whole run: a second bench into the same folder is refused, not raced."""
    store = ResultsStore(config.out_dir)
    store.hold()
    try:
        return _run_bench(config, **kwargs)
    finally:
        store.release()


def _run_bench(
    config: BenchConfig,
    *,
    run_fn: RunFn | None = None,
    executor: Executor | None = None,
    modalities_of: Callable[[DataSpec], Sequence[str]] | None = None,
    fusions: Sequence[str] | None = None,
    console: Console | None = None,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> BenchOutcome:
    """Run the comparison described by ``config`` and write its results, plots and report.

    Runs already measured in the results folder (same measurement key) are skipped;
    failed ones are run again; a run whose model is saved in ``out/models`` (same
    training key) is measured from it without training. Each record is appended to
    ``runs.jsonl`` as its run ends.

    Args:
        config: the settings.
        run_fn: ``BenchRun -> RunResult``; default :func:`mmfuse.bench.run.run_one`.
            Must be a module-level function for the process-pool and Ray executors.
        executor: default from ``config.executor`` / ``config.jobs``.
        modalities_of: ``DataSpec -> modality names`` for the unimodal baselines;
            default loads the dataset.
        fusions: strategies to compare; default :func:`resolve_fusions`.
        console: where the progress bar and the table go (default: stdout).
        progress: show the progress bar.
        argv: the command line, recorded in the results.
    """
    t0 = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    console = console or default_console()
    if run_fn is None:
        from mmfuse.bench.run import run_one

        run_fn = run_one
    names = list(fusions) if fusions is not None else resolve_fusions(config)
    _check_fusion_options(config, names)
    store = ResultsStore(config.out_dir)
    _check_folder(store, config)
    skipped: list[Skipped] = []
    runs = build_grid(config, fusions=names, modalities_of=modalities_of or _dataset_modalities,
                      models_dir=str(store.models), groups_of=_dataset_groups, skipped=skipped,
                      task_of=_dataset_task)
    if not runs:
        raise BenchConfigError("the grid is empty: no strategy and no unimodal baseline to run")
    _check_metric(config, runs)

    finished = store.finished()
    if (note := store.other_versions_note()) is not None:
        console.print(f"[yellow]note[/]: {escape(note)}", soft_wrap=True)  # one line, whatever the width
    todo = [r for r in runs if r.key not in finished]
    executor = executor or make_executor(config.executor, jobs=config.jobs, ray_address=config.ray_address)
    console.print(f"[bold]mmfuse bench[/]: {len(runs)} runs ({len(runs) - len(todo)} already done in "
                  f"{escape(str(store.root))}), {len(names)} strategies, executor {executor.name}"
                  + (f" x {config.jobs} jobs" if executor.name == "local" else ""))

    # which code produced each record: a resumed folder may mix runs of several versions
    env = environment()
    code = {"mmfuse": env["versions"]["mmfuse"], "git_commit": env["git_commit"],
            "git_dirty_src": env["git_dirty_src"]}
    # the interaction diagnoses run in a thread of this process while the grid runs elsewhere
    pending_diagnoses: dict[str, Any] = {}
    diag_pool = None
    if config.diagnose:
        from concurrent.futures import ThreadPoolExecutor

        diag_pool = ThreadPoolExecutor(1, thread_name_prefix="mmfuse-diagnose")
        for data in {r.spec.data.display: r.spec.data for r in runs}.values():
            pending_diagnoses[data.display] = diag_pool.submit(diagnose, data, store.root / "diagnosis")
    n_trained = 0
    try:
        n_trained = _execute(executor, run_fn, todo, store, code, console, progress)
    except BaseException as exc:
        if diag_pool is not None:  # interrupted: do not wait for the diagnoses not yet started
            diag_pool.shutdown(wait=False, cancel_futures=True)
        _bench_disk_full(exc, store)
        raise
    tuning: dict[str, Any] | None = None
    default_runs = runs
    if config.tune is not None:
        try:
            runs, tuning, ran, trained = _tune(config, runs, executor, run_fn, store, code, console, progress)
        except BaseException as exc:
            if diag_pool is not None:
                diag_pool.shutdown(wait=False, cancel_futures=True)
            _bench_disk_full(exc, store)
            raise
        todo = [*todo, *ran]
        n_trained += trained

    latest = store.latest(r.key for r in runs)
    records = [latest[r.key] for r in runs if r.key in latest]
    n_runs = len({r.key for r in default_runs} | {r.key for r in runs})  # the defaults' and the tuned ones
    rows = summarize(records)
    diagnoses: dict[str, Any] = {}
    for label, fut in pending_diagnoses.items():
        try:
            diagnoses[label] = fut.result()
        except Exception as exc:  # noqa: BLE001 - a diagnosis that fails is said, the rest goes on
            console.print(f"[yellow]no interaction diagnosis for {escape(label)}: {type(exc).__name__}: "
                          f"{escape(str(exc))}")
    if diag_pool is not None:
        diag_pool.shutdown()
    found = verdicts(records, rows, diagnoses=diagnoses, skipped=skipped)
    tuning_meta: dict[str, Any] | None = None
    if tuning is not None:  # the defaults' own comparison, to say what tuning changed
        from mmfuse.bench.tuning import tuning_summary

        latest_default = store.latest(r.key for r in default_runs)
        default_records = [latest_default[r.key] for r in default_runs if r.key in latest_default]
        default_rows = summarize(default_records)
        default_found = verdicts(default_records, default_rows, diagnoses=diagnoses, skipped=skipped)
        found = _say_tuned(found, tuning["budget"])
        tuning_meta = {"config": tuning["config"],
                       **tuning_summary(tuning["results"], default_rows, rows, default_found, found,
                                        tuning["budget"])}
    schemas: dict[str, str] = {}
    for data in {r.spec.data.display: r.spec.data for r in runs}.values():
        if data.name == "table":  # a user's table: the report says which file and how it was read
            from mmfuse.experiment import load_data

            schema = load_data(data).info.get("schema")
            if schema is not None and hasattr(schema, "render"):
                schemas[data.display] = schema.render()
    versions: list[dict[str, Any]] = []
    for r in records:
        if r.code is not None and r.code not in versions:
            versions.append(r.code)
    meta = {
        "config": config.to_json(),
        "out": str(store.root),
        "fusions": names,
        "command": list(argv) if argv is not None else sys.argv,
        "executor": executor.name,
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs_total": n_runs,
        "runs_executed_now": len(todo),
        "models_trained_now": n_trained,
        "runs_skipped": n_runs - len(todo),
        "memory_note": "memory_mb: the model's own memory for one training step: parameters, gradients and "
                       "AdamW's two moments (4 x parameter bytes) plus the activations autograd saves for one "
                       "training batch; not the process's memory.",
        "throughput_note": "throughput_sps: test samples per second of the trained model's forward pass, "
                           "after one warm-up batch, torch threads per run as recorded.",
        "code_versions": versions,
        "verdicts": {k: v.to_json() for k, v in found.items()},
        "schemas": schemas,
        **env,
    }
    if tuning_meta is not None:
        meta["tuning"] = tuning_meta
    files = write_outputs(config, rows, records, meta, found,
                          tuning_results=tuning["results"] if tuning is not None else None)
    n_failed = sum(1 for r in records if not r.ok)
    print_summary(console, rows, found, where=" and ".join(
        str(files[k]) for k in ("csv", "report") if files.get(k)))
    if tuning_meta is not None:
        for ds, block in tuning_meta["datasets"].items():
            console.print(f"[bold]tuning[/] {escape(ds)}: {escape(block['sentence'])}")
    wall = time.perf_counter() - t0
    console.print(f"{n_runs} runs ({len(todo)} now, of which {n_trained} trained; "
                  f"{n_runs - len(todo)} already done), {n_failed} failed, {wall:.1f}s. "
                  f"Results: {escape(str(files['json']))}, {escape(str(files['csv']))}"
                  + (f"; report: {escape(str(files['report']))}" if files.get("report") else ""))
    if (len({r.dataset for r in records if r.ok}) == 1 and all(r.spec.data.name == "table" for r in records if r.ok)
            and any(v.recommendation for v in found.values())):
        print(f"use the recommended model: mmfuse predict {store.root} --data NEW.csv --out predictions.csv")
    return BenchOutcome(out=store.root, runs=runs, records=records, summary=rows, ran=len(todo),
                        skipped=n_runs - len(todo), trained=n_trained, failed=n_failed, files=files, wall_s=wall)


def _ranking_metric(config: BenchConfig, spec: Any) -> tuple[str, bool]:
    """The metric that ranks ``spec``'s dataset (``--metric``, else the task's default, macro-F1 on
    an imbalanced target): what tuning optimises on validation, as the comparison ranks on test."""
    from mmfuse.experiment import load_data
    from mmfuse.training.metrics import choose_metric

    splits = load_data(spec.data)
    return choose_metric(config.measure.metric, splits.task, getattr(splits.train, "labels", None))


def _bench_disk_full(exc: BaseException, store: ResultsStore) -> None:
    """A full disk under the bench's folder is reported as the bench's folder (not a model's
    half-written folder, which was removed)."""
    if isinstance(exc, DiskFullError) and Path(exc.folder).is_relative_to(store.root):
        raise DiskFullError(store.root) from exc


def _execute(executor: Executor, run_fn: RunFn, todo: Sequence[BenchRun], store: ResultsStore,
             code: Mapping[str, Any], console: Console, progress: bool) -> int:
    """Run ``todo``, appending each record to the store as it ends; returns how many
    models were trained."""
    n_failed_now = n_trained = 0
    if not todo:
        return 0
    prog = make_progress(console) if progress else None
    task = prog.add_task("", total=len(todo), failed=0) if prog else None
    if prog:
        prog.start()
    try:
        with _sigterm_as_exit():
            for record in executor.map_unordered(run_fn, todo):
                record = record.replace(code=dict(code))
                store.append(record)
                if record.training is not None and record.training.trained_now:
                    n_trained += 1
                if not record.ok:
                    n_failed_now += 1
                    console.print(f"[red]failed[/] {escape(record.label)} on {escape(record.dataset)} "
                                  f"seed {record.spec.seed}: {escape(str(record.error))}")
                if prog is not None and task is not None:
                    prog.update(task, advance=1, failed=n_failed_now,
                                description=escape(f"{record.label} · {record.dataset}"))
    finally:
        if prog:
            prog.stop()
    return n_trained


def _tune(config: BenchConfig, runs: list[BenchRun], executor: Executor, run_fn: RunFn, store: ResultsStore,
          code: Mapping[str, Any], console: Console, progress: bool
          ) -> tuple[list[BenchRun], dict[str, Any], list[BenchRun], int]:
    """Tune every model of ``runs`` (see :mod:`mmfuse.bench.tune`), then run the best
    configurations over the same seeds and variants. Returns the tuned runs, what the
    report needs to compare them with the defaults, the runs executed, and the models trained."""
    from mmfuse.bench.tune import trials_csv, tune_grid, tuned_runs
    from mmfuse.io import atomic_write

    cfg = config.tune
    assert cfg is not None  # the caller's condition
    budget = cfg.budget(config.train.epochs)
    console.print(f"[bold]tuning[/]: every model of every dataset, {escape(budget)}, storage "
                  f"{escape(cfg.storage or 'in memory')}")

    def on_trial(name: str, number: int, outcome: Any) -> None:
        said = ("pruned" if outcome.pruned else f"failed ({outcome.error})" if outcome.error
                else f"{outcome.value:.4f}")
        console.print(f"  {escape(name)} trial {number}: {escape(said)} ({outcome.seconds:.1f}s)")

    with _sigterm_as_exit():
        results = tune_grid(runs, cfg, executor=executor.name, out=store.root,
                            metric_of=lambda spec: _ranking_metric(config, spec),
                            on_trial=on_trial if progress else None, ray_address=config.ray_address,
                            ray_cpus=config.jobs)
    folder = store.root / "tuning"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "trials.csv", trials_csv(results))
    atomic_write(folder / "studies.json", json.dumps([r.to_json() for r in results], indent=2, default=str))
    tuned = tuned_runs(runs, results)
    finished = store.finished()
    todo = [r for r in tuned if r.key not in finished]
    console.print(f"retraining the tuned models: {len(todo)} runs ({len(tuned) - len(todo)} already done, or the "
                  "defaults were best)")
    trained = _execute(executor, run_fn, todo, store, code, console, progress)
    return tuned, {"config": cfg.to_json(), "budget": budget, "results": results}, todo, trained


def _say_tuned(found: Mapping[str, DatasetVerdict], budget: str) -> dict[str, DatasetVerdict]:
    """Each recommendation says it was made on tuned models, and with which budget."""
    import dataclasses

    out: dict[str, DatasetVerdict] = {}
    for ds, v in found.items():
        rec = v.recommendation
        if rec is not None:
            rec = dataclasses.replace(rec, sentence=f"{rec.sentence.rstrip()} (tuned: {budget})")
        out[ds] = dataclasses.replace(v, recommendation=rec)
    return out


def write_outputs(config: BenchConfig, rows: Sequence[SummaryRow], records: Sequence[RunRecord],
                  meta: dict[str, Any], found: Mapping[str, DatasetVerdict] | None = None, *,
                  tuning_results: Sequence[Any] | None = None) -> dict[str, Any]:
    """Write ``results.json``, ``results.csv`` and, as configured, the plots (PNG) and the report.

    Figures are drawn in memory; PNG files are written only with ``plots`` on (and the
    folder then holds exactly this comparison's figures).
    """
    store = ResultsStore(config.out_dir)
    files: dict[str, Any] = {
        "json": store.write_json(records, meta, rows),
        "csv": store.write_csv(records),
    }
    if config.plots or config.report:
        from mmfuse.bench.plots import make_all_plots, write_plots

        figures = make_all_plots(rows, records, found or {})
        if tuning_results:
            from mmfuse.bench.tuning import plot_best_so_far, plot_importances

            figures += plot_best_so_far(tuning_results)
            importances = plot_importances(tuning_results)
            figures += [importances] if importances is not None else []
        if config.plots:
            files["plots"] = write_plots(figures, store.root / "plots")
        if config.report:
            from mmfuse.bench.report import write_report

            files["report"] = write_report(store.root / "report.html", rows, records, figures, meta, found or {})
    return files
