"""Settings of a comparison run: defaults, YAML files, command-line flags and ``key=value`` settings.

A :class:`BenchConfig` says *what* to compare (datasets, strategies, seeds, training
variants), *how to train* (one nested :class:`~mmfuse.training.TrainConfig`), *what to
measure* (one nested :class:`~mmfuse.experiment.MeasureConfig`) and *where* (executor,
jobs, output folder). It is built from defaults, then a YAML file (``--config``), then
``key=value`` settings, then command-line flags, each later layer overriding the
earlier one; a flag not given (``None``) sets nothing. Training settings are written as
in ``mmfuse train``: ``epochs=5`` or ``train.epochs=5`` on the command line, top-level or
under ``train:`` in YAML. Unknown keys raise :class:`BenchConfigError` naming the key and
the allowed ones, and the whole config (fusion option names included) is checked before
the first run.

A user's own table is set as in ``mmfuse train`` too: a YAML ``data:`` section, or
``data.<option>=value``, or the flags (``--data PATH --target COL --kind COL=KIND
--split COL|group:COL ...``), in the one grammar of
:func:`~mmfuse.experiment.config.table_settings`. They are the options of the ``table``
dataset (``dataset_options.table``, merged option by option, each layer over the
earlier), ``data.seed`` is ``data_seed``, and they select the table: ``datasets``
becomes ``[table]`` unless a layer at least as late chose other datasets, which is an
error rather than a table quietly left out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mmfuse.bench.tune import TuneConfig
from mmfuse.errors import ConfigError, check_fraction
from mmfuse.experiment.specs import MeasureConfig
from mmfuse.training.config import TrainConfig

__all__ = [
    "DEFAULT_DATASET_OPTIONS",
    "DEFAULT_TRAIN",
    "SYNTHETIC_TASKS",
    "BenchConfig",
    "BenchConfigError",
    "load_config",
]

#: the tasks of the synthetic suite run by default, each as its own dataset: the three
#: interaction types, fine-grained token alignment, per-sample reliability (one of two
#: candidate modalities shows a decoy) and grouped modalities (see
#: :mod:`mmfuse.data.synthetic` for what each is designed to show)
SYNTHETIC_TASKS = ("redundancy", "uniqueness", "synergy", "alignment", "reliability", "groups")

#: loader options used unless the config overrides them (sizes chosen so that the default
#: ``mmfuse bench`` finishes in a few minutes on a 2-core laptop)
DEFAULT_DATASET_OPTIONS: dict[str, dict[str, Any]] = {
    "synthetic": {"n": 2000},
}

#: how the bench trains unless told otherwise: shorter and quieter than a single
#: ``mmfuse train`` (15 epochs, patience 4, a higher learning rate, no progress bar)
DEFAULT_TRAIN = TrainConfig(epochs=15, batch_size=128, lr=3e-3, weight_decay=1e-4, patience=4, progress=False)
#: training settings of particular datasets (by table label) unless told otherwise: the
#: alignment task's attention solution forms late and needs a gentler step (at the bench's
#: lr 3e-3 it forms in one seed of three), so no early stopping and lr 1e-3
DEFAULT_DATASET_TRAIN: dict[str, dict[str, Any]] = {"synthetic/alignment": {"patience": 0, "lr": 1e-3}}
#: strategy options of the bench unless told otherwise: a tensor fusion of width 8 (its
#: product of four modalities at the default width 16 has 5.4M weights and dominates the run)
DEFAULT_FUSION_OPTIONS: dict[str, dict[str, Any]] = {"tensor": {"dim": 8}}
#: what the bench measures unless told otherwise
DEFAULT_MEASURE = MeasureConfig(noise_scales=(0.5, 1.0, 2.0), intermediates_samples=512)


class BenchConfigError(ConfigError):
    """A bad benchmark setting: unknown key, wrong type or value. Names the key."""


def _datasets() -> list[str]:
    from mmfuse.data import list_datasets

    return list_datasets()


@dataclass
class BenchConfig:
    """Everything that decides a comparison grid and how it is run.

    Attributes:
        datasets: registered dataset names (``"all"`` expands to every one).
            ``synthetic`` runs each task of ``synthetic_tasks`` as its own dataset.
        fusions: strategy names; ``None`` means every registered one.
        unimodal: also train one unimodal baseline per modality (the best of them is
            the reference every strategy's gain is measured against).
        seeds: number of seeds (``0 .. seeds-1``) of the standard training variant.
        modality_dropout: rate of the modality-dropout training variant; ``0`` turns
            the variant off.
        dropout_seeds: seeds of the modality-dropout variant (fusions only).
        balance: balanced-training variants of every fusion (``aux``, ``gblend``,
            ``ogm_ge``, ``mmpareto``; see :mod:`mmfuse.training.balance`), each over
            ``seeds`` seeds; off by default. Turns on the modality probe in the measurements.
            Their options are training settings: ``balance.weight=2`` (``train.balance``'s
            :class:`~mmfuse.training.config.BalanceOptions`, whose method the bench sets per
            variant: a method in ``train.balance`` is refused).
        synthetic_tasks: tasks of the synthetic suite.
        data_seed: seed of the data splits (fixed across model seeds, so seeds measure
            training variance on one split).
        dataset_options: per dataset name, options for its loader (merged over
            :data:`DEFAULT_DATASET_OPTIONS`).
        fusion_options: per strategy name, keyword options for ``create_fusion``
            (merged over :data:`DEFAULT_FUSION_OPTIONS`).
        hidden_dim: encoder and fusion width of every model.
        encoders: per modality, a pretrained encoder name (``hf:...``, ``timm:...``;
            see :mod:`mmfuse.encoders.pretrained`), for every dataset that has that
            modality; frozen ones are encoded once and cached for every run.
        train: how every model is trained (:data:`DEFAULT_TRAIN`; the seed is set per run).
        dataset_train: per dataset label (``synthetic/alignment``, ``mfeat``), changes to
            ``train`` for that dataset's runs (merged over :data:`DEFAULT_DATASET_TRAIN`).
        measure: what is measured on each trained model (:data:`DEFAULT_MEASURE`);
            changing it re-measures saved models without retraining them.
        executor: ``local`` (a process pool when ``jobs > 1``, else in-process),
            ``serial`` or ``ray``.
        jobs: runs at the same time (local executor).
        ray_address: Ray cluster address; ``None`` uses ``$RAY_ADDRESS`` or starts a
            local Ray instance.
        out: results folder (default ``bench-out/<datasets>``); re-running into the
            same folder skips finished runs and re-measures saved models.
        force: write into a folder that holds another comparison (other datasets).
        data_root: where the real datasets live (``None``: ``$MMFUSE_DATA`` or the cache).
        plots: also write the figures as PNG files (the report embeds them either way).
        report: write the HTML report.
        diagnose: estimate each dataset's redundancy, uniqueness and synergy (partial
            information decomposition) for the report and the recommendation.
        tune: tune every strategy and baseline on an equal budget before comparing
            them (:class:`~mmfuse.bench.tune.TuneConfig`: YAML ``tune: 20`` or
            ``tune: {trials: 20, space: {...}}``, ``tune.<setting>=value``, ``--tune N``);
            ``None``: compare the defaults.
    """

    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    fusions: list[str] | None = None
    unimodal: bool = True
    seeds: int = 3
    modality_dropout: float = 0.3
    dropout_seeds: int = 1
    balance: list[str] = field(default_factory=list)
    synthetic_tasks: list[str] = field(default_factory=lambda: list(SYNTHETIC_TASKS))
    data_seed: int = 0
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    hidden_dim: int = 64
    encoders: dict[str, str] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: DEFAULT_TRAIN)
    dataset_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure: MeasureConfig = field(default_factory=lambda: DEFAULT_MEASURE)
    executor: str = "local"
    jobs: int = 2
    ray_address: str | None = None
    out: str | None = None
    force: bool = False
    data_root: str | None = None
    plots: bool = True
    report: bool = True
    diagnose: bool = True
    tune: TuneConfig | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`BenchConfigError` on the first bad setting."""
        choices = _datasets()
        if isinstance(self.datasets, str):
            self.datasets = [d for d in self.datasets.split(",") if d]
        _check_list_of_str("datasets", self.datasets)
        expanded: list[str] = []
        from mmfuse.data import USER_DATASETS

        builtin = [c for c in choices if c not in USER_DATASETS]
        for name in self.datasets:
            for n in (builtin if name == "all" else [name]):
                if n not in choices:
                    raise BenchConfigError(f"datasets: unknown dataset {n!r}: expected one of {[*builtin, 'all']} "
                                           "(or --data PATH for your own table)")
                if n not in expanded:
                    expanded.append(n)
        if not expanded:
            raise BenchConfigError("datasets: expected at least one dataset, got none")
        self.datasets = expanded
        if isinstance(self.fusions, str):
            self.fusions = [f for f in self.fusions.split(",") if f]
        if self.fusions is not None:
            _check_list_of_str("fusions", self.fusions)
        for key in ("seeds", "dropout_seeds", "hidden_dim", "data_seed", "jobs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BenchConfigError(f"{key}: expected an int, got {value!r}")
            low = 0 if key in ("dropout_seeds", "data_seed") else 1
            if value < low:
                raise BenchConfigError(f"{key}: expected an int >= {low}, got {value}")
        self.modality_dropout = check_fraction("modality_dropout", self.modality_dropout, error=BenchConfigError)
        from mmfuse.training.balance import balance_methods

        if isinstance(self.balance, str):
            self.balance = [b for b in self.balance.split(",") if b]
        if self.balance:
            _check_list_of_str("balance", self.balance)
        for method in self.balance:
            if method not in balance_methods():
                raise BenchConfigError(f"balance: unknown method {method!r}: expected some of {balance_methods()}")
        self.balance = list(dict.fromkeys(self.balance))
        if isinstance(self.synthetic_tasks, str):
            self.synthetic_tasks = [t for t in self.synthetic_tasks.split(",") if t]
        _check_list_of_str("synthetic_tasks", self.synthetic_tasks)
        from mmfuse.data.synthetic import SYNTHETIC_TASKS as KNOWN_TASKS

        for task in self.synthetic_tasks:
            if task not in KNOWN_TASKS:
                raise BenchConfigError(f"synthetic_tasks: unknown task {task!r}: expected one of {list(KNOWN_TASKS)}")
        for key in ("dataset_options", "fusion_options", "dataset_train"):
            value = getattr(self, key)
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()
            ):
                raise BenchConfigError(f"{key}: expected a mapping of name -> mapping of options, got {value!r}")
            setattr(self, key, {k: dict(v) for k, v in value.items()})
        for name in self.dataset_options:
            if name not in choices:
                raise BenchConfigError(f"dataset_options: unknown dataset {name!r}: expected one of {choices}")
        if "table" in self.dataset_options:  # a user's table: its names checked, its values in one grammar
            from mmfuse.experiment.config import table_settings

            self.dataset_options["table"] = table_settings(self.dataset_options["table"], error=BenchConfigError)
        if not isinstance(self.train, TrainConfig):
            raise BenchConfigError(f"train: expected a TrainConfig, got {type(self.train).__name__}")
        if self.train.balance.method is not None:
            raise BenchConfigError(f"train.balance.method={self.train.balance.method!r}: the bench trains balanced "
                                   "variants beside the standard ones: choose their methods with --balance (YAML "
                                   "balance: [aux, ...]); balance.<option> sets their options")
        if not isinstance(self.measure, MeasureConfig):
            raise BenchConfigError(f"measure: expected a MeasureConfig, got {type(self.measure).__name__}")
        if self.executor not in ("local", "serial", "ray"):
            raise BenchConfigError(f"executor: expected 'local', 'serial' or 'ray', got {self.executor!r}")
        for key in ("unimodal", "plots", "report", "force", "diagnose"):
            if not isinstance(getattr(self, key), bool):
                raise BenchConfigError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if self.out is not None:
            if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
                raise BenchConfigError(f"out: expected a folder path, got {self.out!r}")
            self.out = str(self.out)
        if self.tune is not None:
            from mmfuse.bench.tune import check_space_names

            try:
                if not isinstance(self.tune, TuneConfig):
                    self.tune = TuneConfig.from_json(self.tune)
                check_space_names(self.tune.space)
            except BenchConfigError:
                raise
            except ConfigError as exc:
                raise BenchConfigError(str(exc)) from exc
        if self.ray_address is not None and self.executor != "ray":
            raise BenchConfigError(f"ray_address: given ({self.ray_address!r}) but executor is {self.executor!r}: "
                                   "add --executor ray")

    # ------------------------------------------------------------------- helpers
    @property
    def out_dir(self) -> Path:
        """``out``, or ``bench-out/<datasets>`` (one folder per set of datasets)."""
        if self.out is not None:
            return Path(self.out)
        return Path("bench-out") / "+".join(self.datasets)

    def train_for(self, label: str) -> TrainConfig:
        """``train`` with the changes of ``dataset_train`` (and its defaults) for ``label``."""
        from mmfuse.experiment.config import train_config

        changes = {**DEFAULT_DATASET_TRAIN.get(label, {}), **self.dataset_train.get(label, {})}
        try:
            return train_config(changes, self.train) if changes else self.train
        except ConfigError as exc:
            raise BenchConfigError(f"dataset_train: {label}: {exc}") from exc

    def fusion_options_for(self, fusion: str) -> dict[str, Any]:
        """Options of ``fusion``: the bench's defaults, overridden by ``fusion_options``."""
        return {**DEFAULT_FUSION_OPTIONS.get(fusion, {}), **self.fusion_options.get(fusion, {})}

    def options_for(self, dataset: str) -> dict[str, Any]:
        """Loader options of ``dataset``: the defaults, overridden by ``dataset_options``; for
        ``table`` (a user's table) every field, checked, and the file's fingerprint (see
        :func:`~mmfuse.experiment.config.table_loader_options`)."""
        opts = {**DEFAULT_DATASET_OPTIONS.get(dataset, {}), **self.dataset_options.get(dataset, {})}
        if dataset == "table":
            from mmfuse.experiment.config import table_loader_options

            return table_loader_options(opts, error=BenchConfigError)
        return opts

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["train"] = self.train.to_json()
        d["measure"] = self.measure.to_json()
        d["tune"] = self.tune.to_json() if self.tune is not None else None
        return d

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **overrides: Any) -> BenchConfig:
        """A copy with ``overrides`` (``None`` values are ignored: flag not given)."""
        allowed = self.keys()
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in overrides.items():
            if key not in allowed:
                raise BenchConfigError(f"unknown setting {key!r}: expected one of {allowed}")
            if value is not None:
                data[key] = value
        return type(self)(**data)


def _check_list_of_str(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise BenchConfigError(f"{key}: expected a list of names, got {value!r}")


def _table_part(settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A user table's settings in one layer: its ``data:`` section and ``data.<option>`` keys."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "data":
            if not isinstance(value, Mapping):
                raise BenchConfigError(f"{source}: data: expected a mapping of your table's settings (path, target, "
                                       f"kinds, split, ...), got {value!r}")
            out.update(value)
        elif key.startswith("data."):
            out[key[5:]] = value
    return out


def _merged_options(before: Mapping[str, Mapping[str, Any]], given: Any,
                    table: Mapping[str, Any]) -> Any:
    """``dataset_options`` of a layer (and its table settings) over the earlier ones, option
    by option; a malformed ``given`` is returned as it is, for :meth:`BenchConfig.validate` to name."""
    if not isinstance(given, Mapping) or not all(isinstance(v, Mapping) for v in given.values()):
        return given
    merged = {name: dict(opts) for name, opts in before.items()}
    for name, opts in given.items():
        merged.setdefault(name, {}).update(opts)
    if table:
        merged.setdefault("table", {}).update(table)
    return merged


def _tune_part(before: TuneConfig | dict[str, Any] | None, key: str, value: Any, source: str) -> dict[str, Any]:
    """The tuning settings with one more key: ``tune`` (a number of trials or a mapping,
    merged over the earlier ones), ``tune.<setting>``, or ``tune.space.<name>``."""
    out = before.to_json() if isinstance(before, TuneConfig) else dict(before or {})
    out["space"] = dict(out.get("space") or {})
    if key == "tune":
        if isinstance(value, Mapping):
            given = dict(value)
            if isinstance(given.get("space"), Mapping):
                out["space"].update(given.pop("space"))
            out.update(given)
        elif isinstance(value, bool) or value is None:
            raise BenchConfigError(f"{source}: tune: expected a number of trials or a mapping of settings, "
                                   f"got {value!r}")
        else:
            out["trials"] = value
    elif key.startswith("tune.space."):
        out["space"][key.removeprefix("tune.space.")] = value
    elif key == "tune.space" and isinstance(value, Mapping):
        out["space"].update(value)
    else:
        out[key.removeprefix("tune.")] = value
    if isinstance(out.get("trials"), str) and out["trials"].strip().lstrip("-").isdigit():
        out["trials"] = int(out["trials"])
    return out


def _gives_trials(layer: Mapping[str, Any]) -> bool:
    """Whether a layer of settings says how many trials to tune (``tune: N``, ``tune: {trials: N}``,
    ``tune.trials``): other tuning settings alone do not turn tuning on."""
    value = layer.get("tune")
    return "tune.trials" in layer or (value is not None and (not isinstance(value, Mapping) or "trials" in value))


def _apply(config: BenchConfig, settings: Mapping[str, Any], source: str) -> BenchConfig:
    """``settings`` (a YAML mapping, or ``key=value`` pairs) over ``config``.

    Keys: BenchConfig fields; ``train`` / ``measure`` sections (mappings); TrainConfig
    fields, bare or ``train.``-prefixed; ``measure.<field>``; a ``data:`` section or
    ``data.<option>``: a user table's settings (``data.seed``: ``data_seed``).
    ``dataset_options`` merge over the earlier ones option by option.
    """
    from mmfuse.experiment.config import is_train_setting, train_config

    top: dict[str, Any] = {}
    train: dict[str, Any] = {}
    measure: dict[str, Any] = {}
    train_names = TrainConfig.field_names()
    measure_names = [f.name for f in dataclasses.fields(MeasureConfig)]
    table = _table_part(settings, source)
    tune: dict[str, Any] | None = None
    if "seed" in table:
        top["data_seed"] = table.pop("seed")
    for key, value in settings.items():
        if key == "data" or key.startswith("data."):
            continue  # in ``table``
        if key == "tune" or key.startswith("tune."):
            tune = _tune_part(tune if tune is not None else config.tune, key, value, source)
        elif key in ("train", "measure"):
            if not isinstance(value, Mapping):
                raise BenchConfigError(f"{source}: {key}: expected a mapping of settings, got {value!r}")
            (train if key == "train" else measure).update(value)
        elif key not in BenchConfig.keys() and is_train_setting(key):
            train[key.removeprefix("train.")] = value
        elif key.startswith("measure.") or key in measure_names:
            name = key.removeprefix("measure.")
            if name not in measure_names:
                raise BenchConfigError(f"{source}: unknown measure setting {key!r}: expected one of {measure_names}")
            measure[name] = value
        elif key in BenchConfig.keys():
            top[key] = value
        else:
            raise BenchConfigError(
                f"{source}: unknown key {key!r}: expected one of {BenchConfig.keys()}, a training setting "
                f"({', '.join(train_names)}, balance.<option>), measure.<{'|'.join(measure_names)}> or data.<option> "
                "(your own table)")
    if tune is not None:
        try:
            top["tune"] = TuneConfig.from_json(tune)
        except ConfigError as exc:
            raise BenchConfigError(f"{source}: {exc}") from exc
    if "dataset_options" in top or table:
        top["dataset_options"] = _merged_options(config.dataset_options, top.get("dataset_options", {}), table)
    try:
        if train:
            top["train"] = train_config(train, config.train)
        if measure:
            top["measure"] = MeasureConfig.from_json({**config.measure.to_json(), **measure})
    except ConfigError as exc:
        raise BenchConfigError(f"{source}: {exc}") from exc
    return config.replace(**top)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Mapping[str, Any] | Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
    **flags: Any,
) -> BenchConfig:
    """Defaults, then the YAML file at ``path``, then ``settings`` (``key=value`` strings or a
    mapping), then ``data`` and ``flags`` (``None`` skipped: the flag was not given).

    Flags are BenchConfig fields, ``epochs`` (a training setting), and ``noise_scales``
    and ``metric`` (measure settings: ``metric:`` in YAML, ``metric=NAME`` as a setting). ``data``: a user table's settings from flags (``path`` from
    ``--data``, ``target``, ``kinds``, ``split``, ...: only those given), merged over the
    YAML's ``data:`` section and ``data.<option>`` settings option by option. Table
    settings select the ``table`` dataset (see the module docstring).
    """
    from mmfuse.experiment.config import flatten_settings, parse_overrides, read_yaml

    layers: list[tuple[str, Mapping[str, Any]]] = []
    config = BenchConfig()
    if path is not None:
        try:
            loaded = read_yaml(path)
        except ConfigError as exc:
            raise BenchConfigError(str(exc)) from exc
        layers.append((f"config file {str(path)!r}", loaded))
    if settings:
        pairs = parse_overrides(settings) if not isinstance(settings, Mapping) else dict(settings)
        layers.append(("setting", flatten_settings(pairs)))
    flag_settings: dict[str, Any] = {}
    for key in ("epochs", "noise_scales", "metric"):
        value = flags.pop(key, None)
        if value is not None:
            flag_settings[key] = value
    for key, name in (("tune", "tune.trials"), ("tune_time", "tune.time"), ("tune_storage", "tune.storage")):
        value = flags.pop(key, None)
        if value is not None:
            flag_settings[name] = value
    if data:
        flag_settings["data"] = {k: v for k, v in data.items() if v is not None}
    if flag_settings:
        layers.append(("flag", flag_settings))
    flag_rank = len(layers) - 1 if flag_settings else len(layers)
    datasets_by = table_by = -1  # the latest layer that chose the datasets / named the table's file
    table_given: list[str] = []
    for rank, (source, layer) in enumerate(layers):
        config = _apply(config, layer, source)
        table = {k: v for k, v in _table_part(layer, source).items() if k != "seed"}
        table_given += [k for k in table if k not in table_given]
        datasets_by = rank if "datasets" in layer else datasets_by
        table_by = rank if "path" in table else table_by
    if flags.get("datasets") is not None:
        datasets_by = flag_rank  # --dataset and --data are as late: both given is an error
    config = config.replace(**flags)
    from mmfuse.experiment.config import check_balance_read

    check_balance_read(config.train.balance, config.balance, error=BenchConfigError)  # once every layer is in
    if config.tune is not None and not any(_gives_trials(layer) for _, layer in layers):
        given = sorted({k.split(".")[1] if k.startswith("tune.") else "tune" for _, layer in layers for k in layer
                        if k == "tune" or k.startswith("tune.")})
        raise BenchConfigError(f"{', '.join(f'tune.{g}' for g in given if g != 'tune') or 'tune'} given without a "
                               "number of trials: add --tune N (or tune: {trials: N, ...})")
    if table_given and "table" not in config.datasets:
        if datasets_by >= 0 and table_by <= datasets_by:
            raise BenchConfigError(
                f"datasets {config.datasets}: your own table's settings are given too "
                f"({', '.join(f'data.{k}' for k in table_given)}): bench the table (--data PATH, datasets: [table]) "
                "or the datasets, not both")
        config = config.replace(datasets=["table"])
    if "table" in config.datasets:
        config.options_for("table")  # its values and its file checked now, before a results folder is made
    return config
