"""Where the runs of a grid execute: in this process, in a local process pool, or on Ray.

Every executor honours one small protocol, :class:`Executor`: it takes a run function
(``BenchRun -> RunResult``, a module-level function so that it pickles by name) and
the runs, and yields one :class:`~mmfuse.experiment.RunRecord` per run as each ends,
in completion order. Runs never raise through an executor: :func:`guarded_run` turns
an exception into a ``"failed"`` record with its error and traceback, and a worker
process that dies (segfault, out of memory) becomes a failed record too, so the rest
of the grid completes. The one exception is a full device
(:class:`~mmfuse.errors.DiskFullError`): it stops the grid, since every run after it
would fail the same way.

Local worker processes die with the process that started them: on Linux each asks
the kernel for ``SIGKILL`` when its parent dies (``PR_SET_PDEATHSIG``), so killing
``mmfuse bench`` (even with ``SIGKILL``) leaves no worker behind, and the parent
turns ``SIGTERM`` into a clean shutdown of its pool.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import ProcessPoolExecutor as _Pool
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmfuse.bench.grid import BenchRun
from mmfuse.errors import ConfigError, DiskFullError
from mmfuse.experiment.results import RunRecord
from mmfuse.io import is_disk_full

__all__ = [
    "Executor",
    "ProcessPoolExecutor",
    "RayExecutor",
    "RunFn",
    "SerialExecutor",
    "available_cpus",
    "failed_record",
    "guarded_run",
    "make_executor",
    "prepare_worker",
]

RunFn = Callable[[BenchRun], Any]


@runtime_checkable
class Executor(Protocol):
    """Runs a grid; yields one record per spec as each run ends."""

    name: str

    def map_unordered(self, run_fn: RunFn, specs: Sequence[BenchRun]) -> Iterator[RunRecord]: ...


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGKILL when its parent dies (no-op elsewhere); if the
    parent ``parent`` died already (while this process was starting), exit now.

    SIGKILL, not SIGTERM: a run inside Lightning's ``fit`` has Lightning's SIGTERM handler
    installed, which only records the signal, so a worker would finish its run and then
    wait forever on its dead parent's pipe."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # re-parented: the process that started this one is gone
        os._exit(1)


def prepare_worker(threads: int | None, *, parent: int | None = None) -> None:
    """Per-run setup: torch threads (cores / jobs) and quiet training logs; in a worker
    process (``parent`` given), also die with the parent."""
    if parent is not None:
        _die_with_parent(parent)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", module=r"torch\.utils\.data(\..*)?")


def _record(run: BenchRun, status: str, *, result: Any = None, error: str | None = None,
            tb: str | None = None, started: float, started_at: str) -> RunRecord:
    return RunRecord(
        spec=run.spec,
        measure=run.measure,
        status=status,
        training=getattr(result, "training", None),
        measurement=getattr(result, "measurement", None),
        error=error,
        traceback=tb,
        started_at=started_at,
        finished_at=_now(),
        wall_s=round(time.perf_counter() - started, 3),
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def guarded_run(run_fn: RunFn, run: BenchRun, threads: int | None = None) -> RunRecord:
    """Run one grid entry; always returns a record (``status`` ``"ok"`` or ``"failed"``), never raises."""
    from mmfuse.bench.run import RunResult

    started, started_at = time.perf_counter(), _now()
    try:
        prepare_worker(threads)
        result = run_fn(run)
        if not isinstance(result, RunResult):
            raise TypeError(f"run function {getattr(run_fn, '__name__', run_fn)!r} returned "
                            f"{type(result).__name__}, expected a RunResult")
        return _record(run, "ok", result=result, started=started, started_at=started_at)
    except Exception as exc:  # noqa: BLE001 - a failed run is data, the grid goes on
        if is_disk_full(exc):  # ... but not when the disk is full: every run after it would fail too
            if isinstance(exc, DiskFullError):
                raise
            where = getattr(exc, "filename", None)
            raise DiskFullError(Path(where).parent if where else (run.models_dir or os.getcwd())) from exc
        return _record(run, "failed", error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc(),
                       started=started, started_at=started_at)


def failed_record(run: BenchRun, error: str, tb: str | None = None) -> RunRecord:
    """The record of a run that produced none itself (its worker died)."""
    return _record(run, "failed", error=error, tb=tb, started=time.perf_counter(), started_at=_now())


def _kill_pool(pool: _Pool) -> None:
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.is_alive():
            proc.kill()  # not terminate(): Lightning's SIGTERM handler only records the signal


def _init_worker(threads: int | None, parent: int) -> None:
    prepare_worker(threads, parent=parent)


class SerialExecutor:
    """Runs every spec in this process, one after the other (debugging, ``--jobs 1``)."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map_unordered(self, run_fn: RunFn, specs: Sequence[BenchRun]) -> Iterator[RunRecord]:
        for spec in specs:
            yield guarded_run(run_fn, spec, self.threads)


class ProcessPoolExecutor:
    """Runs specs in ``jobs`` local worker processes (spawn start method).

    Each worker uses ``threads`` torch threads (default: available cores / jobs) and
    keeps its imports and loaded datasets between runs. If a worker dies, every run
    that was not finished is re-run one at a time in a one-process pool (replaced
    after each death), so only the run that kills its process is recorded as failed.
    """

    name = "local"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs: expected >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads if threads is not None else max(1, available_cpus() // jobs)

    def _pool(self, workers: int) -> _Pool:
        import multiprocessing as mp

        return _Pool(max_workers=workers, mp_context=mp.get_context("spawn"),
                     initializer=_init_worker, initargs=(self.threads, os.getpid()))

    def map_unordered(self, run_fn: RunFn, specs: Sequence[BenchRun]) -> Iterator[RunRecord]:
        if not specs:
            return
        unfinished: list[BenchRun] = []
        pool = self._pool(min(self.jobs, len(specs)))
        try:
            futures: dict[Future[RunRecord], BenchRun] = {
                pool.submit(guarded_run, run_fn, spec, self.threads): spec for spec in specs
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        unfinished.append(futures[fut])
                    except DiskFullError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        yield failed_record(futures[fut], f"{type(exc).__name__}: {exc}", traceback.format_exc())
        except BaseException:
            _kill_pool(pool)  # interrupted (SIGTERM, Ctrl-C): stop the workers now, not after their runs
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # a worker died: run the unfinished specs one at a time in a one-process pool, so a
        # spec that kills its process is known exactly; the pool is replaced after each death
        solo: _Pool | None = None
        try:
            for spec in unfinished:
                solo = solo or self._pool(1)
                try:
                    yield solo.submit(guarded_run, run_fn, spec, self.threads).result()
                except BrokenProcessPool as exc:
                    yield failed_record(spec, f"worker process died while running this spec ({exc})")
                    solo.shutdown(wait=True, cancel_futures=True)
                    solo = None
        finally:
            if solo is not None:
                solo.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs specs as Ray tasks: on a local Ray instance, or on a cluster at ``address``.

    Uses the Ray instance already initialised in this process if there is one; else
    ``ray.init(address=address or $RAY_ADDRESS)``, or a local instance when neither is
    set. Each task asks for ``num_cpus`` CPUs and uses as many torch threads.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int = 1, local_cpus: int | None = None) -> None:
        import ray  # noqa: F401  (fail early with ImportError when ray is missing)

        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.local_cpus = local_cpus

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.local_cpus, include_dashboard=False, log_to_driver=False)

    def map_unordered(self, run_fn: RunFn, specs: Sequence[BenchRun]) -> Iterator[RunRecord]:
        if not specs:
            return
        import ray

        self._init()
        task = ray.remote(num_cpus=self.num_cpus, max_retries=0)(guarded_run)
        refs = {task.remote(run_fn, spec, self.num_cpus): spec for spec in specs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield ray.get(ref)
                except DiskFullError:  # ray's error is an instance of its cause's class too
                    raise
                except Exception as exc:  # noqa: BLE001 - worker crash, node lost, ...
                    yield failed_record(refs[ref], f"ray task failed: {type(exc).__name__}: {exc}",
                                        traceback.format_exc())


def make_executor(kind: str, *, jobs: int = 1, ray_address: str | None = None) -> Executor:
    """The executor named ``kind`` (``local``, ``serial`` or ``ray``).

    ``local`` with ``jobs == 1`` runs in-process. ``ray`` without ray installed raises
    :class:`~mmfuse.errors.ConfigError` naming the extra to install.
    """
    if kind == "ray":
        try:
            return RayExecutor(ray_address, local_cpus=jobs if not (ray_address or os.environ.get("RAY_ADDRESS")) else None)
        except ImportError as exc:
            raise ConfigError(f"executor 'ray': ray is not installed ({exc}); pip install 'mmfuse[ray]'") from exc
    if kind == "serial" or (kind == "local" and jobs == 1):
        return SerialExecutor()
    if kind == "local":
        return ProcessPoolExecutor(jobs)
    raise ConfigError(f"executor: expected 'local', 'serial' or 'ray', got {kind!r}")
