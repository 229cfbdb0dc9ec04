"""The options of a user's table: :class:`TableSource`, frozen and JSON-able."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from mmfuse.data._base import TASKS, DataError
from mmfuse.data._common import check_fractions

__all__ = ["KINDS", "TableSource"]

#: the built-in column kinds (the registry, :func:`mmfuse.data.table.kinds.list_kinds`, may hold more)
KINDS: tuple[str, ...] = ("numeric", "categorical", "text", "image", "audio", "embedding")
#: the version key TableSource wrote of its own before it was nested without one (still read)
LEGACY_VERSION = 1

@dataclass(frozen=True)
class TableSource:
    """Everything :func:`from_table` takes, for a table in a file (JSON-able, frozen).

    Attributes:
        path: CSV, TSV, Parquet (file or folder) or JSON Lines file.
        target: the target column, or several (multilabel / multi-output regression).
        modalities: modality name -> its columns (None: the defaults of the module docstring).
        kinds: column -> kind (one of :data:`KINDS`), overriding the inference.
        exclude: columns not to use.
        task: ``binary``, ``multiclass``, ``multilabel``, ``regression`` or None (inferred).
        split: None (stratified random), a column of train/val/test, or ``{"group": column}``.
        val_fraction, test_fraction, seed: of the random and group splits.
        base_dir: folder that relative file paths resolve against (default: the table's).
        format: ``csv``, ``tsv``, ``parquet``, ``jsonl`` (default: from the extension).
        image_size: ``(h, w)`` images are resized to.
        image_mode: ``RGB`` (3 channels) or ``L`` (1 channel).
        audio_sample_rate, audio_seconds, n_mels, n_fft, hop: the log-mel front end.
        max_tokens, min_count, max_vocab: text encoding.
        max_categories: a string column with at most this many distinct values is categorical.
        int_categories: an integer column with at most this many distinct values is categorical.
        max_classes: an integer-valued target with at most this many values is a class label.
        on_bad_file: ``missing`` (a bad image/audio file makes the modality missing, counted)
            or ``error`` (a :class:`DataError`).
        allow_outside: read image, audio and ``.npy`` paths that leave the table's folder
            (or ``base_dir``): ``..``, absolute paths, links pointing out of it. Off, such a
            path is a :class:`DataError` naming it, so a table cannot read files its folder
            does not hold unless asked to.
        name: dataset name in reports (default: the file's name).
    """

    path: str
    target: str | tuple[str, ...]
    modalities: Mapping[str, tuple[str, ...]] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    task: str | None = None
    split: str | Mapping[str, str] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    base_dir: str | None = None
    format: str | None = None
    image_size: tuple[int, int] = (32, 32)
    image_mode: Literal["RGB", "L"] = "RGB"
    audio_sample_rate: int = 16000
    audio_seconds: float = 1.0
    n_mels: int = 40
    n_fft: int = 400
    hop: int = 160
    max_tokens: int = 64
    min_count: int = 2
    max_vocab: int = 20000
    max_categories: int = 50
    int_categories: int = 10
    max_classes: int = 50
    on_bad_file: Literal["missing", "error"] = "missing"
    allow_outside: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        norm = object.__setattr__
        if isinstance(self.target, (list, tuple)):
            norm(self, "target", tuple(str(t) for t in self.target))
            if not self.target:
                raise DataError("target: expected a column name or a non-empty list of them, got []")
        elif not isinstance(self.target, str):
            raise DataError(f"target: expected a column name, got {self.target!r}")
        if self.modalities is not None:
            mods = {}
            for m, cols in dict(self.modalities).items():
                cols = (cols,) if isinstance(cols, str) else tuple(cols)
                if not cols:
                    raise DataError(f"modality {m!r}: expected at least one column, got none")
                mods[str(m)] = cols
            if not mods:
                raise DataError("modalities: expected at least one modality, got none")
            norm(self, "modalities", mods)
        norm(self, "kinds", dict(self.kinds))
        from mmfuse.data.table.kinds import list_kinds

        for col, kind in self.kinds.items():
            if kind not in list_kinds():
                raise DataError(f"kinds: column {col!r}: expected one of {list(list_kinds())}, got {kind!r}")
        norm(self, "exclude", tuple(self.exclude))
        if self.task is not None and self.task not in TASKS:
            raise DataError(f"task: expected one of {list(TASKS)} or None, got {self.task!r}")
        if isinstance(self.split, Mapping):
            if set(self.split) != {"group"} or not isinstance(self.split["group"], str):
                raise DataError(f"split: expected None, a column name or {{'group': column}}, got {dict(self.split)!r}")
            norm(self, "split", dict(self.split))
        elif self.split is not None and not isinstance(self.split, str):
            raise DataError(f"split: expected None, a column name or {{'group': column}}, got {self.split!r}")
        check_fractions(self.path, self.val_fraction, self.test_fraction)
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise DataError(f"image_size: expected (h, w) positive ints, got {self.image_size!r}")
        norm(self, "image_size", size)
        if self.image_mode not in ("RGB", "L"):
            raise DataError(f"image_mode: expected 'RGB' or 'L', got {self.image_mode!r}")
        if self.on_bad_file not in ("missing", "error"):
            raise DataError(f"on_bad_file: expected 'missing' or 'error', got {self.on_bad_file!r}")
        if not isinstance(self.allow_outside, bool):
            raise DataError(f"allow_outside: expected true or false, got {self.allow_outside!r}")
        if self.format is not None and self.format not in ("csv", "tsv", "parquet", "jsonl"):
            raise DataError(f"format: expected csv, tsv, parquet or jsonl, got {self.format!r}")
        for what in ("audio_sample_rate", "n_mels", "n_fft", "hop", "max_tokens", "min_count",
                     "max_vocab", "max_categories", "int_categories", "max_classes"):
            v = getattr(self, what)
            if not isinstance(v, int) or isinstance(v, bool) or v < (3 if what == "max_vocab" else 0 if "categories" in what else 1):
                raise DataError(f"{what}: expected a positive int, got {v!r}")
        if not (isinstance(self.audio_seconds, (int, float)) and self.audio_seconds * self.audio_sample_rate >= self.n_fft):
            raise DataError(
                f"audio_seconds: expected at least n_fft / audio_sample_rate = "
                f"{self.n_fft / self.audio_sample_rate:g} s, got {self.audio_seconds!r}"
            )

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values. No version of its own: it is stored inside versioned
        documents (a spec's data options, ``preprocessor.json``; see :mod:`mmfuse.records`)."""
        d = asdict(self)
        d["target"] = self.target if isinstance(self.target, str) else list(self.target)
        d["modalities"] = None if self.modalities is None else {m: list(c) for m, c in self.modalities.items()}
        d["exclude"] = list(self.exclude)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TableSource:
        """From :meth:`to_json`'s dict; unknown keys are a :class:`DataError`. The
        ``"schema_version": 1`` that mmfuse wrote here before (saved preprocessors, old specs)
        is read as this layout."""
        if not isinstance(raw, Mapping):
            raise DataError(f"TableSource: expected a mapping of its fields, got {type(raw).__name__}")
        d = dict(raw)
        version = d.pop("schema_version", LEGACY_VERSION)
        if version != LEGACY_VERSION:
            raise DataError(f"TableSource: schema_version {version!r}, expected {LEGACY_VERSION} (or none)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"TableSource: unknown keys {unknown}; expected some of {sorted(known)}")
        if "path" not in d or "target" not in d:
            raise DataError("TableSource: expected keys 'path' and 'target'")
        if isinstance(d.get("image_size"), list):
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)

