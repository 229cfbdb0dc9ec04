"""What ``mmfuse train`` does: check the run folder, train through :func:`train_one`, measure, report.

Shape legend: none (no tensors here).

A run folder holds ``spec.json`` (the :class:`~mmfuse.experiment.ExperimentSpec`,
written before training, with the training key it gives, so a file edited since, say to
another task, is refused by ``--resume`` instead of continuing weights trained on other
settings), the fit's resumable state and best weights, ``run.json``
(the :class:`~mmfuse.experiment.RunRecord`) and ``metrics.json`` (validation and test
metrics). An existing run folder is never overwritten silently: ``resume`` continues
it (only with the same weight-changing settings; the differences are named), ``force``
replaces it, and default folders never collide.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError, DiskFullError, MmfuseError
from mmfuse.experiment.config import experiment_from_settings
from mmfuse.experiment.results import RunRecord
from mmfuse.experiment.specs import SPEC_SCHEMA, ExperimentSpec, MeasureConfig
from mmfuse.io import atomic_write, is_disk_full
from mmfuse.records import RecordVersionError, check_format

__all__ = ["default_out_dir", "prepare_run_folder", "train_command"]

#: settings a resumed run may change: it may be given more epochs or more time
_MAY_GROW = ("train.epochs", "train.max_time")
#: what to do after a full disk stopped a run whose folder is kept
_RESUME = "continue with: mmfuse train ... --resume --out {folder}"
#: files a run folder may hold, removed by ``force``
_RUN_FILES = ("spec.json", "run.json", "metrics.json", "fit.json", "model.safetensors", "last.safetensors",
              "bundle.json", "preprocessor.json", "preprocessor.safetensors")


def default_out_dir(spec: ExperimentSpec, base: str | Path = "runs") -> Path:
    """``runs/<dataset>-<model>-<time>``, with a counter if that folder exists already."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{spec.data.display.replace('/', '-')}-{spec.label.replace(':', '-')}-{stamp}"
    out = Path(base) / name
    n = 2
    while out.exists():
        out = Path(base) / f"{name}-{n}"
        n += 1
    return out


def _secondary_process() -> bool:
    """A process a distributed launcher started besides the first (its rank is set and not 0)."""
    return any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _write_spec(path: Path, spec: ExperimentSpec) -> None:
    """``spec.json``: the spec and the training key it gives (see the module docstring)."""
    atomic_write(path, json.dumps({**spec.to_json(), "train_key": spec.key}, indent=2, sort_keys=True))


def prepare_run_folder(out: Path, spec: ExperimentSpec, *, resume: bool, force: bool) -> None:
    """Check (and, with ``force``, clear) the run folder; write ``spec.json``.

    Raises:
        ConfigError: ``out`` holds a run and neither ``resume`` nor ``force`` is given;
            ``resume`` with no run in ``out`` (a mistyped folder), or with other settings.
    """
    if _secondary_process():
        return  # rank 0 checked and prepared the folder; this process only joins the fit
    spec_file = out / "spec.json"
    occupied = out.is_dir() and any(out.iterdir())
    if resume:
        if not spec_file.is_file():
            raise ConfigError(f"--resume: {str(out)!r} holds no run to continue (no spec.json): check --out")
        try:
            raw = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--resume: {spec_file}: cannot read the run's settings: {exc}") from exc
        try:  # a folder of another mmfuse: its weights were keyed, and may be laid out, otherwise
            check_format(raw, "experiment_spec", SPEC_SCHEMA, legacy="schema")
        except RecordVersionError as exc:
            raise ConfigError(f"--resume: {str(out)!r} was written by another version of mmfuse (spec version "
                              f"{exc.found if exc.found is not None else 'none'}, this one writes {SPEC_SCHEMA}) "
                              "and cannot be continued: start a new run (another --out, or --force)") from exc
        try:
            before = ExperimentSpec.from_json(raw)
        except ValueError as exc:
            raise ConfigError(f"--resume: {spec_file}: cannot read the run's settings: {exc}") from exc
        written = raw.get("train_key")  # None: a folder of an mmfuse that did not record it
        if written is not None and written != before.key:
            raise ConfigError(f"--resume: {spec_file} was edited after the run started: its settings give the "
                              f"training key {before.key}, the run was started with {written}, so the weights in "
                              f"{str(out)!r} were trained on other settings than the file says. Start a new run "
                              "(another --out, or --force), or put the file back as it was")
        diffs = spec.differences(before, ignore=_MAY_GROW)
        if diffs:
            raise ConfigError(f"--resume: the settings differ from the run in {str(out)!r} (now != then): "
                              + "; ".join(diffs) + ". Resume with the same settings, or start a new run")
        _write_spec(spec_file, spec)
        return
    if occupied:
        if not force:
            raise ConfigError(f"{str(out)!r} already holds files: pass --resume to continue that run, "
                              "--force to replace it, or choose another --out")
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_spec(spec_file, spec)
    except OSError as exc:
        raise ConfigError(f"run folder {str(out)!r} is not writable: {exc}") from exc


def train_command(
    settings: Mapping[str, Any],
    *,
    dataset: str | None,
    fusion: str | None,
    unimodal: str | None,
    out: str | None,
    resume: bool,
    force: bool,
    data_root: str | None,
) -> int:
    """Everything ``mmfuse train`` does; returns the exit code. ``dataset`` None: your own
    table where the settings give ``data.path``, else ``synthetic``."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mmfuse.experiment.run import measure, train_one

    spec = experiment_from_settings(settings, dataset=dataset, fusion=fusion, unimodal=unimodal, data_root=data_root)
    if resume and out is None:
        raise ConfigError("--resume: expected --out naming the run folder to continue")
    folder = Path(out) if out is not None else default_out_dir(spec)
    created = not folder.exists()
    prepare_run_folder(folder, spec, resume=resume, force=force)
    console = Console()
    console.print(f"[bold]mmfuse train[/]: {escape(spec.data.display)} / {escape(spec.label)}, seed {spec.seed} "
                  f"-> {escape(str(folder))}")
    started, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        trained = train_one(spec, out_dir=folder, resume=resume)
    except (MmfuseError, OSError) as exc:
        full = is_disk_full(exc)
        if not (full or isinstance(exc, MmfuseError)):
            raise
        # a run that failed at set-up (a misspelled target, a bad setting, a full disk) leaves no folder to --force
        started_fit = any((folder / f).exists() for f in ("model.safetensors", "last.safetensors"))
        if created and not started_fit:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        if full:
            raise DiskFullError(folder, _RESUME.format(folder=folder) if started_fit or not created
                                else "run the same command again") from exc
        raise
    if trained.fit is not None and not trained.fit.is_global_zero:
        return 0  # another process of a multi-process (DDP) run: rank 0 reports
    measure_config = MeasureConfig(noise_scales=(), missing=True)
    m = measure(trained, measure_config)
    record = RunRecord(spec=spec, measure=measure_config, status="ok", training=trained.facts, measurement=m,
                       started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       wall_s=round(time.perf_counter() - started, 3), host=socket.gethostname(), pid=os.getpid())
    metrics = {"val": trained.facts.val_metrics, "test": {**m.metrics, "n": m.n_test}}
    from mmfuse.runs.bundle import write_bundle

    try:
        atomic_write(folder / "run.json", json.dumps(record.to_json(), indent=2, sort_keys=True))
        atomic_write(folder / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        write_bundle(folder, model_file=trained.checkpoint, splits=trained.splits, spec=spec, metrics=metrics)
    except OSError as exc:  # the model is trained: --resume measures it and writes these again
        if is_disk_full(exc):
            raise DiskFullError(folder, _RESUME.format(folder=folder)) from exc
        raise

    names = [k for k in m.metrics if k != "n"]
    table = Table(title=escape(f"{spec.data.display} / {spec.label}"))
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("n", justify="right")
    for split, values in (("val", trained.facts.val_metrics), ("test", m.metrics)):
        table.add_row(split, *[f"{values[k]:.4f}" if k in values else "-" for k in names],
                      str(int(values.get("n", m.n_test if split == "test" else 0))))
    console.print(table)
    if m.missing:
        console.print(f"test {m.metric} with one modality missing: "
                      + ", ".join(escape(f"{k} {v:.4f}" if v is not None else f"{k} -") for k, v in m.missing.items()))
    c = m.calibration
    if c is not None:
        line = (f"test calibration: ECE {c.ece:.4f} (15 equal-width bins), NLL {c.nll:.4f}, Brier {c.brier:.4f}, "
                f"accuracy on the 80% most confident {c.selective.get('80', float('nan')):.4f}")
        if m.temperature is not None and m.uncalibrated is not None:
            line += (f"; temperature T = {m.temperature:.3f} (before it: ECE {m.uncalibrated.ece:.4f}, "
                     f"NLL {m.uncalibrated.nll:.4f})")
        console.print(line)
        if m.temperature is not None:
            from mmfuse.training.calibration import temperature_note

            if (note := temperature_note(m.temperature)) is not None:
                console.print(f"[yellow]note[/]: {note}")
    f = trained.facts
    console.print(f"epochs: {f.epochs_run} (best {f.best_epoch + 1}), time: {f.train_time_s:.1f} s, "
                  f"threads: {f.threads}")
    print(f"checkpoint: {trained.checkpoint}")  # plain print: a path must not be wrapped
    print(f"run bundle: {folder} (predict with: mmfuse predict {folder} --data NEW.csv)")
    return 0
