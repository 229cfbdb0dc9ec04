"""Settings Lightning would accept and then fail on, refused before it starts.

Shape legend: none.

:func:`check_devices`: an accelerator or device count this machine does not have;
:func:`check_launch`: an unknown strategy, or several nodes without a multi-node
launcher (each process would wait for the others forever).
"""

from __future__ import annotations

import os

import torch

from mmfuse.training.config import TrainConfig, TrainConfigError

__all__ = ["check_devices", "check_launch"]


def check_devices(cfg: TrainConfig) -> None:
    """Refuse (:class:`TrainConfigError`) an accelerator or device count this machine
    does not have, before Lightning starts."""
    acc = cfg.accelerator
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise TrainConfigError(
                f"accelerator: {acc!r} asked for, but torch {torch.__version__} sees no CUDA device "
                f"(use accelerator=cpu or auto)"
            )
        have, what = torch.cuda.device_count(), "CUDA devices"
    elif acc == "mps":
        if not torch.backends.mps.is_available():
            raise TrainConfigError("accelerator: 'mps' asked for, but torch sees no Apple MPS device "
                                   "(use accelerator=cpu or auto)")
        have, what = 1, "MPS devices"
    elif acc == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            raise TrainConfigError("accelerator: 'tpu' asked for, but torch_xla is not installed "
                                   "(use accelerator=cpu or auto)")
        return
    else:
        return  # cpu: any count of processes; auto: Lightning picks what exists
    d = cfg.devices
    wanted = len(d) if isinstance(d, (list, tuple)) else (int(d) if isinstance(d, int) or str(d).isdigit() else 0)
    if wanted > have:
        raise TrainConfigError(f"devices: {d!r} asked for, but this machine has {have} {what}")


#: environment variables a launcher (torchrun, SLURM, LSF, Lightning's own) sets on each node
_CLUSTER_ENV = ("MASTER_ADDR", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID",
                "TORCHELASTIC_RUN_ID", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def check_launch(cfg: TrainConfig) -> None:
    """Settings Lightning would accept and then fail on, or wait on forever: refused with the reason."""
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if cfg.strategy not in strategies:
        raise TrainConfigError(f"strategy: expected one of {strategies}, got {cfg.strategy!r}")
    if cfg.num_nodes > 1 and not any(os.environ.get(k) for k in _CLUSTER_ENV):
        raise TrainConfigError(
            f"num_nodes={cfg.num_nodes}: this process was not started by a multi-node launcher (none of "
            f"{', '.join(_CLUSTER_ENV[:4])}, ... is set), so it would wait for the other nodes forever: start one "
            "process per node with torchrun or your scheduler (SLURM), or use num_nodes=1")
