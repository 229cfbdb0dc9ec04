"""The results folder: an append-only JSON-lines log of finished runs, saved models, and the tables written from them.

Layout of a results folder::

    runs.jsonl     one RunRecord per finished run (ok or failed), appended as each run
                   ends: one ``write`` of one line, flushed and fsynced, so a crash of
                   the whole process loses at most the runs still in flight
    models/<key>/  each trained model's run bundle under its training key: weights
                   (safetensors), the fitted preprocessing, bundle.json and the training
                   facts; a re-measurement loads them, ``mmfuse predict`` uses them
    results.json   settings, environment (package versions, git commit), the summary
                   and every record of the current grid
    results.csv    one row per run, flat columns
    plots/*.png    figures (with plots on)
    report.html    the self-contained report

The last record of a key wins, so a failed run that is re-run successfully is reported
as ok. Records written by another version of mmfuse (another record format: their
training keys are not this version's) are not re-used: they are skipped, counted in
:attr:`ResultsStore.other_versions` and said once by the bench (:meth:`ResultsStore.other_versions_note`),
which trains those runs again. A torn last line (a crash mid-write) is cut off before the next append, so it
never swallows the next record.

Concurrency: the repair and the append of a record happen under an exclusive
``fcntl.flock`` of ``.runs.lock``, so processes appending to one log (the bench's
workers, or two benches) never cut or interleave each other's lines; and a bench holds
``.bench.lock`` for its whole run (:meth:`ResultsStore.hold`), so a second bench into the
same folder is refused with the first one's process id instead of racing it.

A full device while a record is appended cuts the log back to where it ended and raises
:class:`~mmfuse.errors.DiskFullError` naming the folder: the bench stops there, and the
same command continues once there is space.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError, DiskFullError
from mmfuse.experiment.results import RECORD_VERSION, RunRecord
from mmfuse.io import atomic_write, file_mode, is_disk_full
from mmfuse.records import RecordVersionError, stamp

__all__ = ["CSV_COLUMNS", "RESULTS_VERSION", "ResultsStore", "flat_row"]

#: the version of ``results.json`` (``"format": "mmfuse.bench_results/1"``; files of an
#: earlier mmfuse carry no key and read as 1)
RESULTS_VERSION = 1

#: columns every ``results.csv`` has, in order; per-modality robustness columns
#: (``missing:<modality>``, ``noise:<scale>``) follow them
CSV_COLUMNS = [
    "key",
    "train_key",
    "bundle",
    "status",
    "dataset",
    "model",
    "modality",
    "variant",
    "seed",
    "metric",
    "score",
    "accuracy",
    "macro_f1",
    "auroc",
    "params",
    "train_time_s",
    "trained_now",
    "epochs_run",
    "threads",
    "throughput_sps",
    "memory_mb",
    "missing_worst",
    "ece",
    "nll",
    "brier",
    "aurc",
    "acc@90",
    "acc@80",
    "acc@50",
    "temperature",
    "ece_uncalibrated",
    "nll_uncalibrated",
    "brier_uncalibrated",
    "wall_s",
    "finished_at",
    "error",
    "settings",
]


class ResultsStore:
    """The results folder of one comparison (see the module docstring for its layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.log = self.root / "runs.jsonl"
        self.models = self.root / "models"
        self._held: int | None = None
        #: found version (``None``: none) -> records of another mmfuse skipped by the last :meth:`records`
        self.other_versions: dict[int | None, int] = {}

    def hold(self) -> None:
        """Take the folder for this process (``.bench.lock``, released by :meth:`release` or at exit).

        Raises:
            ConfigError: another process holds it (its pid is in the message).
        """
        import fcntl

        path = self.root / ".bench.lock"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as exc:
            raise ConfigError(f"results folder {str(self.root)!r} is not writable: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise ConfigError(f"results folder {str(self.root)!r} is in use by another mmfuse bench (pid {other}): "
                              "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held = fd

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)  # closing the descriptor releases the lock
            self._held = None

    def check_writable(self) -> None:
        """:class:`ConfigError` now, before any work, if the folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"results folder {str(self.root)!r} is not writable: {exc}") from exc

    def _repair_tail(self) -> None:
        """Cut a torn last line (no final newline) so the next record starts on its own line."""
        if not self.log.is_file():
            return
        with self.log.open("rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # find the last newline; everything after it is the torn record
            pos = size - 1
            chunk = 4096
            cut = 0
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                data = f.read(pos - start)
                idx = data.rfind(b"\n")
                if idx >= 0:
                    cut = start + idx + 1
                    break
                pos = start
            warnings.warn(f"{self.log}: its last line was torn (a crash mid-write): {size - cut} bytes cut off; "
                          "that run will be run again", stacklevel=3)
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: RunRecord) -> None:
        """Append one record as one line, flushed and fsynced before returning."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record.to_json(), sort_keys=True, default=str) + "\n").encode("utf-8")
        lock = os.open(self.root / ".runs.lock", os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the repair and the append as one step among processes
            self._repair_tail()
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                while written < len(data):  # a short write only happens on odd file systems (or a full one)
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, size)  # no half record: the log ends where it ended
                if is_disk_full(exc):
                    raise DiskFullError(self.root) from exc
                raise
            finally:
                os.close(fd)
        finally:
            os.close(lock)

    def records(self) -> list[RunRecord]:
        """Every record of this version in the log, oldest first; a torn last line is skipped
        with a warning, a record of another version is skipped and counted
        (:attr:`other_versions`).

        Raises:
            ConfigError: a record of this version that does not read (edited by hand).
        """
        self.other_versions = {}
        if not self.log.is_file():
            return []
        out: list[RunRecord] = []
        with self.log.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    warnings.warn(f"{self.log}: line {n} is not valid JSON (interrupted write?); skipped", stacklevel=2)
                    continue
                try:
                    out.append(RunRecord.from_json(data))
                except RecordVersionError as exc:
                    self.other_versions[exc.found] = self.other_versions.get(exc.found, 0) + 1
                except ConfigError as exc:
                    raise ConfigError(f"{self.log}: line {n}: {exc}") from exc
        return out

    def other_versions_note(self) -> str | None:
        """One line saying that the last :meth:`records` skipped records of another version, or None."""
        if not self.other_versions:
            return None
        n = sum(self.other_versions.values())
        found = ", ".join(str(v) if v is not None else "none" for v in sorted(self.other_versions, key=str))
        return (f"{self.log}: {n} record{'s' if n != 1 else ''} written by another version of mmfuse (record "
                f"version {found}; this one writes {RECORD_VERSION}) not re-used: their runs are trained again")

    def latest(self, keys: Iterable[str] | None = None) -> dict[str, RunRecord]:
        """The last record of each measurement key (restricted to ``keys`` when given)."""
        wanted = None if keys is None else set(keys)
        out: dict[str, RunRecord] = {}
        for rec in self.records():
            if wanted is None or rec.key in wanted:
                out[rec.key] = rec
        return out

    def finished(self) -> set[str]:
        """Keys whose last record is a successful run (failed runs are run again)."""
        return {k for k, rec in self.latest().items() if rec.ok}

    # ------------------------------------------------------------------ tables
    def write_json(self, records: Sequence[RunRecord], meta: Mapping[str, Any], summary: Sequence[Any]) -> Path:
        path = self.root / "results.json"
        doc = stamp("bench_results", RESULTS_VERSION, {"meta": dict(meta), "summary": [row.to_json() for row in summary],
                                                       "runs": [r.to_json() for r in records]})
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
        return path

    def write_csv(self, records: Sequence[RunRecord]) -> Path:
        path = self.root / "results.csv"
        rows = [flat_row(r) for r in records]
        extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS), key=_extra_order)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + extra, extrasaction="raise", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write(path, buf.getvalue())
        return path


def _extra_order(col: str) -> tuple[int, str, float]:
    kind, _, rest = col.partition(":")
    if rest.startswith("missing:"):  # ece:missing:<modality> and the like: after the robustness columns
        return (3, rest + ":" + kind, 0.0)
    if kind == "noise":
        try:
            return (1, "", float(rest))
        except ValueError:
            return (1, rest, 0.0)
    return (0 if kind == "missing" else 2, rest, 0.0)


def flat_row(record: RunRecord) -> dict[str, Any]:
    """One CSV row of a record: settings, metrics, costs and robustness in flat columns."""
    spec, t, m = record.spec, record.training, record.measurement
    row: dict[str, Any] = {
        "key": record.key,
        "train_key": record.train_key,
        "bundle": f"models/{record.train_key}" if record.ok else None,  # the run bundle, in the results folder
        "status": record.status,
        "dataset": record.dataset,
        "model": record.label,
        "modality": spec.model.unimodal,
        "variant": spec.variant.value,
        "seed": spec.seed,
        "metric": m.metric if m else None,
        "score": m.score if m else None,
        "accuracy": m.metrics.get("accuracy") if m else None,
        "macro_f1": m.metrics.get("macro_f1") if m else None,
        "auroc": m.metrics.get("auroc") if m else None,
        "params": t.params if t else None,
        "train_time_s": t.train_time_s if t else None,
        "trained_now": t.trained_now if t else None,
        "epochs_run": t.epochs_run if t else None,
        "threads": t.threads if t else None,
        "throughput_sps": m.throughput_sps if m else None,
        "memory_mb": m.memory_mb if m else None,
        "missing_worst": m.missing_worst if m else None,
        **{k: None for k in ("ece", "nll", "brier", "aurc", "acc@90", "acc@80", "acc@50", "temperature",
                             "ece_uncalibrated", "nll_uncalibrated", "brier_uncalibrated")},
        "wall_s": record.wall_s,
        "finished_at": record.finished_at,
        "error": record.error,
        "settings": json.dumps(spec.to_json(), sort_keys=True, default=str),
    }
    if m:
        for mod, val in m.missing.items():
            row[f"missing:{mod}"] = val
        row.update(m.calibration.flat() if m.calibration is not None else {})
        row["temperature"] = m.temperature
        if m.uncalibrated is not None:
            row.update({f"{k}_uncalibrated": v for k, v in m.uncalibrated.flat().items()
                        if k in ("ece", "nll", "brier")})
        for mod, stats in m.calibration_missing.items():  # ece:missing:<modality>, ...
            if stats is not None:
                row.update({f"{k}:missing:{mod}": v for k, v in stats.flat().items()})
        scales = sorted({s for per in m.calibration_noise.values() for s in per}, key=float)
        for scale in scales:  # ece:noise:<scale>: the mean over the noised modalities, as noise:<scale>
            eces = [per[scale].ece for per in m.calibration_noise.values() if per.get(scale) is not None]
            row[f"ece:noise:{float(scale):g}"] = sum(eces) / len(eces) if eces else None
        for scale, val in m.noise_mean.items():
            row[f"noise:{float(scale):g}"] = val
    return row
