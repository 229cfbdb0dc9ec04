"""Settings from YAML files and ``key=value`` overrides, for ``mmfuse train`` and ``mmfuse bench`` alike.

Shape legend: none (no tensors here).

Keys (an override ``key=value`` wins over the same key in the YAML file):

- a :class:`~mmfuse.training.TrainConfig` field, bare or under ``train.``:
  ``epochs=5``, ``train.lr=3e-4``;
- a model setting: ``hidden_dim=32``, ``dropout=0.2``, ``modalities=[image,audio]``;
- ``data.<option>``: an option of the dataset's loader (``data.task=synergy``), and
  ``data.seed`` for other splits;
- ``fusion.<option>``: an option of the fusion (``fusion.gate=feature``);
- ``encoder.<modality>.<option>``: an option of one modality's encoder.

Values are read as YAML (``true``, ``[1, 2]``, ``null``), and numbers such as ``1e-3``
as numbers. A YAML file holds the same keys, flat or nested (``data: {task: synergy}``).

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
from mmfuse.training.config import TrainConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "MODEL_KEYS",
    "experiment_from_settings",
    "flatten_settings",
    "parse_overrides",
    "parse_value",
    "read_yaml",
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


_NESTED = ("data", "fusion", "encoder", "encoders", "train")


def flatten_settings(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections (``data: {task: x}``) as dotted keys (``data.task``)."""
    out: dict[str, Any] = {}
    for key, val in tree.items():
        name = f"{prefix}{key}"
        if isinstance(val, Mapping) and name.split(".")[0] in _NESTED:
            out.update(flatten_settings(val, f"{name}."))
        else:
            out[name] = val
    return out


def _coerce_train(key: str, value: Any) -> Any:
    """Numbers given as ints where the field is a float (``lr=1``) become floats."""
    f = TrainConfig.__dataclass_fields__[key]
    default = f.default if f.default is not dataclasses.MISSING else None
    if (isinstance(default, float) or key == "max_time") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def train_config(settings: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: TrainConfig's defaults) with the TrainConfig fields among ``settings``
    (bare or ``train.``-prefixed); any other key raises."""
    names = TrainConfig.field_names()
    changes: dict[str, Any] = {}
    for key, value in settings.items():
        name = key[6:] if key.startswith("train.") else key
        if name not in names:
            raise ConfigError(f"unknown training setting {key!r}: expected one of {', '.join(names)}")
        changes[name] = _coerce_train(name, value)
    return (base or TrainConfig()).replace(**changes)


def _loader_options(dataset: str) -> list[str] | None:
    """The keyword options of a dataset's loader (``None`` if it takes ``**options``)."""
    from mmfuse.data import _base as data_base
    from mmfuse.data import list_datasets

    names = list_datasets()
    if dataset not in names:
        from mmfuse.data import USER_DATASETS

        builtin = [n for n in names if n not in USER_DATASETS]
        raise ConfigError(f"unknown dataset {dataset!r}: expected one of {builtin} (or --data PATH for your own table)")
    params = inspect.signature(data_base._DATASETS[dataset]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return sorted(k for k in params if k != "root")


def _loader_task_default(dataset: str) -> Any:
    """The default of a loader's ``task`` option, if it has one."""
    from mmfuse.data import _base as data_base

    param = inspect.signature(data_base._DATASETS[dataset]).parameters.get("task")
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
    dataset: str,
    fusion: str | None = None,
    unimodal: str | None = None,
    data_root: str | None = None,
    train_base: TrainConfig | None = None,
) -> ExperimentSpec:
    """One :class:`ExperimentSpec` from flat settings (see the module docstring).

    Raises:
        ConfigError: a malformed or unknown key (the message lists the valid ones) or a bad value.
    """
    loader_opts = _loader_options(dataset)
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
        bare = key[6:] if key.startswith("train.") else key
        if bare in TrainConfig.field_names():
            train[bare] = value
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
        else:
            valid = (TrainConfig.field_names() + list(MODEL_KEYS) + ["data.seed"]
                     + [f"data.{o}" for o in (loader_opts or ["<option>"]) if o != "seed"]
                     + [f"fusion.{o}" for o in fusion_opts] + ["encoder.<modality>.<option>",
                                                                "encoders.<modality>=<hf:...|timm:...>"])
            raise ConfigError(f"unknown setting {key!r}: expected one of {', '.join(valid)}")
    task_param = _loader_task_default(dataset)
    if task_param is not None and "task" not in data:
        data["task"] = task_param  # say which task a run used, in its settings and its name
    label = None
    if dataset == "table":  # the user's table: named after its file
        label = data.get("name") or Path(str(data.get("path", "table"))).name
    return ExperimentSpec(
        data=DataSpec(name=dataset, options=data, seed=data_seed, root=data_root, label=label, encoders=pretrained),
        model=ModelSpec(fusion=fusion if unimodal is None else None, unimodal=unimodal,
                        fusion_options=fusion_values, encoder_options=encoders, **model),
        train=train_config(train, train_base),
    )
