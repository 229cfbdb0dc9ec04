"""Torch intra-op threads for small models on a CPU: how many, and set for a block of
work or for a DataLoader worker.

Shape legend: none. Lightning-free, so prediction uses the same rule as training
without importing the training engine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["THREADS_MIN_WORK", "auto_threads", "available_cpus", "idle_cpus", "one_thread_worker", "torch_threads"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def idle_cpus() -> int:
    """CPUs not busy with other work: the available CPUs less the 1-minute load
    average (which counts this process too, hence the +1), at least 1."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on a Unix
        return available_cpus()
    return int(max(1, min(available_cpus(), available_cpus() - round(load) + 1)))


#: multiply-adds of one training step (parameters x batch) per intra-op thread: below
#: it a second thread costs more than it gives on a CPU. Measured with
#: benchmarks/fit_threads.py (benchmarks/results/fit_threads_*.md).
THREADS_MIN_WORK = 2**26


def auto_threads(model: nn.Module, batch_size: int, *, cpus: int | None = None) -> int:
    """Torch intra-op threads for training ``model`` at ``batch_size`` on a CPU.

    The work of one step is taken as (parameters x batch), the multiply-adds of a
    forward pass through dense layers: one thread per :data:`THREADS_MIN_WORK` of it,
    at least 1 and at most ``cpus`` (default :func:`idle_cpus`: on a machine busy with
    other work, extra threads wait for each other and a step gets many times slower).
    The default models (a few 10^4 parameters at batch 128) get one thread.
    """
    cpus = idle_cpus() if cpus is None else cpus
    work = sum(p.numel() for p in model.parameters()) * batch_size
    return int(max(1, min(cpus, work // THREADS_MIN_WORK)))



@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch intra-op threads set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def one_thread_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: workers index tensors, one torch thread each,
    so that they and the training threads do not oversubscribe the CPUs."""
    torch.set_num_threads(1)
