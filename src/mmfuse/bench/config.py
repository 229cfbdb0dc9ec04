"""Settings of a comparison run: defaults, YAML files, command-line overrides.

A :class:`BenchConfig` says *what* to compare (datasets, strategies, seeds, training
variants) and *how* (epochs, sizes, executor, jobs, output folder). It is built from
defaults, then a YAML file (``--config``), then command-line flags, each later layer
overriding the earlier one. Unknown keys raise :class:`BenchConfigError` naming the
key and the allowed ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError

__all__ = [
    "DATASET_CHOICES",
    "DEFAULT_DATASET_OPTIONS",
    "SYNTHETIC_TASKS",
    "BenchConfig",
    "BenchConfigError",
    "load_config",
]

#: dataset names accepted by ``--dataset`` (``all`` expands to every real one plus synthetic)
DATASET_CHOICES = ("avdigits", "mfeat", "reviews", "synthetic")
#: the tasks of the synthetic interaction suite, each run as its own dataset
SYNTHETIC_TASKS = ("redundancy", "uniqueness", "synergy")

#: loader options used unless the config overrides them (sizes chosen so that the default
#: ``mmfuse bench`` finishes in a few minutes on a 2-core laptop)
DEFAULT_DATASET_OPTIONS: dict[str, dict[str, Any]] = {
    "synthetic": {"n": 2000},
}


class BenchConfigError(ConfigError):
    """A bad benchmark setting: unknown key, wrong type or value. Names the key."""


@dataclass
class BenchConfig:
    """Everything that decides a comparison grid and how it is run.

    Attributes:
        datasets: names from :data:`DATASET_CHOICES` (``"all"`` expands to all of them).
            ``synthetic`` runs each task of ``synthetic_tasks`` as its own dataset.
        fusions: strategy names; ``None`` means every registered one.
        unimodal: also train one unimodal baseline per modality (the best of them is
            the reference every strategy's gain is measured against).
        seeds: number of seeds (``0 .. seeds-1``) of the standard training variant.
        modality_dropout: rate of the modality-dropout training variant; ``0`` turns
            the variant off.
        dropout_seeds: seeds of the modality-dropout variant (fusions only; it is the
            costly part of the grid, hence fewer seeds by default).
        epochs, batch_size, lr, weight_decay, patience: training settings.
        hidden_dim: encoder and fusion width of every model.
        noise_scales: standard deviations of the Gaussian noise added to one modality
            at a time at test time.
        intermediates_samples: test samples whose fusion intermediates (gates,
            modality weights) are kept for the "what did it learn" plots; attention
            maps are kept for the first 4 of them.
        synthetic_tasks: tasks of the synthetic suite.
        data_seed: seed of the data splits (fixed across model seeds, so seeds measure
            training variance on one split).
        dataset_options: per dataset name, options for its loader (merged over
            :data:`DEFAULT_DATASET_OPTIONS`).
        fusion_options: per strategy name, keyword options for ``create_fusion``.
        executor: ``local`` (a process pool when ``jobs > 1``, else in-process),
            ``serial`` (always in-process) or ``ray``.
        jobs: runs at the same time (local executor).
        ray_address: Ray cluster address; ``None`` uses ``$RAY_ADDRESS`` or starts a
            local Ray instance.
        out: results folder; re-running into the same folder skips finished runs.
        data_root: where the real datasets live (``None``: ``$MMFUSE_DATA`` or the cache).
        plots, report: write the PNG plots and the HTML report.
    """

    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    fusions: list[str] | None = None
    unimodal: bool = True
    seeds: int = 3
    modality_dropout: float = 0.3
    dropout_seeds: int = 1
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4
    hidden_dim: int = 64
    noise_scales: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    intermediates_samples: int = 512
    synthetic_tasks: list[str] = field(default_factory=lambda: list(SYNTHETIC_TASKS))
    data_seed: int = 0
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str = "local"
    jobs: int = 2
    ray_address: str | None = None
    out: str = "bench-out"
    data_root: str | None = None
    plots: bool = True
    report: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`BenchConfigError` on the first bad setting."""
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        _check_list_of_str("datasets", self.datasets)
        expanded: list[str] = []
        for name in self.datasets:
            names = list(DATASET_CHOICES) if name == "all" else [name]
            for n in names:
                if n not in DATASET_CHOICES:
                    raise BenchConfigError(
                        f"datasets: unknown dataset {n!r}: expected one of {[*DATASET_CHOICES, 'all']}"
                    )
                if n not in expanded:
                    expanded.append(n)
        if not expanded:
            raise BenchConfigError("datasets: expected at least one dataset, got none")
        self.datasets = expanded
        if isinstance(self.fusions, str):
            self.fusions = [f for f in self.fusions.split(",") if f]
        if self.fusions is not None:
            _check_list_of_str("fusions", self.fusions)
        for key in ("seeds", "dropout_seeds", "epochs", "batch_size", "patience", "hidden_dim",
                    "intermediates_samples", "data_seed", "jobs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BenchConfigError(f"{key}: expected an int, got {value!r}")
            low = 0 if key in ("dropout_seeds", "intermediates_samples", "data_seed", "patience") else 1
            if value < low:
                raise BenchConfigError(f"{key}: expected an int >= {low}, got {value}")
        for key in ("lr", "weight_decay", "modality_dropout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BenchConfigError(f"{key}: expected a number, got {value!r}")
            setattr(self, key, float(value))
        if not 0.0 <= self.modality_dropout < 1.0:
            raise BenchConfigError(f"modality_dropout: expected a rate in [0, 1), got {self.modality_dropout}")
        if self.lr <= 0:
            raise BenchConfigError(f"lr: expected a positive number, got {self.lr}")
        if not isinstance(self.noise_scales, (list, tuple)) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in self.noise_scales
        ):
            raise BenchConfigError(f"noise_scales: expected a list of numbers >= 0, got {self.noise_scales!r}")
        self.noise_scales = sorted({float(s) for s in self.noise_scales})
        if isinstance(self.synthetic_tasks, str):
            self.synthetic_tasks = [t for t in self.synthetic_tasks.split(",") if t]
        _check_list_of_str("synthetic_tasks", self.synthetic_tasks)
        for task in self.synthetic_tasks:
            if task not in SYNTHETIC_TASKS:
                raise BenchConfigError(f"synthetic_tasks: unknown task {task!r}: expected one of {list(SYNTHETIC_TASKS)}")
        for key in ("dataset_options", "fusion_options"):
            value = getattr(self, key)
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()
            ):
                raise BenchConfigError(f"{key}: expected a mapping of name -> mapping of options, got {value!r}")
            setattr(self, key, {k: dict(v) for k, v in value.items()})
        for name in self.dataset_options:
            if name not in DATASET_CHOICES:
                raise BenchConfigError(f"dataset_options: unknown dataset {name!r}: expected one of {list(DATASET_CHOICES)}")
        if self.executor not in ("local", "serial", "ray"):
            raise BenchConfigError(f"executor: expected 'local', 'serial' or 'ray', got {self.executor!r}")
        for key in ("unimodal", "plots", "report"):
            if not isinstance(getattr(self, key), bool):
                raise BenchConfigError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise BenchConfigError(f"out: expected a folder path, got {self.out!r}")
        self.out = str(self.out)

    # ------------------------------------------------------------------- helpers
    def options_for(self, dataset: str) -> dict[str, Any]:
        """Loader options of ``dataset``: the defaults, overridden by ``dataset_options``."""
        return {**DEFAULT_DATASET_OPTIONS.get(dataset, {}), **self.dataset_options.get(dataset, {})}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> BenchConfig:
        """Build from a mapping (a parsed YAML file), rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise BenchConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        allowed = cls.keys()
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise BenchConfigError(f"{source}: unknown key {unknown[0]!r}: expected one of {allowed}")
        return cls(**dict(data))

    def replace(self, **overrides: Any) -> BenchConfig:
        """A copy with ``overrides`` (``None`` values are ignored: flag not given)."""
        allowed = self.keys()
        data = self.to_dict()
        for key, value in overrides.items():
            if key not in allowed:
                raise BenchConfigError(f"unknown setting {key!r}: expected one of {allowed}")
            if value is not None:
                data[key] = value
        return type(self)(**data)


def _check_list_of_str(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise BenchConfigError(f"{key}: expected a list of names, got {value!r}")


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> BenchConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (``None`` skipped)."""
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise BenchConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise BenchConfigError(f"config file {str(p)!r}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        data = dict(BenchConfig.from_mapping(loaded, source=f"config file {str(p)!r}").to_dict())
        # keep only keys the file set, so that defaults stay defaults
        data = {k: v for k, v in data.items() if k in loaded}
    cfg = BenchConfig(**data)
    return cfg.replace(**overrides)
