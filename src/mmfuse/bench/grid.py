"""The comparison grid: one :class:`BenchRun` per strategy x dataset x seed x training variant.

A run is an :class:`~mmfuse.experiment.ExperimentSpec` (what to train) with a
:class:`~mmfuse.experiment.MeasureConfig` (what to measure). Its training key hashes
only what changes the weights; its measurement key adds the measure settings. A
results folder therefore knows which runs are finished whatever order they ran in, a
changed training setting is a new model (never a stale result), and a changed test-time
setting re-measures the saved model without training it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfuse.bench.config import BenchConfig, BenchConfigError
from mmfuse.bench.groups import GroupChoice
from mmfuse.bench.verdict import Skipped
from mmfuse.experiment.specs import (
    DataSpec,
    ExperimentSpec,
    MeasureConfig,
    ModelSpec,
    Variant,
    measure_key,
)

__all__ = ["BenchRun", "build_grid", "dataset_entries"]


@dataclass(frozen=True)
class BenchRun:
    """One run of the grid: the model to train, what to measure, where trained models are kept.

    Attributes:
        spec: what to train.
        measure: what to measure on its test split.
        models_dir: the folder of saved models (``<train key>.safetensors`` and its
            ``.json`` training facts), or ``None`` to keep nothing.
    """

    spec: ExperimentSpec
    measure: MeasureConfig
    models_dir: str | None = None

    @property
    def key(self) -> str:
        """The measurement key (see :func:`mmfuse.experiment.measure_key`)."""
        return measure_key(self.spec.key, self.measure)

    @property
    def train_key(self) -> str:
        return self.spec.key

    @property
    def label(self) -> str:
        return self.spec.label


def dataset_entries(config: BenchConfig) -> list[DataSpec]:
    """One :class:`DataSpec` per dataset of the grid; ``synthetic`` splits into its tasks."""
    out: list[DataSpec] = []
    for name in config.datasets:
        opts = config.options_for(name)
        enc = dict(config.encoders)
        if name == "synthetic":
            tasks = [opts.pop("task")] if "task" in opts else list(config.synthetic_tasks)
            for task in tasks:
                out.append(DataSpec(name=name, options={**opts, "task": task}, seed=config.data_seed,
                                    root=config.data_root, label=f"synthetic/{task}", encoders=enc))
        elif name == "table":  # the user's table: named after its file
            label = opts.get("name") or Path(str(opts.get("path", "table"))).name
            out.append(DataSpec(name=name, options=opts, seed=config.data_seed, root=config.data_root, label=label,
                                encoders=enc))
        else:
            out.append(DataSpec(name=name, options=opts, seed=config.data_seed, root=config.data_root, label=name,
                                encoders=enc))
    return out


#: how the bench runs ``hierarchical`` unless ``fusion_options`` says otherwise:
#: interactions inside each group (a tensor product), an additive combination of the
#: groups' predictions (a decision-level product of experts) between them
HIERARCHICAL_DEFAULTS: dict[str, Any] = {
    "local_fusion": "tensor", "local_options": {"dim": 8},
    "global_fusion": "late", "global_options": {"level": "decision", "decision": "product", "hidden_dims": [16]},
}


def _hierarchical_options(config: BenchConfig, data: DataSpec,
                          groups_of: Callable[[DataSpec], GroupChoice] | None) -> tuple[dict[str, Any] | None, str]:
    """Options of ``hierarchical`` on ``data``, or ``(None, reason)`` to skip it there."""
    user = config.fusion_options_for("hierarchical")
    if "groups" in user:
        return user, ""
    if groups_of is None:
        return None, "no way to choose its groups"
    choice = groups_of(data)
    if choice.groups is None:
        return None, choice.reason
    return {**HIERARCHICAL_DEFAULTS, **choice.fusion_options(), **user}, ""


#: why the fusions of a dataset with one modality are not run
ONE_MODALITY = "the data has one modality, so there is nothing to fuse"
#: why a decision-level-only strategy (``outputs_logits`` on the class) is not run
NOT_CLASSES = "a decision-level strategy combines class probabilities"


#: the largest tensor product (entries per sample, ``prod_i (k_i + 1)``) the bench trains at its
#: own ``tensor`` options: five modalities at its ``dim=8`` (9^5 = 59,049) fit; six (9^6 =
#: 531,441, with 5.3 M weights in the output map at ten classes) trained for over 30 minutes
#: per run on mfeat's six views, on a CPU, before it was stopped
TENSOR_PRODUCT_LIMIT = 2**16
#: why ``tensor`` is left out of a dataset with many modalities (its options are the bench's)
TENSOR_TOO_LARGE = "the tensor product grows as (dim + 1)^m"


def _tensor_too_large(options: Mapping[str, Any], m: int) -> str:
    """Why the bench does not train ``tensor`` with ``options`` on ``m`` modalities, or ``""``."""
    dim = options.get("dim")
    if not isinstance(dim, int) or (dim + 1) ** m <= TENSOR_PRODUCT_LIMIT:
        return ""
    size = (dim + 1) ** m
    fits = [k for k in range(1, dim) if (k + 1) ** m <= TENSOR_PRODUCT_LIMIT]
    how = (f"fusion_options {{tensor: {{dim: {fits[-1]}}}}} gives ({fits[-1]} + 1)^{m} = {(fits[-1] + 1) ** m:,}; "
           if fits else "")
    return (f"{TENSOR_TOO_LARGE}: ({dim} + 1)^{m} = {size:,} entries per sample on {m} modalities, over the "
            f"bench's limit of {TENSOR_PRODUCT_LIMIT:,} for its own options (hours per run on a CPU); {how}"
            "options you set are trained as given; low_rank is the same model at rank r, linear in m")


def _own_loss(name: str | None) -> bool:
    """Whether strategy ``name`` trains on a loss of its own (``trusted``); a name that is not
    registered (a test's stand-in) does not."""
    from mmfuse.fusions import fusion_class, has_own_loss, list_fusions

    return name is not None and name in list_fusions() and has_own_loss(fusion_class(name))


#: why a strategy with its own training loss has no balanced variant
OWN_LOSS = "it trains on a loss of its own, which the balancing methods would replace with cross-entropy"


def _decision_only(name: str) -> bool:
    """Whether strategy ``name`` outputs class log-probabilities whatever its options (a name
    that is not registered, e.g. a test's stand-in, is not)."""
    from mmfuse.fusions import fusion_class, list_fusions

    return name in list_fusions() and bool(fusion_class(name).outputs_logits)


def build_grid(
    config: BenchConfig,
    *,
    fusions: Sequence[str],
    modalities_of: Callable[[DataSpec], Sequence[str]],
    models_dir: str | None = None,
    groups_of: Callable[[DataSpec], GroupChoice] | None = None,
    skipped: list[Skipped] | None = None,
    task_of: Callable[[DataSpec], str] | None = None,
) -> list[BenchRun]:
    """Every run of the comparison, in a stable order (dataset, model, variant, seed).

    ``hierarchical`` runs with groups that mean something for the dataset (its
    ``fusion_options`` ``groups``, else ``groups_of``); where none exist (one modality
    per group would make it ``gated`` with extra layers) it is left out and recorded in
    ``skipped`` with the reason.

    Args:
        config: the settings.
        fusions: strategy names to compare (already resolved from the registry).
        modalities_of: ``DataSpec -> modality names``, used to add one unimodal
            baseline per modality.
        models_dir: where trained models are saved (see :class:`BenchRun`).
        groups_of: ``DataSpec -> GroupChoice`` (:func:`mmfuse.bench.groups.choose_groups`).
        skipped: a list the left-out strategies are appended to.
        task_of: ``DataSpec -> task``; a strategy that is decision-level whatever its
            options (``trusted``) is left out of a task that is not classification.
    """
    runs: list[BenchRun] = []
    measure = config.measure
    if config.balance and not measure.probe:  # balancing is judged by what each modality learns inside
        measure = MeasureConfig.from_json({**measure.to_json(), "probe": True})
    no_intermediates = MeasureConfig.from_json({**measure.to_json(), "intermediates_samples": 0})
    for data in dataset_entries(config):
        if "ogm_ge" in config.balance:
            mods = list(modalities_of(data))
            if len(mods) != 2:
                raise BenchConfigError(f"--balance ogm_ge: {data.display} has {len(mods)} modalities {sorted(mods)}; "
                                       "OGM-GE modulates exactly 2 (use aux, gblend or mmpareto)")
        models: list[ModelSpec] = []
        mods = sorted(modalities_of(data))
        if config.unimodal or len(mods) == 1:
            models += [ModelSpec(fusion=None, unimodal=m, hidden_dim=config.hidden_dim) for m in mods]
        for f in fusions:
            if len(mods) == 1:  # a fusion of one modality is its encoder with extra layers: not a comparison
                if skipped is not None:
                    skipped.append(Skipped(dataset=data.display, model=f,
                                           reason=f"{ONE_MODALITY}: {mods[0]!r} is the only one"))
                continue
            if task_of is not None and _decision_only(f) and (task := task_of(data)) not in ("binary", "multiclass"):
                if skipped is not None:
                    skipped.append(Skipped(dataset=data.display, model=f, reason=f"{NOT_CLASSES}: the task is {task}"))
                continue
            options: dict[str, Any] | None = config.fusion_options_for(f)
            if f == "hierarchical":
                options, reason = _hierarchical_options(config, data, groups_of)
                if options is None:
                    if skipped is not None:
                        skipped.append(Skipped(dataset=data.display, model=f, reason=reason))
                    continue
            if f == "tensor" and "tensor" not in config.fusion_options:
                reason = _tensor_too_large(options, len(mods))
                if reason:
                    if skipped is not None:
                        skipped.append(Skipped(dataset=data.display, model=f, reason=reason))
                    continue
            models.append(ModelSpec(fusion=f, hidden_dim=config.hidden_dim, fusion_options=options))
        for model in models:
            variants: list[tuple[Variant, int, float]] = [(Variant.STANDARD, config.seeds, 0.0)]
            if model.unimodal is None and config.modality_dropout > 0 and config.dropout_seeds > 0:
                variants.append((Variant.MODALITY_DROPOUT, config.dropout_seeds, config.modality_dropout))
            methods: list[str | None] = [None] * len(variants)
            if model.unimodal is None and config.balance and _own_loss(model.fusion):
                if skipped is not None:
                    skipped.append(Skipped(dataset=data.display, model=f"{model.label} (--balance)", reason=OWN_LOSS))
            elif model.unimodal is None:
                for method in config.balance:
                    variants.append((Variant.BALANCED, config.seeds, 0.0))
                    methods.append(method)
            for (variant, n_seeds, rate), method in zip(variants, methods, strict=True):
                for seed in range(n_seeds):
                    train = config.train_for(data.display).replace(seed=seed, modality_dropout=rate)
                    if method is not None:  # the method, with the options of train.balance
                        train = train.replace(balance=method)
                    spec = ExperimentSpec(data=data, model=model, train=train)
                    # what a gate or attention learned: one picture per strategy is enough
                    keep = model.unimodal is None and variant is Variant.STANDARD and seed == 0
                    runs.append(BenchRun(spec=spec, measure=measure if keep else no_intermediates,
                                         models_dir=models_dir))
    return runs


def describe(runs: Sequence[BenchRun]) -> Mapping[str, Any]:
    """Counts of a grid for the console: runs, datasets, models."""
    return {"runs": len(runs), "datasets": len({r.spec.data.display for r in runs}),
            "models": len({r.label for r in runs})}
