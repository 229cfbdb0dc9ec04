"""Side-by-side comparison of fusion strategies: a grid of runs, their results, plots and a report.

``run_bench(load_config(...))`` is what ``mmfuse bench`` calls. The pieces are usable
on their own: :func:`build_grid` (what to run: :class:`BenchRun` entries, each an
:class:`~mmfuse.experiment.ExperimentSpec` with a :class:`~mmfuse.experiment.MeasureConfig`),
:func:`run_one` (train through :func:`mmfuse.experiment.train_one`, or load the saved
model, then measure), an :class:`Executor` (where: in-process, a local process pool,
Ray), :class:`ResultsStore` (the resumable results folder of typed
:class:`~mmfuse.experiment.RunRecord`), :func:`summarize` (mean/std over seeds, gain over
the best unimodal baseline), :func:`make_all_plots` and :func:`write_report`.
"""

from mmfuse.bench.config import BenchConfig, BenchConfigError, load_config
from mmfuse.bench.core import BenchOutcome, environment, resolve_fusions, run_bench, write_outputs
from mmfuse.bench.executors import (
    Executor,
    ProcessPoolExecutor,
    RayExecutor,
    SerialExecutor,
    guarded_run,
    make_executor,
)
from mmfuse.bench.grid import BenchRun, build_grid
from mmfuse.bench.plots import make_all_plots, write_plots
from mmfuse.bench.report import write_report
from mmfuse.bench.run import RunResult, run_one
from mmfuse.bench.store import ResultsStore
from mmfuse.bench.summary import SummaryRow, summarize

__all__ = [
    "BenchConfig",
    "BenchConfigError",
    "BenchOutcome",
    "Executor",
    "ProcessPoolExecutor",
    "RayExecutor",
    "ResultsStore",
    "BenchRun",
    "RunResult",
    "SerialExecutor",
    "SummaryRow",
    "build_grid",
    "environment",
    "guarded_run",
    "load_config",
    "make_all_plots",
    "make_executor",
    "resolve_fusions",
    "run_one",
    "run_bench",
    "summarize",
    "write_outputs",
    "write_plots",
    "write_report",
]
