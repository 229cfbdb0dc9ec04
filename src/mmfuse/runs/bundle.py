"""The run bundle: one self-describing folder per trained model.

Shape legend: none (files and JSON here).

Every model ``mmfuse train`` writes, and every model the bench saves, is a folder::

    bundle.json               format, versions, task, class names, modalities, the spec,
                              each pretrained encoder's reference, metrics, the files below
    model.safetensors         weights and the model config (no pickle; SHA-256 checked)
    preprocessor.json         the fitted table preprocessing (a table run only; with
    preprocessor.safetensors  its arrays, when it has any)

:func:`write_bundle` writes ``bundle.json`` (and the preprocessor) beside a saved
checkpoint; :func:`read_bundle` reads and checks it: the format version and what
this install can load, in one sentence when it cannot. Loading never needs the
training table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmfuse.errors import CheckpointError
from mmfuse.io import atomic_write

__all__ = ["BUNDLE_FILE", "BUNDLE_FORMAT", "Bundle", "is_bundle", "read_bundle", "save_run", "write_bundle"]

BUNDLE_FORMAT = "mmfuse.run/1"
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class Bundle:
    """What ``bundle.json`` says (see the module docstring)."""

    folder: Path
    manifest: Mapping[str, Any]

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.manifest["class_names"]]

    @property
    def model_file(self) -> Path:
        return self.folder / str(self.manifest["model"]["file"])

    @property
    def preprocessor_file(self) -> Path | None:
        name = self.manifest.get("preprocessor")
        return None if name is None else self.folder / str(name)

    @property
    def label(self) -> str:
        return str(self.manifest["model"]["label"])


def is_bundle(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / BUNDLE_FILE).is_file()


def _versions() -> dict[str, str]:
    import torch

    from mmfuse import __version__

    return {"mmfuse": __version__, "torch": torch.__version__}


def write_bundle(
    folder: str | os.PathLike[str],
    *,
    model_file: str | os.PathLike[str],
    splits: Any,
    spec: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``bundle.json`` (and the table preprocessor, when ``splits`` came from a table)
    into ``folder``, beside the model checkpoint ``model_file`` (which must be in it).

    Args:
        folder: the bundle's folder.
        model_file: the saved checkpoint (:func:`mmfuse.training.save_checkpoint`).
        splits: the :class:`~mmfuse.data.DatasetSplits` the model was trained on.
        spec: its :class:`~mmfuse.experiment.ExperimentSpec` (None for a model trained from
            Python with :func:`mmfuse.training.fit`: its config then names it).
        metrics: e.g. ``{"val": {...}, "test": {...}}``.
    """
    from mmfuse.training.checkpoint import HASH_KEY, read_metadata

    folder = Path(folder)
    model_file = Path(model_file)
    if model_file.resolve().parent != folder.resolve():
        raise CheckpointError(f"{model_file}: the checkpoint must be inside the bundle folder {folder}")
    prep = splits.info.get("preprocessor")
    prep_name = None
    if prep is not None:
        prep_name = prep.save(folder).name
    train = splits.train
    prior = None
    if splits.task in ("binary", "multiclass"):
        import torch

        counts = torch.bincount(train.labels, minlength=train.num_classes).double()
        prior = (counts / counts.sum()).tolist()
    elif splits.task == "multilabel":
        prior = train.labels.double().mean(dim=0).tolist()
    elif splits.task == "regression":
        prior = train.labels.double().mean(dim=0).tolist()
    encoders = {}
    for m, rec in dict(splits.info.get("encoders", {}) or {}).items():
        encoders[m] = dict(rec) if isinstance(rec, Mapping) else {"name": str(rec)}
    for m, opts in dict(splits.info.get("encoder_options", {}) or {}).items():
        encoders.setdefault(m, {}).update({"in_model": True, "options": _jsonable(opts)})
    if spec is not None:
        label, fusion, unimodal = spec.label, spec.model.fusion, spec.model.unimodal
        dataset, spec_json, data_encoders = spec.data.display, spec.to_json(), dict(spec.data.encoders)
    else:
        from mmfuse.training.checkpoint import read_metadata as _meta

        config = json.loads(_meta(model_file).get("config", "{}"))
        fusion = config.get("fusion") if config.get("type") == "multimodal" else None
        unimodal = config.get("modality") if config.get("type") == "unimodal" else None
        label = f"uni:{unimodal}" if unimodal else str(fusion)
        dataset, spec_json = splits.name, None
        data_encoders = {}
        for m, rec in dict(splits.info.get("encoders", {}) or {}).items():
            if isinstance(rec, Mapping) and isinstance(rec.get("spec"), Mapping):
                from mmfuse.encoders.pretrained import EncoderSpec

                data_encoders[m] = str(EncoderSpec.from_json(rec["spec"]))  # the name it was encoded with
    manifest = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "dataset": dataset,
        "task": splits.task,
        "class_names": list(train.class_names or []),
        "class_prior": prior,
        "modalities": list(splits.modalities),
        "specs": {m: {"kind": s.kind, "shape": list(s.shape)} for m, s in splits.specs.items()},
        "model": {"file": model_file.name, "label": label, "fusion": fusion,
                  "unimodal": unimodal,
                  "weights_sha256": read_metadata(model_file).get(HASH_KEY)},
        "preprocessor": prep_name,
        "encoders": encoders,
        "data_encoders": data_encoders,
        "spec": spec_json,
        "metrics": _jsonable(dict(metrics or {})),
    }
    path = folder / BUNDLE_FILE
    atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True, default=str))
    return path


def save_run(folder: str | os.PathLike[str], model: Any, splits: Any, *,
             metrics: Mapping[str, Any] | None = None) -> Path:
    """Save a model trained from Python (``fit(model, splits, ...)``) as a run bundle in ``folder``
    (created; a folder holding another bundle is refused): its weights, the splits'
    preprocessing, and its metrics (the test split's are computed when not given).
    Returns the folder, for :func:`mmfuse.load_run`."""
    from mmfuse.training.checkpoint import save_checkpoint

    folder = Path(folder).expanduser()
    if is_bundle(folder):
        raise CheckpointError(f"{folder}: holds a run bundle already; choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        from mmfuse.training.metrics import evaluate

        metrics = {"test": evaluate(model.eval(), splits.test)}
    weights = save_checkpoint(model, folder / MODEL_FILE)
    write_bundle(folder, model_file=weights, splits=splits, metrics=metrics)
    return folder


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def read_bundle(folder: str | os.PathLike[str]) -> Bundle:
    """The bundle in ``folder``, checked: a :class:`CheckpointError` says in one sentence why it
    cannot be loaded (not a bundle, another format, a newer mmfuse, a missing file)."""
    folder = Path(folder).expanduser()
    path = folder / BUNDLE_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such run folder")
    if not path.is_file():
        hint = (" (it holds model.safetensors: a run trained before bundles existed; train it again)"
                if (folder / MODEL_FILE).is_file() else "")
        raise CheckpointError(f"{folder}: not a run bundle: no {BUNDLE_FILE}{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the bundle's description: {e}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: the bundle's description is not a JSON object")
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        family, _, version = str(fmt).partition("/")
        if family == BUNDLE_FORMAT.split("/")[0] and version.isdigit() and int(version) > 1:
            made = (manifest.get("versions") or {}).get("mmfuse", "?")
            from mmfuse import __version__

            raise CheckpointError(f"{folder}: bundle format {fmt} was written by mmfuse {made}; this mmfuse "
                                  f"({__version__}) reads {BUNDLE_FORMAT}: upgrade mmfuse to load it")
        raise CheckpointError(f"{folder}: expected a bundle of format {BUNDLE_FORMAT!r}, got {fmt!r}")
    for key in ("task", "class_names", "modalities", "model"):
        if key not in manifest:
            raise CheckpointError(f"{path}: the bundle's description lacks {key!r}")
    bundle = Bundle(folder, manifest)
    if not bundle.model_file.is_file():
        raise CheckpointError(f"{folder}: the bundle's weights {bundle.model_file.name} are missing")
    prep = bundle.preprocessor_file
    if prep is not None and not prep.is_file():
        raise CheckpointError(f"{folder}: the bundle's preprocessing {prep.name} is missing")
    return bundle
