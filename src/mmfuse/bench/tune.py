"""Equal-budget tuning of every strategy and baseline of a comparison (``mmfuse bench --tune N``).

For each dataset and each model of the grid (every strategy and every unimodal
baseline) one Optuna study of ``N`` trials: the TPE sampler, seeded per study from
``tune.seed`` and the study's name, so the same settings draw the same trials; trial 0
is the model's defaults (``enqueue_trial``), so tuning can only find the defaults or
better on validation; every study has the same budget (``N`` trials, the same epoch
limit, optionally ``tune.time`` seconds); unpromising trials are pruned on the
validation main metric after each epoch (median or successive-halving pruner). The
objective is the validation main metric of the best-on-validation weights: the test
split is never read while tuning. The best configuration of each model is then
retrained over the bench's seeds and measured like the defaults (see
:mod:`mmfuse.bench.core`).

What is tried comes from the search spaces declared beside the settings
(:mod:`mmfuse.space`): :attr:`~mmfuse.training.TrainConfig.search_space` (learning
rate, weight decay, batch size), :attr:`~mmfuse.experiment.ModelSpec.search_space`
(hidden size, dropout) and each strategy's ``search_space`` (its own options, named
``<strategy>.<option>`` in a study and in ``tune.space``). A user narrows or widens
them from YAML (``tune: {space: {lr: [1e-4, 1e-2], gated.gate: [scalar]}}``).

Storage: in memory by default; ``tune.storage`` (``--tune-storage PATH``) keeps the
studies in an SQLite file (``*.db``, ``*.sqlite``, or a database URL) or an Optuna
journal file (any other name), so a killed tuning resumes (finished trials are not run
again) and several processes or machines share one study: a process asks for a trial
only while finished plus running trials are fewer than ``N``, and a trial numbered
past the budget by a race is given up (``discarded`` in its attributes), so the
budget is never exceeded. Each study keeps a fingerprint of the configuration that
made it; a storage holding a study of another configuration is refused.

On Ray (``--executor ray``), every study runs at once, each with one trial in flight
as a Ray task (through the same storage, which the tasks report epochs to, so the
pruner sees them): the studies are independent, so this is as deterministic as the
serial run, and needs no second scheduler (Ray Tune's would replace the pruner and
the equal budget's bookkeeping rather than add to them).
"""

from __future__ import annotations

import csv
import io
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.space import (
    Categorical,
    Distribution,
    active_names,
    check_space,
    override,
    render,
    sample,
    values_of,
)

__all__ = [
    "PRUNERS",
    "StudyResult",
    "TrialOutcome",
    "TuneConfig",
    "model_space",
    "resolve_space",
    "run_trial",
    "shared_space",
    "tune_grid",
    "tuned_runs",
]

#: pruners ``tune.pruner`` takes: Optuna's median rule, successive halving, or none
PRUNERS = ("median", "halving", "none")
#: the attribute that marks a trial that does not count (a race past the budget, a dead process)
DISCARDED = "discarded"


@dataclass(frozen=True)
class TuneConfig:
    """How ``mmfuse bench --tune`` tunes (YAML ``tune:``; ``tune.<field>=value``).

    Attributes:
        trials: trials per model (strategy or baseline) and dataset, trial 0 its defaults.
        time: most seconds of tuning per model (``None``: no limit); a model cut short
            has fewer trials, which the report says.
        storage: where the studies live: ``None`` (memory), an SQLite file (``.db``,
            ``.sqlite``), a database URL, or an Optuna journal file (any other name).
        seed: seed of the samplers (each study's is derived from it and its name).
        pruner: ``median`` (stop a trial whose validation score is below the median of
            earlier trials' at the same epoch), ``halving`` (successive halving), ``none``.
        epochs: most epochs per trial (default: the bench's ``epochs``); the same for every model.
        space: narrowing or widening of the search spaces, by name (``lr``,
            ``hidden_dim``, ``<strategy>.<option>``; see :func:`mmfuse.space.override`).
    """

    trials: int = 20
    time: float | None = None
    storage: str | None = None
    seed: int = 0
    pruner: str = "median"
    epochs: int | None = None
    space: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"tune: trials: expected an int >= 1 (trial 0 is the defaults), got {self.trials!r}")
        if self.time is not None and (isinstance(self.time, bool) or not isinstance(self.time, (int, float))
                                      or not self.time > 0 or not math.isfinite(self.time)):
            raise ConfigError(f"tune: time: expected seconds > 0 per model, got {self.time!r}")
        if self.storage is not None:
            if not isinstance(self.storage, (str, os.PathLike)) or not str(self.storage):
                raise ConfigError(f"tune: storage: expected a file path or database URL, got {self.storage!r}")
            object.__setattr__(self, "storage", str(self.storage))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"tune: seed: expected an int >= 0, got {self.seed!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"tune: pruner: expected one of {list(PRUNERS)}, got {self.pruner!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ConfigError(f"tune: epochs: expected an int >= 1, got {self.epochs!r}")
        if not isinstance(self.space, Mapping) or not all(isinstance(k, str) for k in self.space):
            raise ConfigError(f"tune: space: expected a mapping of name -> range or choices, got {self.space!r}")
        object.__setattr__(self, "space", dict(self.space))

    @classmethod
    def from_json(cls, data: Any) -> TuneConfig:
        if isinstance(data, bool):
            raise ConfigError(f"tune: expected a number of trials or a mapping of settings, got {data!r}")
        if isinstance(data, int):
            return cls(trials=data)
        if isinstance(data, str) and data.strip().lstrip("-").isdigit():
            return cls(trials=int(data))
        if not isinstance(data, Mapping):
            raise ConfigError(f"tune: expected a number of trials or a mapping of settings, got {data!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"tune: unknown setting {unknown[0]!r}: expected one of {names}")
        return cls(**dict(data))

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def budget(self, epochs: int) -> str:
        """The budget in words: ``"20 trials each, 10 epochs max"``."""
        text = f"{self.trials} trial{'s' if self.trials != 1 else ''} each, {self.epochs or epochs} epochs max"
        return text + (f", {self.time:g} s max" if self.time is not None else "")


# ------------------------------------------------------------------------- spaces
def shared_space() -> dict[str, Distribution]:
    """The space of every model: the optimiser's settings and the model's sizes."""
    from mmfuse.experiment.specs import ModelSpec
    from mmfuse.training.config import TrainConfig

    return {**TrainConfig.search_space, **ModelSpec.search_space}


def _fusion_allowed(fusion: str) -> tuple[dict[str, Any], Callable[[str, Any], str | None]]:
    from mmfuse.fusions import fusion_class
    from mmfuse.fusions._options import accepts, describe, option_annotations

    annotations = option_annotations(fusion_class(fusion).__init__)

    def allowed(name: str, value: Any) -> str | None:
        ann = annotations.get(name)
        return None if ann is None or accepts(ann, value) else describe(ann)

    return annotations, allowed


def _shared_allowed(name: str, value: Any) -> str | None:
    """``None`` when ``value`` is a valid ``name`` (a TrainConfig or ModelSpec setting), else what is."""
    from mmfuse.experiment.specs import ModelSpec
    from mmfuse.training.config import TrainConfig

    try:
        if name in TrainConfig.search_space:
            TrainConfig(**{name: value})
        else:
            ModelSpec(**{name: value})
    except (ConfigError, TypeError) as exc:
        return str(exc).split(": expected ", 1)[-1]
    return None


def check_fusion_space(fusion: str, space: Mapping[str, Distribution] | None = None) -> None:
    """Raise :class:`ConfigError` unless ``fusion``'s space (default: its own) names its
    options with allowed values and sound conditions."""
    from mmfuse.fusions import fusion_class

    annotations, allowed = _fusion_allowed(fusion)
    check_space(fusion, space if space is not None else fusion_class(fusion).search_space, allowed,
                annotations, error=ConfigError)


def resolve_space(fusion: str | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Distribution]:
    """The space of one model (``fusion`` ``None``: a unimodal baseline), with the user's
    ``overrides`` applied; names as in a study: ``lr``, ``hidden_dim``, ``<fusion>.<option>``.

    Raises :class:`ConfigError` naming an unknown name (with the allowed ones) or a value
    outside what the setting accepts."""
    from mmfuse.fusions import fusion_class, list_fusions

    shared = shared_space()
    space: dict[str, Distribution] = dict(shared)
    own: dict[str, Distribution] = dict(fusion_class(fusion).search_space) if fusion else {}
    for name, given in (overrides or {}).items():
        if name in shared:
            dist = override(name, shared[name], given, error=ConfigError)
            for value in dist.ends():
                why = _shared_allowed(name, value)
                if why is not None:
                    raise ConfigError(f"tune: space: {name}: {value!r} is not allowed: expected {why}")
            space[name] = dist
            continue
        strategy, dot, option = name.partition(".")
        if not dot or strategy not in list_fusions():
            raise ConfigError(f"tune: space: unknown hyperparameter {name!r}: expected one of {sorted(shared)} or "
                              f"<strategy>.<option> with a strategy of {list_fusions()}")
        annotations, allowed = _fusion_allowed(strategy)
        if option not in annotations:
            raise ConfigError(f"tune: space: unknown option {option!r} of {strategy}: expected one of "
                              f"{sorted(annotations)}")
        if strategy != fusion:
            continue
        integer = _is_int(annotations[option])
        dist = override(name, own.get(option), given, integer=integer, error=ConfigError)
        for value in dist.ends():
            why = allowed(option, value)
            if why is not None:
                raise ConfigError(f"tune: space: {name}: {value!r} is not allowed: expected {why}")
        own[option] = dist
    if fusion:
        check_fusion_space(fusion, own)
        space.update({f"{fusion}.{k}": _prefixed(fusion, v) for k, v in own.items()})
    return space


def _prefixed(fusion: str, dist: Distribution) -> Distribution:
    """``dist`` with the options its conditions name as the study names them."""
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if dist.when:
        changes["when"] = {f"{fusion}.{k}": v for k, v in dist.when}
    if isinstance(dist, Categorical) and dist.divides:
        changes["divides"] = f"{fusion}.{dist.divides}"
    return replace(dist, **changes) if changes else dist


def _is_int(annotation: Any) -> bool:
    from typing import get_args

    return annotation is int or int in get_args(annotation) or any(_is_int(a) for a in get_args(annotation)
                                                                     if a is not annotation)


def check_space_names(overrides: Mapping[str, Any]) -> None:
    """Every name of ``tune.space`` and its values checked, whichever strategies run."""
    from mmfuse.fusions import list_fusions

    strategies = {n.partition(".")[0] for n in overrides if "." in n} & set(list_fusions())
    resolve_space(None, {k: v for k, v in overrides.items() if "." in k and k.partition(".")[0] not in strategies
                         or "." not in k})
    for s in strategies:
        resolve_space(s, overrides)


def model_space(spec: Any, overrides: Mapping[str, Any] | None = None) -> dict[str, Distribution]:
    """The space of the model of ``spec`` (an :class:`~mmfuse.experiment.ExperimentSpec`)."""
    return resolve_space(spec.model.fusion, overrides)


def defaults_of(spec: Any, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """The value ``spec`` gives each name of ``space`` (its options, else the strategy's defaults)."""
    from mmfuse.fusions import fusion_class

    out: dict[str, Any] = {}
    for name in space:
        if name in spec.train.search_space:
            out[name] = getattr(spec.train, name)
        elif name in type(spec.model).search_space:
            out[name] = getattr(spec.model, name)
        else:
            fusion, _, option = name.partition(".")
            given = spec.model.fusion_options
            out[name] = given[option] if option in given else fusion_class(fusion).default(option)
    return out


def apply_params(spec: Any, params: Mapping[str, Any]) -> Any:
    """``spec`` with the values ``params`` (names as :func:`resolve_space` gives them)."""
    from dataclasses import replace

    train = {k: v for k, v in params.items() if k in spec.train.search_space}
    model = {k: v for k, v in params.items() if k in type(spec.model).search_space}
    options = {k.partition(".")[2]: v for k, v in params.items() if "." in k}
    new_model = replace(spec.model, **model)
    if options:
        new_model = replace(new_model, fusion_options={**spec.model.fusion_options, **options})
    return spec.replace(train=spec.train.replace(**train) if train else spec.train, model=new_model)


def params_of(trial_params: Mapping[str, Any]) -> dict[str, Any]:
    """A study's parameters as option values (``num_heads|dim=48`` -> ``num_heads``)."""
    return {k.split("|", 1)[0]: v for k, v in trial_params.items()}


# ------------------------------------------------------------------- one trial
@dataclass(frozen=True)
class TrialOutcome:
    """What one trial's training gave.

    Attributes:
        value: the validation main metric of the best-on-validation weights
            (``None`` when pruned or failed).
        pruned: stopped by the pruner; curve: the validation main metric after each epoch.
        error: the failure, in words (a diverged loss, an invalid combination).
        seconds: wall time.
    """

    value: float | None
    pruned: bool
    curve: tuple[float, ...]
    error: str | None
    seconds: float


def _epoch_callback(val: Any, metric: str, report: Callable[[int, float], bool] | None) -> Any:
    """A Lightning callback: the validation main metric after each epoch, handed to
    ``report(epoch, value)``, which returns True to stop (prune) the trial. A
    :class:`Checkpoint`, so that it runs after the module's own validation of the epoch."""
    from lightning.pytorch.callbacks import Checkpoint

    from mmfuse.training.metrics import evaluate

    class EpochScore(Checkpoint):
        def __init__(self) -> None:
            self.curve: list[float] = []
            self.pruned = False

        @property
        def state_key(self) -> str:
            return "mmfuse.EpochScore"

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            model = pl_module.model
            was_training = model.training
            value = float(evaluate(model, val)[metric])
            model.train(was_training)
            self.curve.append(value)
            if report is not None and report(trainer.current_epoch, value):
                self.pruned = True
                trainer.should_stop = True

    return EpochScore()


def run_trial(spec: Any, metric: str, report: Callable[[int, float], bool] | None = None) -> TrialOutcome:
    """Train ``spec`` on its train split and score it on its validation split (the test
    split is not read); ``report(epoch, value) -> stop`` is called after every epoch."""
    from mmfuse.experiment.run import build_for, load_data
    from mmfuse.training.engine import fit

    start = time.perf_counter()
    curve: list[float] = []
    try:
        splits = load_data(spec.data)
        if len(splits.val) == 0:
            raise ConfigError(f"{spec.data.display}: tuning needs a validation split; this dataset has none")
        model = build_for(spec, splits)
        callback = _epoch_callback(splits.val, metric, report)
        curve = callback.curve
        result = fit(model, splits, spec.train, callbacks=[callback])
        if callback.pruned:
            return TrialOutcome(None, True, tuple(curve), None, time.perf_counter() - start)
        value = float(result.val_metrics[metric])
        return TrialOutcome(value, False, tuple(curve), None, time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a failed trial is data (a diverged lr, a bad combination)
        return TrialOutcome(None, False, tuple(curve), f"{type(exc).__name__}: {exc}", time.perf_counter() - start)


# ------------------------------------------------------------------------ studies
def open_storage(path: str | None) -> Any:
    """The Optuna storage at ``path`` (``None``: in memory)."""
    if path is None:
        return None
    import optuna

    if "://" in path:
        return optuna.storages.RDBStorage(path)
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix in (".db", ".sqlite", ".sqlite3"):
        return optuna.storages.RDBStorage(f"sqlite:///{p}")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(p)))


def make_pruner(kind: str) -> Any:
    import optuna

    if kind == "median":
        # after 2 finished trials, from the second epoch on: the first epoch says little
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def _fingerprint(spec: Any, space: Mapping[str, Distribution], metric: str, cfg: TuneConfig) -> dict[str, Any]:
    """What decides a study's trials (the budget aside, which may grow on a resume)."""
    return {**spec.weights_identity(), "space": {k: render(v) for k, v in sorted(space.items())},
            "metric": metric, "pruner": cfg.pruner, "seed": cfg.seed}


def open_study(name: str, spec: Any, space: Mapping[str, Distribution], metric: str, higher: bool,
               cfg: TuneConfig) -> Any:
    """The study ``name`` (created, or loaded from ``cfg.storage``), checked to belong to
    this configuration, with trial 0 (the defaults) enqueued when it is new."""
    import optuna

    from mmfuse.experiment.specs import SPEC_SCHEMA, flat_keys, stable_hash

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ident = _fingerprint(spec, space, metric, cfg)
    fp = stable_hash(ident)
    seed = int(stable_hash([cfg.seed, name]), 16) % 2**31
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(study_name=name, storage=open_storage(cfg.storage), sampler=sampler,
                                pruner=make_pruner(cfg.pruner), direction="maximize" if higher else "minimize",
                                load_if_exists=True)
    attrs = study.user_attrs
    if "mmfuse_fingerprint" in attrs:
        made_by = (attrs.get("mmfuse_identity") or {}).get("schema")
        if attrs["mmfuse_fingerprint"] != fp and made_by != SPEC_SCHEMA:  # its settings are keyed otherwise
            raise ConfigError(f"--tune-storage {cfg.storage}: its study {name!r} was made by another version of "
                              f"mmfuse (spec schema {made_by!r}, this one {SPEC_SCHEMA}): use another storage "
                              "file, or delete this one to start over")
        if attrs["mmfuse_fingerprint"] != fp:
            before, now = flat_keys(attrs.get("mmfuse_identity", {})), flat_keys(ident)
            diff = [f"{k}: {before.get(k)!r} there, {now.get(k)!r} here" for k in sorted(set(before) | set(now))
                    if before.get(k) != now.get(k)][:3]
            raise ConfigError(
                f"--tune-storage {cfg.storage}: its study {name!r} was made by another bench configuration "
                f"({'; '.join(diff) or 'fingerprint ' + attrs['mmfuse_fingerprint'] + ' != ' + fp}): use another "
                "storage file, or delete this one to start over")
    else:
        study.set_user_attr("mmfuse_fingerprint", fp)
        study.set_user_attr("mmfuse_identity", ident)
    if not study.trials:
        defaults = defaults_of(spec, space)
        enqueued = values_of(space, defaults)
        outside = [n for n in active_names(space, defaults) if n not in params_of(enqueued)]
        # a default outside a user's narrowed space cannot be tried: trial 0 draws it, and says so
        study.enqueue_trial(enqueued, user_attrs={"defaults": not outside, "outside_space": outside})
    return study


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: cannot tell, so it counts
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_stale(study: Any) -> int:
    """Give up the running trials of this machine's processes that ended (a killed
    tuning): they are run again as new trials. Returns how many."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if owner is not None and owner != _owner() and not _alive(owner):
            study._storage.set_trial_user_attr(t._trial_id, DISCARDED, f"its process {owner} ended")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
    return n


def _counts(study: Any) -> tuple[int, int]:
    """``(finished, pending)`` trials that count towards the budget: finished is complete,
    pruned or failed; pending is waiting or running."""
    from optuna.trial import TrialState

    finished = pending = 0
    for t in study.get_trials(deepcopy=False):
        if DISCARDED in t.user_attrs:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            finished += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending += 1
    return finished, pending


def _ask(study: Any, budget: int) -> Any | None:
    """A new trial, or ``None`` when the budget is spent (a race past it is given up)."""
    from optuna.trial import TrialState

    finished, pending = _counts(study)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if finished + pending - len(waiting) >= budget:
        return None
    trial = study.ask()
    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and DISCARDED not in t.user_attrs and t.state != TrialState.WAITING)
    if ahead >= budget:
        study._storage.set_trial_user_attr(trial._trial_id, DISCARDED, "past the budget (another process took it)")
        study.tell(trial, state=TrialState.FAIL)
        return None
    trial.set_user_attr("owner", _owner())
    return trial


def _tell(study: Any, trial: Any, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("curve", list(outcome.curve))
    trial.set_user_attr("seconds", round(outcome.seconds, 3))
    if outcome.error is not None:
        trial.set_user_attr("error", outcome.error)
        study.tell(trial, state=TrialState.FAIL)
    elif outcome.pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, outcome.value)


def _reporter(trial: Any) -> Callable[[int, float], bool]:
    def report(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return bool(trial.should_prune())

    return report


@dataclass
class _Task:
    """One study of the tuning: one model on one dataset."""

    name: str
    dataset: str
    label: str
    spec: Any
    space: dict[str, Distribution]
    metric: str
    higher: bool
    study: Any = None
    started: float = 0.0
    ran: int = 0
    stale: int = 0
    cut_by_time: bool = False

    def defaults(self) -> dict[str, Any]:
        return defaults_of(self.spec, self.space)

    def next_trial(self, cfg: TuneConfig) -> tuple[Any, Any] | None:
        """``(trial, spec)`` of the next trial, or ``None`` when this study is done."""
        if cfg.time is not None and self.started and time.perf_counter() - self.started >= cfg.time:
            self.cut_by_time = True
            return None
        self.started = self.started or time.perf_counter()
        trial = _ask(self.study, cfg.trials)
        if trial is None:
            return None
        chosen = sample(trial, self.space, defaults=self.defaults())
        return trial, apply_params(self.spec, chosen)


@dataclass
class StudyResult:
    """One model's tuning on one dataset, as the report shows it.

    Attributes:
        dataset, label: the dataset and the model (``uni:<modality>`` for a baseline).
        metric, higher_is_better: the objective (the validation main metric).
        defaults: the model's default values of its space; best: the best trial's
            values (only what it changed is applied when retraining).
        best_value, default_value: validation scores of the best trial and of trial 0.
        trials: every counted trial: number, state, value, params, epochs, seconds.
        ran_now: trials run by this call (the others were in the storage already).
        importances: hyperparameter -> importance (Optuna's PED-ANOVA), if computable.
        note: what cut the study short, if anything.
    """

    dataset: str
    label: str
    metric: str
    higher_is_better: bool
    defaults: dict[str, Any]
    best: dict[str, Any]
    best_value: float | None
    default_value: float | None
    trials: list[dict[str, Any]]
    ran_now: int
    importances: dict[str, float] | None = None
    note: str | None = None

    @property
    def changes(self) -> dict[str, Any]:
        """The best values that differ from the defaults."""
        return {k: v for k, v in self.best.items() if self.defaults.get(k) != v}

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _importances(study: Any) -> dict[str, float] | None:
    import warnings

    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(done) < 3:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except Exception:  # noqa: BLE001 - too few or too alike trials: no importances
        return None
    return {k: round(float(v), 4) for k, v in sorted(found.items(), key=lambda kv: -kv[1])}


def _result(task: _Task) -> StudyResult:
    from optuna.trial import TrialState

    study = task.study
    rows: list[dict[str, Any]] = []
    default_value = None
    for t in study.get_trials(deepcopy=False):
        if DISCARDED in t.user_attrs or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "defaults": bool(t.user_attrs.get("defaults", False)),
                     "epochs": len(t.intermediate_values) or len(t.user_attrs.get("curve", [])),
                     "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error"),
                     "params": params_of(t.params), "curve": t.user_attrs.get("curve", [])})
        if t.user_attrs.get("defaults") and t.state == TrialState.COMPLETE and default_value is None:
            default_value = t.value
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if DISCARDED not in t.user_attrs]
    defaults = task.defaults()
    best, best_value = dict(defaults), None
    if complete:
        top = max(complete, key=lambda t: t.value) if task.higher else min(complete, key=lambda t: t.value)
        best_value = top.value
        best.update(params_of(top.params))
    notes = []
    if task.cut_by_time:
        notes.append(f"stopped by the time limit after {len(rows)} trial{'s' if len(rows) != 1 else ''}")
    first = next((t for t in study.get_trials(deepcopy=False) if t.number == 0), None)
    if first is not None and first.user_attrs.get("outside_space"):
        notes.append(f"trial 0 is not the defaults: {', '.join(first.user_attrs['outside_space'])} outside the space")
    if task.stale:
        notes.append(f"{task.stale} trial(s) of an ended process run again")
    return StudyResult(dataset=task.dataset, label=task.label, metric=task.metric, higher_is_better=task.higher,
                       defaults=defaults, best=best, best_value=best_value, default_value=default_value,
                       trials=rows, ran_now=task.ran, importances=_importances(study),
                       note="; ".join(notes) or None)


def _tasks(runs: Sequence[Any], cfg: TuneConfig, metric_of: Callable[[Any], tuple[str, bool]]) -> list[_Task]:
    """One study per dataset x model: its seed-0 standard run, with the tuning's epoch limit."""
    from mmfuse.experiment.specs import Variant

    tasks: dict[str, _Task] = {}
    for run in runs:
        spec = run.spec
        if spec.variant not in (Variant.STANDARD, Variant.UNIMODAL) or spec.seed != 0:
            continue
        name = f"{spec.data.display}:{spec.label}"
        if name in tasks:
            continue
        train = spec.train.replace(epochs=cfg.epochs or spec.train.epochs, progress=False)
        spec = spec.replace(train=train)
        metric, higher = metric_of(spec)
        tasks[name] = _Task(name=name, dataset=spec.data.display, label=spec.label, spec=spec,
                            space=model_space(spec, cfg.space), metric=metric, higher=higher)
    return list(tasks.values())


def _metric_of(spec: Any) -> tuple[str, bool]:
    from mmfuse.experiment.run import load_data, main_metric_of

    return main_metric_of(load_data(spec.data).task)


def tune_grid(
    runs: Sequence[Any],
    cfg: TuneConfig,
    *,
    executor: str = "serial",
    out: Path | None = None,
    metric_of: Callable[[Any], tuple[str, bool]] | None = None,
    on_trial: Callable[[str, int, TrialOutcome], None] | None = None,
    ray_address: str | None = None,
    ray_cpus: int | None = None,
) -> list[StudyResult]:
    """Tune every model of ``runs`` (a bench grid) and return one result per study.

    ``executor``: ``"ray"`` runs the studies at once, one trial of each in flight as a
    Ray task (a storage is needed for the tasks to report epochs: without
    ``cfg.storage``, a journal file ``out/tuning/studies.journal``); anything else runs
    the trials here, one after the other. ``on_trial(study, number, outcome)`` is
    called after each trial (progress). ``ray_address`` / ``ray_cpus``: the cluster to
    join (default ``$RAY_ADDRESS``), or the CPUs of a local instance, when Ray is not
    initialised yet.
    """
    tasks = _tasks(runs, cfg, metric_of or _metric_of)
    if executor == "ray" and cfg.storage is None:
        if out is None:
            raise ConfigError("tune on ray: expected --tune-storage (a file every Ray task can open), got none")
        from dataclasses import replace

        cfg = replace(cfg, storage=str(out / "tuning" / "studies.journal"))
    for task in tasks:
        task.study = open_study(task.name, task.spec, task.space, task.metric, task.higher, cfg)
        task.stale = _fail_stale(task.study)
    if executor == "ray":
        _tune_ray(tasks, cfg, on_trial, ray_address or os.environ.get("RAY_ADDRESS") or None, ray_cpus)
    else:
        for task in tasks:
            while (nxt := task.next_trial(cfg)) is not None:
                trial, spec = nxt
                outcome = run_trial(spec, task.metric, _reporter(trial))
                _tell(task.study, trial, outcome)
                task.ran += 1
                if on_trial is not None:
                    on_trial(task.name, trial.number, outcome)
    return [_result(t) for t in tasks]


def _remote_trial(spec_json: dict[str, Any], metric: str, storage: str, study_name: str, trial_id: int,
                  pruner: str, threads: int) -> TrialOutcome:
    """A trial in a Ray task: it opens the study to report each epoch, so the pruner sees them."""
    import optuna

    from mmfuse.bench.executors import prepare_worker
    from mmfuse.experiment.specs import ExperimentSpec

    prepare_worker(threads)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage), pruner=make_pruner(pruner))
    trial = optuna.trial.Trial(study, trial_id)
    return run_trial(ExperimentSpec.from_json(spec_json), metric, _reporter(trial))


def _tune_ray(tasks: list[_Task], cfg: TuneConfig, on_trial: Callable[[str, int, TrialOutcome], None] | None,
              address: str | None, cpus: int | None) -> None:
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=0)(_remote_trial)
    in_flight: dict[Any, tuple[_Task, Any]] = {}

    def submit(task: _Task) -> None:
        nxt = task.next_trial(cfg)
        if nxt is None:
            return
        trial, spec = nxt
        ref = remote.remote(spec.to_json(), task.metric, cfg.storage, task.name, trial._trial_id, cfg.pruner, 1)
        in_flight[ref] = (task, trial)

    for task in tasks:
        submit(task)
    while in_flight:
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            task, trial = in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost worker: a failed trial
                outcome = TrialOutcome(None, False, (), f"ray task failed: {type(exc).__name__}: {exc}", 0.0)
            _tell(task.study, trial, outcome)
            task.ran += 1
            if on_trial is not None:
                on_trial(task.name, trial.number, outcome)
            submit(task)


# ---------------------------------------------------------------- after tuning
def tuned_runs(runs: Sequence[Any], results: Sequence[StudyResult]) -> list[Any]:
    """``runs`` with each model's best values (those that differ from its defaults): the
    same seeds and variants, retrained; a model whose best is its defaults keeps its
    runs (and their trained models)."""
    from dataclasses import replace

    best = {(r.dataset, r.label): r.changes for r in results}
    out = []
    for run in runs:
        changes = best.get((run.spec.data.display, run.spec.label), {})
        out.append(replace(run, spec=apply_params(run.spec, changes)) if changes else run)
    return out


def trials_csv(results: Sequence[StudyResult]) -> str:
    """Every counted trial, one row each: dataset, model, number, state, value, epochs,
    seconds, defaults, error, then one column per hyperparameter."""
    names: list[str] = []
    for r in results:
        for t in r.trials:
            names += [k for k in t["params"] if k not in names]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "model", "metric", "number", "state", "value", "epochs", "seconds", "defaults", "error",
                *names])
    for r in results:
        for t in r.trials:
            w.writerow([r.dataset, r.label, r.metric, t["number"], t["state"], t["value"], t["epochs"], t["seconds"],
                        t["defaults"], t["error"] or "", *[t["params"].get(n, "") for n in names]])
    return buf.getvalue()


def best_so_far(result: StudyResult) -> list[tuple[int, float]]:
    """``(trial number, best validation score of the trials up to it)`` over the completed trials."""
    out: list[tuple[int, float]] = []
    best: float | None = None
    for t in sorted(result.trials, key=lambda t: t["number"]):
        if t["state"] != "complete" or t["value"] is None:
            continue
        v = float(t["value"])
        best = v if best is None else (max(best, v) if result.higher_is_better else min(best, v))
        out.append((t["number"], best))
    return out

