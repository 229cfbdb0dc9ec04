"""Settings from YAML files and ``key=value`` overrides, for ``mmfuse train`` and ``mmfuse bench`` alike.

Shape legend: none (no tensors here).

Keys (an override ``key=value`` wins over the same key in the YAML file):

- a :class:`~mmfuse.training.TrainConfig` field, bare or under ``train.``:
  ``epochs=5``, ``train.lr=3e-4``; balanced training as ``balance=<method>`` and
  ``balance.<option>=value`` (:class:`~mmfuse.training.config.BalanceOptions`:
  ``balance.weight=2``; YAML ``balance: {method: aux, weight: 2}``);
- a model setting: ``hidden_dim=32``, ``dropout=0.2``, ``modalities=[image,audio]``;
- ``data.<option>``: an option of the dataset's loader (``data.task=synergy``), and
  ``data.seed`` for other splits; for a user's own table, ``data.path`` and the
  :class:`~mmfuse.data.TableSource` fields (``data.target``, ``data.kinds``,
  ``data.split``, ...: see :func:`table_settings` for their one grammar);
- ``fusion.<option>``: an option of the fusion (``fusion.gate=feature``);
- ``encoder.<modality>.<option>``: an option of one modality's encoder.

Values are read as YAML (``true``, ``[1, 2]``, ``null``), and numbers such as ``1e-3``
as numbers. A YAML file holds the same keys, flat or nested (``data: {task: synergy}``).

Precedence, in ``mmfuse train`` and ``mmfuse bench`` alike: the YAML file, then
``key=value``, then the flags given; a flag not given sets nothing, so it never
overwrites a value given another way.

YAML files are read by :func:`read_yaml`: at most 1 MiB, UTF-8, and without aliases
(``&a`` / ``*a``): nested aliases expand exponentially (a nine-line file can ask for
gigabytes), and no mmfuse setting needs them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.experiment.specs import DataSpec, ExperimentSpec, ModelSpec
from mmfuse.training.config import RENAMED_BALANCE_SETTINGS, BalanceOptions, TrainConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "MODEL_KEYS",
    "TABLE_FLAGS",
    "check_balance_read",
    "experiment_from_settings",
    "flatten_settings",
    "is_train_setting",
    "parse_overrides",
    "parse_value",
    "read_yaml",
    "table_loader_options",
    "table_option_names",
    "table_settings",
    "train_config",
]

MAX_CONFIG_BYTES = 1 << 20
MODEL_KEYS = ("hidden_dim", "dropout", "modalities")


def _loader() -> type:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """A safe loader that refuses aliases (exponential expansion) instead of resolving them."""

        def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: aliases are "
                                  "not allowed in mmfuse settings (write the value out)")
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_yaml(path: str | os.PathLike[str], *, what: str = "config file") -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file is ``{}``), or :class:`ConfigError`."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {str(p)!r}: {size} bytes, more than the {MAX_CONFIG_BYTES} a settings file may have")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(p)!r}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        loaded = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(p)!r}: not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{what} {str(p)!r}: nested too deeply to be settings") from exc
    except ConfigError as exc:
        raise ConfigError(f"{what} {str(p)!r}: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{what} {str(p)!r}: expected a mapping of settings, got {type(loaded).__name__}")
    return dict(loaded)


def parse_value(text: str) -> Any:
    """A command-line value as YAML (no aliases), with ``1e-3``-style numbers read as floats."""
    import yaml

    try:
        value = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ConfigError):
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=5", "fusion.gate=feature"]`` as ``{"epochs": 5, "fusion.gate": "feature"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"setting {item!r}: expected key=value (e.g. epochs=5)")
        out[key.strip()] = parse_value(value.strip())
    return out


#: the nested sections of a settings file and how many levels of names each has: an
#: option's own value may be a mapping (``data: {kinds: {age: categorical}}``,
#: ``fusion: {local_options: {dim: 8}}``) and stays one
_NESTED = {"data": 1, "fusion": 1, "train": 1, "encoders": 1, "encoder": 2}


def flatten_settings(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections (``data: {task: x}``) as dotted keys (``data.task``); an option whose
    value is a mapping (``data: {kinds: {age: categorical}}``) keeps it (``data.kinds``)."""
    out: dict[str, Any] = {}
    for key, val in tree.items():
        name = f"{prefix}{key}"
        head = name.split(".")[0]
        if isinstance(val, Mapping) and name.count(".") < _NESTED.get(head, 0):
            out.update(flatten_settings(val, f"{name}."))
        else:
            out[name] = val
    return out


# ----------------------------------------------------------------- a user's table
#: the table settings that have a flag of their own (``mmfuse train``, ``bench``, ``data inspect``):
#: the command line reads its flags by these names, and errors name the flag beside the setting
TABLE_FLAGS = {"path": "--data", "target": "--target", "modalities": "--modality", "kinds": "--kind",
               "task": "--task", "exclude": "--exclude", "split": "--split", "base_dir": "--base-dir"}


def table_option_names() -> list[str]:
    """The settings of a user's table: ``path`` and the :class:`~mmfuse.data.TableSource`
    fields (but ``seed``: the split seed is ``data.seed``, the run's)."""
    from mmfuse.data import TableSource

    return ["path", *sorted(f.name for f in dataclasses.fields(TableSource) if f.name not in ("path", "seed"))]


def _named(key: str) -> str:
    flag = TABLE_FLAGS.get(key)
    return f"data.{key}" + (f" ({flag})" if flag else "")


def _strings(key: str, value: Any, error: type[ConfigError]) -> list[str]:
    """A name, or a list of them, as a list (``"a"`` -> ``["a"]``)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(v, str) and v.strip() for v in items):
        raise error(f"{_named(key)}: expected a column name or a list of them, got {value!r}")
    return [v.strip() for v in items]


def _pairs(key: str, value: Any, form: str, error: type[ConfigError]) -> dict[str, str]:
    """A mapping, or ``"NAME=VALUE"`` strings (one or a list: the flag's form), as a mapping."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    out: dict[str, Any] = {}
    for item in _strings(key, value, error):
        # a column name may hold '=' (a kind never does); a modality name never does
        name, sep, rest = item.rpartition("=") if key == "kinds" else item.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise error(f"{_named(key)}: expected {form}, got {item!r}")
        if name.strip() in out:
            raise error(f"{_named(key)}: {name.strip()!r} given twice")
        out[name.strip()] = rest.strip()
    return out


def table_settings(options: Mapping[str, Any], *, require: bool = False,
                   error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """A user table's settings from any route (flags, ``data.<option>=value``, a YAML ``data:``
    section) in one grammar: the names are checked and the values normalized.

    The names are :func:`table_option_names`. The forms besides the field's own:

    - ``target``: ``"a,b"`` or a list (each of which may hold commas) for several columns;
    - ``modalities``: ``NAME=COL[,COL...]`` strings (``--modality``), or a mapping of
      name -> columns (a list, or one comma-separated string);
    - ``kinds``: ``COL=KIND`` strings (``--kind``), or a mapping of column -> kind;
    - ``exclude``: one column or a list;
    - ``split``: a column of train/val/test, ``group:COL`` (``--split``) or ``{group: COL}``;
    - ``image_size``: ``n`` for ``[n, n]``.

    The values themselves (a kind, a task, a fraction) are checked by
    :class:`~mmfuse.data.TableSource` (a :class:`~mmfuse.data.DataError`).

    ``require``: the settings are complete, so ``path`` and ``target`` must be among them.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), a malformed value,
            or (``require``) no ``path`` or ``target``.
    """
    names = table_option_names()
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in names:
            raise error(f"unknown setting 'data.{key}' of your own table: expected one of "
                        + ", ".join(f"data.{n}" for n in [*names, "seed"]))
        if value is None and key in ("kinds", "exclude"):
            out[key] = {} if key == "kinds" else []  # an empty YAML entry: none
        elif value is None or key not in ("path", "base_dir", "target", "modalities", "kinds", "exclude", "split",
                                          "image_size"):
            out[key] = value  # None sets the default (split: null is the random split); TableSource checks
        elif key in ("path", "base_dir"):
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise error(f"{_named(key)}: expected a path, got {value!r}")
            out[key] = str(value)
        elif key == "target":
            cols = [c.strip() for v in _strings(key, value, error) for c in v.split(",") if c.strip()]
            out[key] = cols[0] if len(cols) == 1 else cols
        elif key == "modalities":
            mods = {}
            for name, cols in _pairs(key, value, "NAME=COL[,COL...]", error).items():
                mods[name] = [c.strip() for v in _strings(f"{key}.{name}", cols, error) for c in v.split(",")
                              if c.strip()]
            out[key] = mods
        elif key == "kinds":
            out[key] = _pairs(key, value, "COL=KIND", error)
        elif key == "exclude":
            out[key] = _strings(key, value, error)
        elif key == "split":
            if isinstance(value, str) and value.startswith("group:"):
                if not value[6:].strip():
                    raise error(f"{_named(key)}: expected group:COL naming the group column, got {value!r}")
                value = {"group": value[6:].strip()}
            if not (isinstance(value, str) and value.strip()) and not (
                    isinstance(value, Mapping) and set(value) == {"group"} and isinstance(value["group"], str)):
                raise error(f"{_named(key)}: expected a column of train/val/test, group:COL or {{group: COL}}, "
                            f"got {value!r}")
            out[key] = dict(value) if isinstance(value, Mapping) else value
        else:  # image_size
            out[key] = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    for key in ("path", "target") if require else ():
        if out.get(key) is None:
            raise error(f"your own table: expected {_named(key)} naming the "
                        + ("table file" if key == "path" else "target column"))
    return out


def table_loader_options(options: Mapping[str, Any], *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The ``table`` dataset's loader options from a user table's settings (:func:`table_settings`):
    every :class:`~mmfuse.data.TableSource` field, checked, and the table's fingerprint, so a
    changed file is other data (a new training key), never a stale result.

    Raises:
        ConfigError: a bad setting, or no ``path`` or ``target``.
        DataError: a bad value, or no file at ``path``.
    """
    from mmfuse.data import table_options

    opts = table_settings(options, require=True, error=error)
    return table_options(opts.pop("path"), target=opts.pop("target"), **opts)


def _coerce_train(key: str, value: Any) -> Any:
    """Numbers given as ints where the field is a float (``lr=1``) become floats."""
    f = TrainConfig.__dataclass_fields__[key]
    default = f.default if f.default is not dataclasses.MISSING else None
    if (isinstance(default, float) or key == "max_time") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def is_train_setting(key: str) -> bool:
    """Whether ``key`` names a training setting (:func:`train_config` reads it): a TrainConfig
    field or ``balance.<option>``, bare or ``train.``-prefixed, or an old flat balance name
    (which :func:`train_config` refuses with its new one)."""
    name = key.removeprefix("train.")
    return (name in TrainConfig.field_names() or name.startswith("balance.")
            or name in RENAMED_BALANCE_SETTINGS)


def train_config(settings: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: TrainConfig's defaults) with the training settings among ``settings``
    (bare or ``train.``-prefixed): TrainConfig fields, and ``balance.<option>`` merged over
    the ``balance`` given (a method name, or a mapping of options) and ``base``'s. Any other
    key raises; an old flat balance name (``balance_weight``) says its new one."""
    names = TrainConfig.field_names()
    changes: dict[str, Any] = {}
    balance: dict[str, Any] = {}
    for key, value in settings.items():
        name = key[6:] if key.startswith("train.") else key
        if name in RENAMED_BALANCE_SETTINGS:
            new = RENAMED_BALANCE_SETTINGS[name]
            raise ConfigError(f"training setting {key!r} is now {new!r}: write {new}={value}")
        if name.startswith("balance."):
            balance[name[8:]] = value
        elif name not in names:
            raise ConfigError(f"unknown training setting {key!r}: expected one of {', '.join(names)} "
                              f"or balance.<{'|'.join(['method', *BalanceOptions.option_names()])}>")
        else:
            changes[name] = _coerce_train(name, value)
    base = base or TrainConfig()
    if "balance" in changes or balance:
        changes["balance"] = base.balance.merged(changes.get("balance", base.balance)).merged(balance)
    return base.replace(**changes)


def _loader_options(dataset: str) -> list[str] | None:
    """The keyword options of a dataset's loader (``None`` if it takes ``**options``)."""
    from mmfuse.data import dataset_loader, list_datasets

    names = list_datasets()
    if dataset not in names:
        from mmfuse.data import USER_DATASETS

        builtin = [n for n in names if n not in USER_DATASETS]
        raise ConfigError(f"unknown dataset {dataset!r}: expected one of {builtin} (or --data PATH for your own table)")
    params = inspect.signature(dataset_loader(dataset)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return sorted(k for k in params if k != "root")


def _loader_task_default(dataset: str) -> Any:
    """The default of a loader's ``task`` option, if it has one."""
    from mmfuse.data import dataset_loader

    param = inspect.signature(dataset_loader(dataset)).parameters.get("task")
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def check_fusion_options(fusion: str, options: Mapping[str, Any]) -> None:
    """Unknown fusion or option names raise now, before any run starts."""
    from mmfuse.fusions import fusion_options, list_fusions

    if fusion not in list_fusions():
        raise ConfigError(f"unknown fusion {fusion!r}: expected one of {list_fusions()}")
    known = sorted(fusion_options(fusion))
    for opt in options:
        if opt not in known:
            raise ConfigError(f"fusion {fusion!r}: unknown option {opt!r}: expected one of {known}")


def experiment_from_settings(
    settings: Mapping[str, Any],
    *,
    dataset: str | None = None,
    fusion: str | None = None,
    unimodal: str | None = None,
    data_root: str | None = None,
    train_base: TrainConfig | None = None,
) -> ExperimentSpec:
    """One :class:`ExperimentSpec` from flat settings (see the module docstring).

    ``dataset`` None: ``table`` (a user's own table) where ``data.path`` is among the
    settings, else ``synthetic``. For ``table``, the ``data.<option>`` settings go through
    :func:`table_loader_options` (checked names, one grammar, the table's fingerprint).

    Raises:
        ConfigError: a malformed or unknown key (the message lists the valid ones) or a bad value.
    """
    if dataset is None:
        dataset = "table" if "data.path" in settings else "synthetic"
    elif dataset != "table" and "data.path" in settings:
        raise ConfigError(f"data.path {settings['data.path']!r} (--data, your own table) and dataset {dataset!r} "
                          "(--dataset): give one of them")
    loader_opts = _loader_options(dataset)  # None for the table: its names are checked below
    if unimodal is None:
        fusion = fusion or "gated"
        check_fusion_options(fusion, {})
    from mmfuse.fusions import fusion_options

    fusion_opts = sorted(fusion_options(fusion)) if unimodal is None and fusion else []
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}
    fusion_values: dict[str, Any] = {}
    encoders: dict[str, dict[str, Any]] = {}
    data_seed = 0
    pretrained: dict[str, str] = {}
    for key, value in settings.items():
        if is_train_setting(key):
            train[key] = value
        elif key in MODEL_KEYS:
            model[key] = value
        elif key == "data.seed":
            data_seed = value
        elif key.startswith("encoders.") and key.count(".") == 1:
            pretrained[key[9:]] = value
        elif key.startswith("data.") and (loader_opts is None or key[5:] in loader_opts):
            data[key[5:]] = value
        elif key.startswith("fusion.") and key[7:] in fusion_opts:
            fusion_values[key[7:]] = value
        elif key.startswith("encoder.") and key.count(".") >= 2:
            _, mod, opt = key.split(".", 2)
            encoders.setdefault(mod, {})[opt] = value
        elif key.startswith("data.") and key[5:] in table_option_names():
            raise ConfigError(f"setting {_named(key[5:])}: a setting of your own table, not of dataset {dataset!r}: "
                              "give the table with --data PATH (or data.path)")
        else:
            valid = (TrainConfig.field_names() + ["balance.<option>"] + list(MODEL_KEYS) + ["data.seed"]
                     + [f"data.{o}" for o in (loader_opts or ["<option>"]) if o != "seed"]
                     + [f"fusion.{o}" for o in fusion_opts] + ["encoder.<modality>.<option>",
                                                                "encoders.<modality>=<hf:...|timm:...>"])
            raise ConfigError(f"unknown setting {key!r}: expected one of {', '.join(valid)}")
    task_param = _loader_task_default(dataset)
    if task_param is not None and "task" not in data:
        data["task"] = task_param  # say which task a run used, in its settings and its name
    label = None
    if dataset == "table":  # the user's table: its settings checked and fingerprinted, named after its file
        data = table_loader_options(data)
        label = data.get("name") or Path(str(data["path"])).name
    train_cfg = train_config(train, train_base)
    check_balance_read(train_cfg.balance, [train_cfg.balance.method])
    return ExperimentSpec(
        data=DataSpec(name=dataset, options=data, seed=data_seed, root=data_root, label=label, encoders=pretrained),
        model=ModelSpec(fusion=fusion if unimodal is None else None, unimodal=unimodal,
                        fusion_options=fusion_values, encoder_options=encoders, **model),
        train=train_cfg,
    )


def check_balance_read(options: BalanceOptions, methods: Sequence[str | None],
                       error: type[ConfigError] = ConfigError) -> None:
    """Refuse balance options set to other than their default that none of ``methods`` reads
    (they would be accepted and ignored)."""
    from mmfuse.training.balance import balance_method_options

    unread = options.unread(methods)
    if unread:
        runs = [m for m in methods if m is not None]
        raise error(f"balance.{unread[0]}={getattr(options, unread[0])!r} is read by no balancing method that runs "
                    f"({', '.join(runs) if runs else 'balancing is off'}): "
                    + "; ".join(f"{m} reads {', '.join(o) or 'no option'}"
                                for m, o in balance_method_options().items()))
