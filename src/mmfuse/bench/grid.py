"""The comparison grid: one :class:`RunSpec` per strategy x dataset x seed x training variant.

A run is keyed by a hash of its full settings (:attr:`RunSpec.key`), so a results
folder knows which runs are finished whatever order they ran in, and a changed
setting (epochs, options, data size) is a new run, never a stale result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mmfuse.bench.config import BenchConfig

__all__ = [
    "STANDARD",
    "UNIMODAL",
    "WITH_DROPOUT",
    "RunSpec",
    "build_grid",
    "dataset_entries",
]

#: model name of unimodal baselines (the modality is in :attr:`RunSpec.modality`)
UNIMODAL = "unimodal"
#: training variants
STANDARD = "standard"
WITH_DROPOUT = "modality_dropout"


@dataclass(frozen=True)
class RunSpec:
    """One training-and-evaluation run of the grid; plain data, picklable, JSON-able.

    Attributes:
        dataset: loader name (``synthetic``, ``mfeat``, ...).
        dataset_label: name shown in tables (``synthetic/synergy``, ``mfeat``).
        dataset_options: loader options (``task``, ``n``, ...).
        model: a fusion name, or :data:`UNIMODAL`.
        modality: the modality of a unimodal baseline, else ``None``.
        fusion_options: keyword options for the fusion.
        variant: :data:`STANDARD` or :data:`WITH_DROPOUT`.
        seed: training seed.
        data_seed: seed of the data splits.
        train: :class:`mmfuse.training.TrainConfig` fields (without ``seed``).
        hidden_dim: model width.
        noise_scales: test-time Gaussian noise levels.
        intermediates_samples: test samples whose fusion intermediates are kept
            (0: none).
        data_root: folder of the real datasets, ``None`` for the default.
    """

    dataset: str
    dataset_label: str
    model: str
    seed: int
    variant: str = STANDARD
    modality: str | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    fusion_options: Mapping[str, Any] = field(default_factory=dict)
    data_seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    hidden_dim: int = 64
    noise_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    intermediates_samples: int = 0
    data_root: str | None = None

    @property
    def label(self) -> str:
        """Name of the model in tables: the fusion name, or ``uni:<modality>``."""
        return f"uni:{self.modality}" if self.model == UNIMODAL else self.model

    @property
    def is_unimodal(self) -> bool:
        return self.model == UNIMODAL

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dataset_options"] = dict(self.dataset_options)
        d["fusion_options"] = dict(self.fusion_options)
        d["train"] = dict(self.train)
        d["noise_scales"] = list(self.noise_scales)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        d = dict(data)
        d["noise_scales"] = tuple(d.get("noise_scales", ()))
        return cls(**d)

    @property
    def key(self) -> str:
        """Hash of every setting (the data root excluded: it says where, not what)."""
        d = self.to_dict()
        d.pop("data_root")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_entries(config: BenchConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """``(loader name, label, options)`` per dataset of the grid; synthetic splits into its tasks."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name in config.datasets:
        opts = config.options_for(name)
        if name == "synthetic":
            tasks = [opts.pop("task")] if "task" in opts else list(config.synthetic_tasks)
            for task in tasks:
                out.append((name, f"synthetic/{task}", {**opts, "task": task}))
        else:
            out.append((name, name, opts))
    return out


def build_grid(
    config: BenchConfig,
    *,
    fusions: Sequence[str],
    modalities_of: Callable[[str, Mapping[str, Any]], Sequence[str]],
) -> list[RunSpec]:
    """Every run of the comparison, in a stable order (dataset, model, variant, seed).

    Args:
        config: the settings.
        fusions: strategy names to compare (already resolved from the registry).
        modalities_of: ``(loader name, options) -> modality names``, used to add one
            unimodal baseline per modality.
    """
    train = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "patience": config.patience,
    }
    common: dict[str, Any] = {
        "data_seed": config.data_seed,
        "hidden_dim": config.hidden_dim,
        "noise_scales": tuple(config.noise_scales),
        "data_root": config.data_root,
    }
    specs: list[RunSpec] = []
    for dataset, label, opts in dataset_entries(config):
        models: list[tuple[str, str | None]] = []
        if config.unimodal:
            models += [(UNIMODAL, m) for m in sorted(modalities_of(dataset, opts))]
        models += [(f, None) for f in fusions]
        for model, modality in models:
            variants = [(STANDARD, config.seeds, 0.0)]
            if model != UNIMODAL and config.modality_dropout > 0 and config.dropout_seeds > 0:
                variants.append((WITH_DROPOUT, config.dropout_seeds, config.modality_dropout))
            for variant, n_seeds, rate in variants:
                for seed in range(n_seeds):
                    specs.append(
                        RunSpec(
                            dataset=dataset,
                            dataset_label=label,
                            model=model,
                            modality=modality,
                            seed=seed,
                            variant=variant,
                            dataset_options=dict(opts),
                            fusion_options=dict(config.fusion_options.get(model, {})) if model != UNIMODAL else {},
                            train={**train, "modality_dropout": rate},
                            # what a gate or attention learned: one picture per strategy is enough
                            intermediates_samples=(
                                config.intermediates_samples
                                if model != UNIMODAL and variant == STANDARD and seed == 0
                                else 0
                            ),
                            **common,
                        )
                    )
    return specs
