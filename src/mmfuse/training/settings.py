"""Settings of one training run from ``key=value`` overrides and a YAML file, and the
run itself: what ``mmfuse train`` calls.

Shape legend: none (no tensors here).

Keys (an override ``key=value`` wins over the same key in the YAML file):

- a :class:`~mmfuse.training.TrainConfig` field: ``epochs=5``, ``lr=3e-4``;
- a model option: ``hidden_dim=32``, ``dropout=0.2``, ``modalities=[image,audio]``;
- ``data.<option>``: an option of the dataset's loader (``data.task=synergy``,
  ``data.seed=1`` for other splits);
- ``fusion.<option>``: an option of the fusion (``fusion.gate=feature``);
- ``encoder.<modality>.<option>``: an option of one modality's encoder
  (``encoder.text.num_layers=1``).

Values are read as YAML (``true``, ``[1, 2]``, ``null``), and numbers such as ``1e-3``
as numbers. A YAML file holds the same keys, flat or nested (``data: {task: synergy}``);
it may also name ``dataset`` and ``fusion``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mmfuse.training.config import TrainConfig, TrainConfigError

__all__ = ["RunSettings", "parse_value", "resolve_settings", "run_training"]

MODEL_KEYS = ("hidden_dim", "dropout", "modalities")


@dataclass
class RunSettings:
    """Everything one ``mmfuse train`` run needs, resolved and validated."""

    dataset: str
    fusion: str | None
    unimodal: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    fusion_options: dict[str, Any] = field(default_factory=dict)
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.fusion if self.unimodal is None else f"unimodal-{self.unimodal}"


def parse_value(text: str) -> Any:
    """A command-line value as YAML, with ``1e-3``-style numbers read as floats."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in tree.items():
        name = f"{prefix}{key}"
        if isinstance(val, Mapping) and name.split(".")[0] in ("data", "fusion", "encoder"):
            out.update(_flatten(val, f"{name}."))
        else:
            out[name] = val
    return out


def _loader_options(dataset: str) -> list[str] | None:
    """The keyword options of a dataset's loader (``None`` if it takes ``**options``)."""
    from mmfuse.data import _base as data_base
    from mmfuse.data import list_datasets

    names = list_datasets()
    if dataset not in names:
        raise TrainConfigError(f"unknown dataset {dataset!r}: expected one of {names}")
    params = inspect.signature(data_base._DATASETS[dataset]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return sorted(k for k in params if k != "root")


def _coerce_train(key: str, value: Any) -> Any:
    """Numbers given as ints where the field is a float (``lr=1``) become floats."""
    default = TrainConfig.__dataclass_fields__[key].default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if key == "max_time" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def resolve_settings(
    dataset: str | None,
    fusion: str | None,
    overrides: Sequence[str] = (),
    *,
    config_file: str | os.PathLike[str] | None = None,
    unimodal: str | None = None,
) -> RunSettings:
    """Validate and sort the keys of a YAML file and ``key=value`` overrides.

    Raises:
        TrainConfigError: a malformed override, an unknown key (the message lists the
            valid ones) or a bad value.
    """
    from mmfuse.fusions import fusion_options, list_fusions

    raw: dict[str, Any] = {}
    if config_file is not None:
        import yaml

        path = Path(config_file)
        if not path.is_file():
            raise TrainConfigError(f"--config: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise TrainConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        loaded = dict(loaded)
        dataset = dataset or loaded.pop("dataset", None)
        if isinstance(loaded.get("fusion"), str):
            name = loaded.pop("fusion")
            fusion = fusion or name
        unimodal = unimodal or loaded.pop("unimodal", None)
        raw.update(_flatten(loaded))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"override {item!r}: expected key=value")
        raw[key.strip()] = parse_value(value.strip())

    if not dataset:
        raise TrainConfigError("dataset: expected a dataset name (--dataset), got none")
    if unimodal is None:
        fusion = fusion or "gated"
        if fusion not in list_fusions():
            raise TrainConfigError(f"unknown fusion {fusion!r}: expected one of {list_fusions()}")
    loader_opts = _loader_options(dataset)
    fusion_opts = sorted(fusion_options(fusion)) if unimodal is None and fusion else []

    settings = RunSettings(dataset=dataset, fusion=fusion if unimodal is None else None, unimodal=unimodal)
    train: dict[str, Any] = {}
    for key, value in raw.items():
        if key in TrainConfig.field_names():
            train[key] = _coerce_train(key, value)
        elif key in MODEL_KEYS:
            settings.model[key] = value
        elif key.startswith("data.") and (loader_opts is None or key[5:] in loader_opts):
            settings.data[key[5:]] = value
        elif key.startswith("fusion.") and key[7:] in fusion_opts:
            settings.fusion_options[key[7:]] = value
        elif key.startswith("encoder.") and key.count(".") == 2:
            _, mod, opt = key.split(".")
            settings.encoder_options.setdefault(mod, {})[opt] = value
        else:
            valid = (
                TrainConfig.field_names()
                + list(MODEL_KEYS)
                + [f"data.{o}" for o in (loader_opts or ["<option>"])]
                + [f"fusion.{o}" for o in fusion_opts]
                + ["encoder.<modality>.<option>"]
            )
            raise TrainConfigError(f"unknown setting {key!r}: expected one of {', '.join(valid)}")
    settings.train = TrainConfig(**train)
    return settings


def default_out_dir(settings: RunSettings) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{settings.dataset}-{settings.label}-{stamp}"


def run_training(
    settings: RunSettings,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Load the dataset, build the model, fit, and score it on val and test.

    Returns:
        ``{"result": FitResult, "val": metrics, "test": metrics, "out_dir": Path}``;
        ``out_dir/metrics.json`` and ``out_dir/run.json`` hold the same numbers and
        the settings.
    """
    import torch

    from mmfuse.data import load_dataset
    from mmfuse.models import build_model, build_unimodal_model
    from mmfuse.training.engine import fit
    from mmfuse.training.metrics import evaluate

    data = dict(settings.data)
    data_seed = int(data.pop("seed", 0))
    splits = load_dataset(settings.dataset, root=root, seed=data_seed, **data)
    hidden_dim = int(settings.model.get("hidden_dim", 64))
    dropout = float(settings.model.get("dropout", 0.1))
    torch.manual_seed(settings.train.seed)  # the initial weights follow the run's seed
    if settings.unimodal is not None:
        model: torch.nn.Module = build_unimodal_model(
            splits.specs, splits.num_classes, settings.unimodal, hidden_dim=hidden_dim, dropout=dropout,
            encoder_options=settings.encoder_options.get(settings.unimodal),
        )
    else:
        assert settings.fusion is not None
        mods = settings.model.get("modalities")
        model = build_model(
            splits.specs, splits.num_classes, settings.fusion, hidden_dim=hidden_dim, dropout=dropout,
            fusion_options=settings.fusion_options, encoder_options=settings.encoder_options,
            modalities=[mods] if isinstance(mods, str) else mods,
        )
    out = Path(out_dir)
    result = fit(model, splits, settings.train, out, resume=resume)
    metrics = {"val": result.val_metrics, "test": evaluate(result.model, splits.test)}
    run = {
        "dataset": settings.dataset,
        "data_options": settings.data,
        "fusion": settings.fusion,
        "unimodal": settings.unimodal,
        "train": dataclasses.asdict(settings.train),
        "model": settings.model,
        "fusion_options": settings.fusion_options,
        "encoder_options": settings.encoder_options,
        "epochs_run": result.epochs_run,
        "train_time_s": result.train_time_s,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "run.json").write_text(json.dumps(run, indent=2, default=str))
    return {"result": result, **metrics, "out_dir": out}
