"""Training settings and results, as plain dataclasses (no Lightning import here).

Shape legend: ``b`` batch (``batch_size``); nothing here holds tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from mmfuse.errors import ConfigError, check_fraction
from mmfuse.space import Categorical, Distribution, Float

__all__ = [  # noqa: F822 - BALANCE_METHODS is read from the registry on access (module __getattr__)
    "ACCELERATORS", "BALANCE_METHODS", "BalanceOptions", "FitResult", "TrainConfig", "TrainConfigError",
]

#: Lightning's precision names
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16")
#: accelerators a TrainConfig accepts (Lightning's names; ``cuda`` is ``gpu``)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range is [0, 2**32)
#: the flat training settings of mmfuse before :class:`BalanceOptions`, and their names now
#: (an old name is refused with its new one: one spelling per setting)
RENAMED_BALANCE_SETTINGS = {"balance_weight": "balance.weight", "ogm_alpha": "balance.alpha",
                            "gblend_every": "balance.every", "gblend_floor": "balance.floor",
                            "pareto_gamma": "balance.gamma"}
#: the names ``TrainConfig.calibrate`` takes (see :mod:`mmfuse.training.calibration`)
CALIBRATE_METHODS = ("temperature",)


class TrainConfigError(ConfigError):
    """A training setting out of range, or an unknown setting name. Names the setting."""


def __getattr__(name: str) -> Any:
    if name == "BALANCE_METHODS":  # the registry's names now (a method registered later is in it too)
        return tuple(_balance_registry())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _balance_registry() -> dict[str, tuple[str, ...]]:
    """method name -> the :class:`BalanceOptions` fields it reads, from the registry of
    :mod:`mmfuse.training.balance` (imported here on first use: it imports torch and the
    model classes, never Lightning, and it imports this module)."""
    from mmfuse.training.balance import balance_method_options

    return balance_method_options()


def _positive_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
        raise TrainConfigError(f"{name}: expected a positive finite float, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class BalanceOptions:
    """Balanced multimodal training: the method and its options (:mod:`mmfuse.training.balance`).

    Set as ``balance=<method>`` and ``balance.<option>=value`` (``train.`` prefixed or
    not; YAML ``balance: {method: aux, weight: 2}``); the bench's ``--balance`` chooses the
    methods of its balanced variants and ``balance.<option>`` their options. Each method
    reads only its own options (see :func:`mmfuse.training.balance.balance_method_options`);
    the training key holds the method and those options, and nothing at all with
    balancing off (:meth:`identity`).

    Attributes:
        method: ``None`` (off) or a registered method
            (:func:`mmfuse.training.balance.balance_methods`: ``aux``, ``gblend``,
            ``ogm_ge``, ``mmpareto``).
        weight: ``aux``: weight ``w`` of the per-modality auxiliary losses.
        alpha: ``ogm_ge``: OGM-GE's modulation strength ``alpha``.
        every: ``gblend``: epochs between G-Blending's weight re-estimates.
        floor: ``gblend``: G-Blending's floor on ``|O|``, the change of the train-val
            gap, in nats.
        gamma: ``mmpareto``: MMPareto's gradient magnitude factor ``gamma``.
    """

    method: str | None = None
    weight: float = 1.0
    alpha: float = 0.8
    every: int = 1
    floor: float = 0.01
    gamma: float = 1.5

    def __post_init__(self) -> None:
        if self.method is not None:
            methods = _balance_registry()
            if self.method not in methods:
                raise TrainConfigError(f"balance.method: expected None or one of {list(methods)}, "
                                       f"got {self.method!r}")
        for name in ("weight", "alpha", "floor", "gamma"):
            object.__setattr__(self, name, _positive_float(f"balance.{name}", getattr(self, name)))
        v = self.every
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TrainConfigError(f"balance.every: expected a positive int, got {v!r}")

    @classmethod
    def option_names(cls) -> list[str]:
        """The options (every field but ``method``)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "method"]

    def merged(self, value: Any) -> BalanceOptions:
        """These options with ``value`` applied: ``None`` (off) or a method name sets the
        method and keeps the options; a mapping (or another BalanceOptions) sets the fields it
        names. An unknown name, or a name of mmfuse before these options, raises."""
        if isinstance(value, BalanceOptions):
            return value
        if value is None or isinstance(value, str):
            return dataclasses.replace(self, method=value)
        if not isinstance(value, Mapping):
            raise TrainConfigError(f"balance: expected a method name, null or a mapping of options "
                                   f"(method, {', '.join(self.option_names())}), got {value!r}")
        names = [f.name for f in dataclasses.fields(self)]
        for key in value:
            if key not in names:
                old = RENAMED_BALANCE_SETTINGS.get(str(key))
                hint = f" ({key} is now {old})" if old else ""
                raise TrainConfigError(f"unknown balance option {key!r}{hint}: expected one of {names}")
        return dataclasses.replace(self, **dict(value))

    def reads(self) -> tuple[str, ...]:
        """The options the method reads (none with balancing off)."""
        return _balance_registry()[self.method] if self.method is not None else ()

    def identity(self) -> dict[str, Any]:
        """What enters the training key: ``{}`` with balancing off, else the method and the
        options it reads."""
        if self.method is None:
            return {}
        return {"method": self.method, **{name: getattr(self, name) for name in self.reads()}}

    def unread(self, methods: Sequence[str | None]) -> list[str]:
        """The options set to other than their default that none of ``methods`` reads
        (a setting accepted and then ignored)."""
        registry = _balance_registry()
        read = {o for m in methods if m is not None for o in registry.get(m, ())}
        default = BalanceOptions()
        return [n for n in self.option_names() if getattr(self, n) != getattr(default, n) and n not in read]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> BalanceOptions:
        return cls().merged(data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model (frozen: :meth:`replace` makes a changed copy).

    Attributes:
        epochs: most epochs to run (early stopping may stop sooner).
        batch_size: training batch size ``b``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: stop after this many epochs without a lower validation loss
            (``0``: never stop early).
        seed: seed of everything random in the fit (weights are initialised by
            whoever built the model: seed before building, too).
        modality_dropout: per-sample, per-modality drop rate of training batches
            (:class:`mmfuse.data.transforms.ModalityDropout`); 0 disables it.
        accelerator: Lightning accelerator: one of :data:`ACCELERATORS`; asking for a
            device that torch cannot see is refused by :func:`fit` before Lightning starts.
        devices: Lightning devices: a positive count, ``-1`` (all), ``"auto"``, or a
            non-empty list of device indices.
        strategy: Lightning strategy (``"auto"``, ``"ddp"``...).
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``...).
        num_nodes: number of machines.
        num_workers: DataLoader worker processes.
        progress: show a progress bar (epochs counted from 1: ``Epoch 2/2``).
        deterministic: use only deterministic algorithms during the fit (``True``,
            ``False``, or ``"warn"``: warn where an algorithm is not deterministic).
        max_time: stop after this many seconds of fitting (``None``: no limit); checked
            between chunks of up to 64 minibatches (see ``FusionModule.training_step``).
        verbose: let Lightning print what it prints (accelerator lines, tips, stop
            reasons, advice); by default only the progress bar and errors show.
        threads: torch intra-op threads during the fit: a positive int, or ``"auto"``
            (see :func:`mmfuse.training.threads.auto_threads`: 1 for small models,
            where more threads only add synchronisation). The previous count is restored
            after the fit; the count used is in :attr:`FitResult.threads`.
        compile: train through ``torch.compile(model)`` (validation and the returned
            model stay eager). Pays a compilation of tens of seconds on the first fit
            of each architecture; see ``benchmarks/results/fit_overhead*.md``.
        balance: balanced multimodal training (:mod:`mmfuse.training.balance`): a
            :class:`BalanceOptions`, the method (``None``: off) and its options. Given as
            a method name (``TrainConfig(balance="aux")``), ``None`` or a mapping of its
            fields, it is made one; :meth:`replace` with a name or a mapping keeps the
            options not named.
        calibrate: post-hoc calibration fitted on the validation split after training:
            ``None`` (off) or ``"temperature"`` (one temperature ``T`` that divides the
            model's output, stored in the model; :mod:`mmfuse.training.calibration`).
            Classification tasks only.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    modality_dropout: float = 0.0
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1
    num_workers: int = 0
    progress: bool = True
    deterministic: bool | str = True
    max_time: float | None = None
    verbose: bool = False
    threads: int | str = "auto"
    compile: bool = False
    balance: BalanceOptions = field(default_factory=BalanceOptions)
    calibrate: str | None = None

    #: what ``mmfuse bench --tune`` tries for the optimiser's settings (see :mod:`mmfuse.space`):
    #: learning rate and weight decay on log scales around the bench's 3e-3 and 1e-4, and
    #: batch sizes about the bench's 128
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": Float(1e-4, 1e-2, log=True),
        "weight_decay": Float(1e-6, 1e-2, log=True),
        "batch_size": Categorical((32, 64, 128, 256)),
    }

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TrainConfigError(f"{name}: expected a positive int, got {v!r}")

        for name in ("epochs", "batch_size", "num_nodes"):
            positive(name)
        for name in ("patience", "num_workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise TrainConfigError(f"{name}: expected a non-negative int, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise TrainConfigError(f"seed: expected an int in [0, {SEED_MAX}], got {self.seed!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v < 0 or (name == "lr" and v == 0):
                kind = "positive" if name == "lr" else "non-negative"
                raise TrainConfigError(f"{name}: expected a finite {kind} float, got {v!r}")
        check_fraction("modality_dropout", self.modality_dropout, error=TrainConfigError)
        mt = self.max_time
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, (int, float)) or not 0 < mt < math.inf):
            raise TrainConfigError(f"max_time: expected positive seconds or None, got {mt!r}")
        for name in ("progress", "verbose", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TrainConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if not isinstance(self.deterministic, bool) and self.deterministic != "warn":
            raise TrainConfigError(f"deterministic: expected true, false or 'warn', got {self.deterministic!r}")
        t = self.threads
        if t != "auto" and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise TrainConfigError(f"threads: expected 'auto' or a positive int, got {t!r}")
        acc = self.accelerator
        if not isinstance(acc, str) or acc.lower() not in ACCELERATORS:
            raise TrainConfigError(f"accelerator: expected one of {list(ACCELERATORS)}, got {acc!r}")
        object.__setattr__(self, "accelerator", acc.lower())
        self._check_devices()
        for name in ("strategy", "precision"):
            if not isinstance(getattr(self, name), (str, int)) or isinstance(getattr(self, name), bool):
                raise TrainConfigError(f"{name}: expected a string, got {getattr(self, name)!r}")
        self._check_balance()
        if self.calibrate is not None and self.calibrate not in CALIBRATE_METHODS:
            raise TrainConfigError(f"calibrate: expected None or one of {list(CALIBRATE_METHODS)}, "
                                   f"got {self.calibrate!r}")
        precision = str(self.precision)
        if precision in ("32", "16", "bf16", "64"):
            precision = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}[precision]
        if precision not in PRECISIONS:
            raise TrainConfigError(f"precision: expected one of {list(PRECISIONS)} (or 32, 16, bf16, 64), "
                                   f"got {self.precision!r}")
        object.__setattr__(self, "precision", precision)

    def _check_devices(self) -> None:
        d = self.devices
        bad = TrainConfigError(
            f"devices: expected a positive count, -1 (all), 'auto' or a non-empty list of device "
            f"indices, got {d!r}"
        )
        if isinstance(d, bool):
            raise bad
        if isinstance(d, int):
            if d == 0 or d < -1:
                raise bad
        elif isinstance(d, str):
            text = d.strip()
            if "," in text:  # Lightning's "0,1" / "1,": device indices
                parts = [p.strip() for p in text.split(",") if p.strip()]
                if not parts or not all(p.isdigit() for p in parts):
                    raise bad
            elif text not in ("auto", "-1") and not (text.isdigit() and int(text) > 0):
                raise bad
        elif isinstance(d, (list, tuple)):
            if not d or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d):
                raise bad
        else:
            raise bad

    def _check_balance(self) -> None:
        if not isinstance(self.balance, BalanceOptions):
            object.__setattr__(self, "balance", BalanceOptions().merged(self.balance))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrainConfig:
        """A TrainConfig from :meth:`to_json`'s form; unknown names raise, an old flat balance
        setting (``balance_weight``) with its new name."""
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"train: expected a mapping, got {type(data).__name__}")
        cls.check_names(data, where="train")
        return cls(**data)

    @classmethod
    def check_names(cls, names: Iterable[str], *, where: str = "TrainConfig") -> None:
        """Raise :class:`TrainConfigError` on a name that is not a field (an old flat balance
        setting is named with its new name)."""
        fields = cls.field_names()
        for name in names:
            if name in RENAMED_BALANCE_SETTINGS:
                raise TrainConfigError(f"{where}: {name!r} is now {RENAMED_BALANCE_SETTINGS[name]!r} "
                                       f"(balance.<option>=value, or YAML balance: {{<option>: ...}})")
            if name not in fields:
                raise TrainConfigError(f"unknown {where} field {name!r}: expected one of {fields}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (unknown names raise :class:`TrainConfigError`);
        ``balance`` given as a method name or a mapping is merged over the current options."""
        self.check_names(sorted(changes))
        if "balance" in changes:
            changes["balance"] = self.balance.merged(changes["balance"])
        return dataclasses.replace(self, **changes)


@dataclass
class FitResult:
    """What :func:`mmfuse.training.fit` returns.

    Attributes:
        model: the trained model with its best validation weights, in eval mode.
        train_time_s: wall seconds spent fitting (Trainer set-up included).
        epochs_run: epochs completed, counting those of an interrupted run resumed.
        val_metrics: :func:`~mmfuse.training.evaluate` on the validation split with
            the best weights (empty without a validation split).
        checkpoint: ``out_dir/model.safetensors`` (best weights + config), or None.
        best_epoch: 0-based epoch of the best validation loss (-1 without validation).
        history: per-epoch ``{"epoch", "train_loss", "val_loss"}`` (+ ``"val_accuracy"``
            for classification tasks).
        is_global_zero: False in the other processes of a multi-process run (DDP), so
            callers report and write files once.
        threads: torch intra-op threads the fit ran with (``TrainConfig.threads`` resolved).
        num_workers: DataLoader worker processes it ran with.
    """

    model: nn.Module
    train_time_s: float
    epochs_run: int
    val_metrics: dict[str, float]
    checkpoint: Path | None = None
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    is_global_zero: bool = True
    threads: int = 1
    num_workers: int = 0
