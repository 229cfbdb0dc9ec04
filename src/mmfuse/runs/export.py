"""Ship the model: its tensor part as an ONNX file or a ``torch.export`` program.

Shape legend: ``b`` batch, ``t`` tokens (sequence) or frames (audio), ``d`` features,
``c``/``h``/``w`` image channels, height, width, ``f`` frequency bins, ``k`` columns of a
tabular modality or model outputs (classes, labels, target columns).

What is exported is what runs after the preprocessing: every encoder inside the model,
the fusion and the head. The preprocessing (:class:`~mmfuse.data.TablePreprocessor`)
and any *frozen* pretrained encoder run before it, as in ``mmfuse predict``: the
exported model takes what :meth:`mmfuse.Run.transform` gives (a frozen encoder's
embeddings in its modality's place).

**Inputs**, plain tensors, in this order: for each modality of the model (its sorted
names), with ``<m>`` the name made a valid identifier (every character outside
``[A-Za-z0-9_]`` becomes ``_``, a leading digit gets ``m_`` in front, a clash gets
``_2``, ``_3``...):

- ``<m>``: the modality's batch (below), every kind;
- ``<m>__present``: ``(b,)`` bool, True = present, every kind;
- ``<m>__tokens``: ``(b, t)`` bool, True = a valid token (``sequence``) or frame
  (``audio``), for those two kinds only.

The batch of each kind: ``vector`` ``(b, d)`` float32, ``sequence`` ``(b, t, d)`` float32,
``image`` ``(b, c, h, w)`` float32, ``audio`` ``(b, f, t)`` float32, ``text`` ``(b, t)``
int64 token ids, ``tabular`` ``(b, k)`` float32 (numeric columns, then category codes).
The model sees ``<m>__tokens & <m>__present[:, None]`` for a sequence or audio modality
(a row with no valid token is missing) and ``<m>__present`` for the others. A text
modality has no token input: its padding is the pad id (0 in a table's vocabulary),
which the text encoder never reads as a token whatever the mask says, and its length is
fixed at the preprocessor's ``max_tokens`` (it pads or cuts every text to it). :func:`feeds` turns the
``(inputs, masks)`` of :meth:`mmfuse.Run.transform` or of a dataset into these inputs.

**Dynamic axes**: ``b`` always (named ``batch``); the ``t`` of a sequence or audio
modality where the model allows it (named ``<m>__length``; the sidecar gives a fixed
number where the traced model fixed it); every other axis is fixed at training's shape.

**Outputs**: ``logits`` ``(b, k)`` and ``probabilities`` ``(b, k)`` (softmax over the
classes for binary and multiclass, a sigmoid per label for multilabel; a decision-level
fusion's logits are already log-probabilities, and softmax gives them back); regression:
``prediction`` ``(b, k)`` in the target's units.

**A row with every modality missing** (as the encoders see it: a text of only pad ids
is missing too): the fusion contract raises for it in PyTorch, and a graph cannot raise
per row, so the exported model returns NaN in every output of that row and the rows
around it are unaffected (every strategy treats each sample on its own). This is what
``mmfuse predict`` writes for such a row: empty cells. A unimodal baseline refuses no
row in PyTorch (its modality missing, it reads its encoder's output on zeros), and its
export gives the same values, no NaN (``mmfuse predict`` leaves the rows of a table
with no modality at all empty, ``Transformed.usable``: mask those to match it).
Category codes and token ids are not range-checked in the graph (the preprocessor only
produces valid ones).

**Parity**: on every other row the exported model gives the PyTorch model's outputs:
within 1e-5 in ``tests/runs/test_export.py`` (every strategy and the unimodal baselines,
onnxruntime and the loaded ``pt2`` program, batches of 1 and 37); measured, at most
5.2e-7 for ONNX and exactly equal for ``pt2`` (``benchmarks/results/export_cpu2.md``).

**Files**, for ``--out model.onnx`` (each written to a temporary file and renamed, so
no reader ever sees part of one; the model file's SHA-256 is in the sidecar):

    model.onnx                       the graph and its weights (one file)
    model.onnx.json                  the sidecar (:class:`ExportInfo`)
    model.onnx.preprocessor/         the run's fitted preprocessing (a table run only),
                                     ``TablePreprocessor.load`` reads it

Exporters: ``torch.export.export`` traces the model once (non-strict); ``pt2`` saves
that program (``torch.export.save``; ``torch.export.load(path).module()`` runs it),
``onnx`` converts it with ``torch.onnx.export(program, dynamo=True)`` (the
TorchScript exporter is not used: every strategy traces with ``torch.export``). A
model that cannot be traced raises :class:`~mmfuse.errors.MmfuseError` naming the
strategy, the encoder or fusion where tracing stopped and torch's reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import CheckpointError, ConfigError, DataError, MmfuseError
from mmfuse.io import atomic_write
from mmfuse.records import check_format, format_tag

__all__ = [
    "EXPORT_FORMAT",
    "ExportInfo",
    "ExportModule",
    "ExportedTensor",
    "Traced",
    "export_command",
    "export_run",
    "feeds",
    "read_export",
    "trace",
]

EXPORT_RECORD, EXPORT_VERSION = "export", 1
EXPORT_FORMAT = format_tag(EXPORT_RECORD, EXPORT_VERSION)
FORMATS = ("onnx", "pt2")
#: kinds whose batch has a token (frame) axis with padding, and so a ``__tokens`` input
TOKEN_KINDS = frozenset({"sequence", "audio"})
#: the axis of that token axis in the modality's batch
_TOKEN_AXIS = {"sequence": 1, "audio": 2}
ALL_MISSING_RULE = ("a row with every modality missing (as the encoders see it) gets NaN in every output; "
                    "the other rows are unaffected")
UNIMODAL_MISSING_RULE = ("no row is refused (a unimodal baseline): with its modality missing a row gets the "
                         "output of its encoder on zeros, as in PyTorch")


@dataclass(frozen=True)
class ExportedTensor:
    """One input or output of the exported model.

    Attributes:
        name: its name in the graph (a valid identifier).
        dtype: ``float32``, ``int64`` or ``bool``.
        shape: per axis a fixed size, or the name of a dynamic axis (``batch``,
            ``<m>__length``).
        modality: the modality it belongs to (inputs), else None.
        role: ``data``, ``present`` or ``tokens`` (inputs), ``output``.
        kind: the modality's kind (inputs), else None.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    modality: str | None = None
    role: str = "output"
    kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportedTensor:
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]),
                   modality=data.get("modality"), role=str(data.get("role", "output")), kind=data.get("kind"))


@dataclass(frozen=True)
class ExportInfo:
    """The sidecar beside an exported model (``<file>.json``): what it takes and gives.

    Attributes:
        model_format: ``onnx`` or ``pt2``.
        file: the exported file's name (in the sidecar's folder).
        sha256: of that file.
        exporter: which exporter wrote it (``torch.export`` ...; with ONNX its opset).
        label, task, class_names: the model's (``gated``, ``uni:<modality>``...).
        inputs, outputs: in the graph's order.
        all_missing: what a row with every modality missing gives.
        bundle: the run bundle's folder it was exported from (None: from Python).
        preprocessor: the preprocessing folder beside the file (None: no table run).
        frozen_encoders: modality -> frozen pretrained encoder that runs before the model
            (``Run.transform`` runs it), so the model's input is its embeddings.
        opset: the ONNX opset (None for ``pt2``).
        versions: mmfuse, torch (and onnx) that wrote it.
        created: when (UTC, ISO 8601).
        format: the sidecar's schema, :data:`EXPORT_FORMAT`.
    """

    model_format: str
    file: str
    sha256: str
    exporter: str
    label: str
    task: str
    class_names: tuple[str, ...]
    inputs: tuple[ExportedTensor, ...]
    outputs: tuple[ExportedTensor, ...]
    all_missing: str = ALL_MISSING_RULE
    bundle: str | None = None
    preprocessor: str | None = None
    frozen_encoders: Mapping[str, str] = field(default_factory=dict)
    opset: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    format: str = EXPORT_FORMAT

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["class_names"] = list(self.class_names)
        out["inputs"] = [t.to_json() for t in self.inputs]
        out["outputs"] = [t.to_json() for t in self.outputs]
        out["frozen_encoders"] = dict(self.frozen_encoders)
        out["versions"] = dict(self.versions)
        return out

    @classmethod
    def from_json(cls, data: Any, *, where: str = "sidecar") -> ExportInfo:
        check_format(data, EXPORT_RECORD, EXPORT_VERSION, where=where, error=CheckpointError)
        try:
            return cls(
                model_format=str(data["model_format"]), file=str(data["file"]), sha256=str(data["sha256"]),
                exporter=str(data["exporter"]), label=str(data["label"]), task=str(data["task"]),
                class_names=tuple(str(c) for c in data["class_names"]),
                inputs=tuple(ExportedTensor.from_json(t) for t in data["inputs"]),
                outputs=tuple(ExportedTensor.from_json(t) for t in data["outputs"]),
                all_missing=str(data.get("all_missing", ALL_MISSING_RULE)), bundle=data.get("bundle"),
                preprocessor=data.get("preprocessor"), frozen_encoders=dict(data.get("frozen_encoders") or {}),
                opset=data.get("opset"), versions=dict(data.get("versions") or {}),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: the export sidecar is incomplete: {type(e).__name__}: {e}") from e

    def lines(self) -> list[str]:
        """What a person needs to call the model, one line per input and output."""
        def show(t: ExportedTensor) -> str:
            return f"  {t.name}: {t.dtype} ({', '.join(map(str, t.shape))})"

        return ([f"{self.model_format} model of {self.label} ({self.task}), {self.exporter}", "inputs:"]
                + [show(t) for t in self.inputs] + ["outputs:"] + [show(t) for t in self.outputs]
                + [f"every modality missing: {self.all_missing}"])


# ---------------------------------------------------------------- the graph
@dataclass(frozen=True)
class _Slot:
    """One modality's inputs: its name, kind, and whether a token mask comes with it."""

    modality: str
    kind: str
    name: str

    @property
    def tokens(self) -> bool:
        return self.kind in TOKEN_KINDS


class ExportModule(nn.Module):
    """The model on plain tensors: the inputs of the module docstring, positionally, in
    ``slots`` order; returns ``(logits, probabilities)`` (regression: ``(prediction,)``).

    A :class:`~mmfuse.models.MultimodalModel` is run as ``classify(*encode(...))`` (its
    ``forward``), and the rows whose encoders report every modality missing are set to
    NaN (the module docstring); a :class:`~mmfuse.models.UnimodalModel` is run as it is.
    """

    def __init__(self, model: nn.Module, slots: Sequence[_Slot], task: str) -> None:
        super().__init__()
        self.model = model
        self.slots = tuple(slots)
        self.task = task
        self.multimodal = hasattr(model, "fusion") and hasattr(model, "encode") and hasattr(model, "classify")

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        inputs: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        pos = 0
        for slot in self.slots:
            x, present = tensors[pos], tensors[pos + 1]
            pos += 2
            if slot.tokens:
                masks[slot.modality] = tensors[pos] & present.unsqueeze(1)
                pos += 1
            else:
                masks[slot.modality] = present
            inputs[slot.modality] = x
        if self.multimodal:
            feats, out_masks = self.model.encode(inputs, masks)
            some = None
            for m in out_masks.values():
                here = m if m.dim() == 1 else m.any(dim=1)
                some = here if some is None else some | here
            logits = self.model.classify(feats, out_masks)
            if some is not None and len(out_masks) == len(feats):  # else a modality is always present
                logits = torch.where(some.unsqueeze(1), logits, logits.new_full((), float("nan")))
        else:
            logits = self.model(inputs, masks)
        if self.task == "regression":
            return (logits,)
        if self.task == "multilabel":
            return logits, torch.sigmoid(logits)
        return logits, torch.softmax(logits, dim=-1)


def _identifier(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", name) or "m"
    return f"m_{out}" if out[0].isdigit() else out


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def _output_names(task: str) -> tuple[str, ...]:
    return ("prediction",) if task == "regression" else ("logits", "probabilities")


def _slots(specs: Mapping[str, Mapping[str, Any]], modalities: Sequence[str], task: str) -> list[_Slot]:
    taken = set(_output_names(task))
    slots = []
    for m in modalities:
        kind = str(specs[m]["kind"])
        slots.append(_Slot(m, kind, _unique(_identifier(m), taken)))
    return slots


def _input_names(slots: Sequence[_Slot], task: str) -> list[tuple[_Slot, str, str]]:
    """``(slot, role, name)`` of every input, in order; names unique against the outputs."""
    taken = {s.name for s in slots} | set(_output_names(task))
    out = []
    for s in slots:
        out.append((s, "data", s.name))
        out.append((s, "present", _unique(f"{s.name}__present", taken)))
        if s.tokens:
            out.append((s, "tokens", _unique(f"{s.name}__tokens", taken)))
    return out


def _example(spec: Mapping[str, Any], kind: str, dtype: torch.dtype, device: torch.device, b: int = 2) -> Tensor:
    """A batch of ``b`` (not 0 or 1, which tracing would fix) valid inputs of the modality."""
    shape = tuple(int(v) for v in spec["shape"])
    if kind == "text":
        vocab = int(dict(spec.get("meta") or {}).get("vocab_size", 2))
        return torch.full((b, *shape), min(1, vocab - 1), dtype=torch.long, device=device)
    return torch.zeros((b, *shape), dtype=dtype, device=device)


# ---------------------------------------------------------------- tracing
@dataclass
class Traced:
    """A traced model (:func:`trace`): the ``torch.export`` program, the eager module it was
    traced from (:class:`ExportModule`: the same inputs and outputs, in PyTorch) and its
    inputs and outputs; :meth:`save` writes it in either format."""

    program: Any
    module: ExportModule
    inputs: tuple[ExportedTensor, ...]
    outputs: tuple[ExportedTensor, ...]
    label: str
    task: str
    class_names: tuple[str, ...]
    frozen_encoders: Mapping[str, str] = field(default_factory=dict)
    #: the program's symbol of each dynamic axis -> its name in the sidecar (``batch``...)
    axis_names: Mapping[str, str] = field(default_factory=dict)
    #: what a row with every modality missing gives (the sidecar's ``all_missing``)
    all_missing: str = ALL_MISSING_RULE

    def save(self, path: str | os.PathLike[str], *, format: str | None = None, bundle: Any = None,
             preprocessor: Any = None) -> ExportInfo:
        """Write the model to ``path`` in ``format`` (``onnx`` or ``pt2``; default from the
        suffix, else ``onnx``), its sidecar ``<path>.json`` and, when given, the
        ``preprocessor`` into ``<path>.preprocessor/``. Returns the sidecar."""
        path = Path(path).expanduser()
        fmt = _format(path, format)
        if fmt == "pt2":
            buf = io.BytesIO()
            torch.export.save(self.program, buf)
            data, exporter, opset = buf.getvalue(), f"torch.export (torch {torch.__version__})", None
        else:
            data, opset = _onnx_bytes(self)
            exporter = f"torch.onnx.export(dynamo=True) opset {opset} (torch {torch.__version__})"
        prep_dir = None
        if preprocessor is not None:
            prep_dir = path.with_name(path.name + ".preprocessor")
            preprocessor.save(prep_dir)
        atomic_write(path, data)
        info = ExportInfo(
            model_format=fmt, file=path.name, sha256=hashlib.sha256(data).hexdigest(), exporter=exporter,
            label=self.label, task=self.task, class_names=self.class_names, inputs=self.inputs,
            outputs=self.outputs, all_missing=self.all_missing,
            bundle=None if bundle is None else str(Path(bundle).resolve()),
            preprocessor=None if prep_dir is None else prep_dir.name, frozen_encoders=dict(self.frozen_encoders),
            opset=opset, versions=_versions(fmt), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        atomic_write(_sidecar_path(path), json.dumps(info.to_json(), indent=1))
        return info


def _format(path: Path, format: str | None) -> str:
    by_suffix = {".onnx": "onnx", ".pt2": "pt2"}.get(path.suffix.lower())
    fmt = format if format is not None else (by_suffix or "onnx")
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected one of {list(FORMATS)}, got {fmt!r}")
    if by_suffix is not None and by_suffix != fmt:
        raise ConfigError(f"--out {path}: a {path.suffix} file for format {fmt!r}; name it *.{fmt} or pass "
                          f"--format {by_suffix}")
    return fmt


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _versions(fmt: str) -> dict[str, str]:
    from mmfuse import __version__

    out = {"mmfuse": __version__, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx

        out["onnx"] = onnx.__version__
    return out


def _label(model: nn.Module) -> str:
    config = getattr(model, "config", None) or {}
    if config.get("type") == "unimodal":
        return f"uni:{config.get('modality')}"
    return str(config.get("fusion") or getattr(getattr(model, "fusion", None), "name", "") or type(model).__name__)


def _float_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_exportable(model: nn.Module, label: str) -> None:
    """Refuse what cannot be a graph before tracing, with the reason."""
    from mmfuse.encoders.pretrained import PretrainedEncoder

    encoders = dict(model.encoders.items()) if hasattr(model, "encoders") else {
        str(getattr(model, "modality", "?")): getattr(model, "encoder", None)}
    for m, enc in encoders.items():
        if isinstance(enc, PretrainedEncoder) and enc.kind == "text":
            name = getattr(getattr(getattr(enc, "backbone", None), "spec", None), "name", "")
            raise MmfuseError(
                f"cannot export {label}: encoder {m!r} (PretrainedEncoder {name}, fine-tuned) "
                "decodes token ids to words and runs the Hugging Face tokenizer in Python: a graph has no strings "
                "(export a model with a frozen text encoder, whose embeddings the preprocessing computes)")


def trace(model: nn.Module, *, task: str | None = None, class_names: Sequence[str] | None = None,
          frozen_encoders: Mapping[str, str] | None = None) -> Traced:
    """Trace ``model`` (built by :func:`mmfuse.build_model` or :func:`mmfuse.build_unimodal_model`,
    or loaded from a run) with ``torch.export`` into a :class:`Traced`, in eval mode.

    Args:
        model: the model; its ``config`` gives each modality's kind and shape.
        task: default the model's (``config["task"]``).
        class_names: for the sidecar (default ``0..k-1``).
        frozen_encoders: modality -> the frozen pretrained encoder that runs before the
            model (recorded in the sidecar).

    Raises:
        MmfuseError: the model has no config (a hand-assembled one), or a part of it cannot
            be traced (named, with the reason).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping) or "specs" not in config:
        raise MmfuseError(f"cannot export {type(model).__name__}: it has no config (build it with mmfuse.build_model "
                          "or load it from a run), so the inputs' kinds and shapes are unknown")
    label = _label(model)
    task = str(task or config.get("task") or "multiclass")
    k = int(config["num_classes"])
    names = tuple(str(c) for c in class_names) if class_names else tuple(str(i) for i in range(k))
    _check_exportable(model, label)
    specs = config["specs"]
    modalities = tuple(getattr(model, "modalities", sorted(specs)))
    slots = _slots(specs, modalities, task)
    dtype, device = _float_dtype(model)
    batch = torch.export.Dim("batch")
    args: list[Tensor] = []
    dynamic: list[dict[int, Any]] = []
    roles = _input_names(slots, task)
    for slot, role, _ in roles:
        spec = specs[slot.modality]
        if role == "data":
            x = _example(spec, slot.kind, dtype, device)
            axes: dict[int, Any] = {0: batch}
            if slot.tokens:
                axes[_TOKEN_AXIS[slot.kind]] = torch.export.Dim.AUTO
            args.append(x)
            dynamic.append(axes)
        elif role == "present":
            args.append(torch.ones(2, dtype=torch.bool, device=device))
            dynamic.append({0: batch})
        else:
            t = int(spec["shape"][_TOKEN_AXIS[slot.kind] - 1])
            args.append(torch.ones(2, t, dtype=torch.bool, device=device))
            dynamic.append({0: batch, 1: torch.export.Dim.AUTO})
    was_training = model.training
    module = ExportModule(model, slots, task).eval()
    try:
        with torch.no_grad():
            module(*args)  # eager first: its errors are the clearest, and what it caches is real tensors
            program = torch.export.export(module, tuple(args), dynamic_shapes=(tuple(dynamic),), strict=False)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds; the reason is in the message)
        raise MmfuseError(f"cannot export {label}: {_culprit(model, e)}: {_reason(e)}") from e
    finally:
        model.train(was_training)
    inputs, outputs, axis_names = _shapes(program, roles, task)
    rule = ALL_MISSING_RULE if module.multimodal else UNIMODAL_MISSING_RULE
    return Traced(program, module, inputs, outputs, label, task, names, dict(frozen_encoders or {}), axis_names,
                  rule)


def _culprit(model: nn.Module, error: BaseException) -> str:
    """The encoder, fusion or head in whose code ``error`` was raised (the deepest frame of
    the traceback whose ``self`` is one of them or inside one)."""
    owners: dict[int, str] = {}
    parts: list[tuple[str, nn.Module | None]] = []
    if hasattr(model, "encoders"):
        parts += [(f"encoder {m!r} ({type(e).__name__})", e) for m, e in model.encoders.items()]
    elif hasattr(model, "encoder"):
        parts.append((f"encoder {getattr(model, 'modality', '?')!r} ({type(model.encoder).__name__})", model.encoder))
    fusion = getattr(model, "fusion", None)
    if fusion is not None:
        parts.append((f"fusion {getattr(fusion, 'name', '') or type(fusion).__name__!r}", fusion))
    parts.append(("the head", getattr(model, "head", None)))
    for what, module in parts:
        if module is not None:
            for sub in module.modules():
                owners.setdefault(id(sub), what)
    tb: types.TracebackType | None = error.__traceback__
    found, where = None, ""
    while tb is not None:
        frame = tb.tb_frame
        owner = owners.get(id(frame.f_locals.get("self")))
        if owner is not None:
            found = owner
            where = f"{Path(frame.f_code.co_filename).name}:{tb.tb_lineno} in {frame.f_code.co_name}"
        tb = tb.tb_next
    if found is None:
        return "tracing failed"
    return f"{found}, at {where}"


def _reason(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else type(error).__name__
    return f"{type(error).__name__}: {text[:400]}"


def _shapes(program: Any, roles: Sequence[tuple[_Slot, str, str]], task: str
            ) -> tuple[tuple[ExportedTensor, ...], tuple[ExportedTensor, ...], dict[str, str]]:
    """The inputs' and outputs' shapes as traced (a fixed size, or the dynamic axis' name),
    and the name of each of the program's dynamic-axis symbols."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = program.graph_signature.user_inputs
    by_name = {n.name: n for n in placeholders}
    vals = [by_name[u].meta["val"] for u in user]
    symbols: dict[str, str] = {}
    batch_sym = str(vals[0].shape[0])
    if not isinstance(vals[0].shape[0], torch.SymInt):
        raise MmfuseError("cannot export: the traced model fixed the batch size (expected a dynamic batch axis)")
    symbols[batch_sym] = "batch"
    for (slot, role, _), v in zip(roles, vals, strict=True):
        if role == "data" and slot.tokens:
            t = v.shape[_TOKEN_AXIS[slot.kind]]
            if isinstance(t, torch.SymInt):
                symbols.setdefault(str(t), f"{slot.name}__length")

    def shape(v: Tensor) -> tuple[int | str, ...]:
        return tuple(symbols.get(str(s), str(s)) if isinstance(s, torch.SymInt) else int(s) for s in v.shape)

    inputs = tuple(ExportedTensor(name, _dtype_name(v.dtype), shape(v), slot.modality, role, slot.kind)
                   for (slot, role, name), v in zip(roles, vals, strict=True))
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    out_vals = [a.meta["val"] for a in out_node.args[0]]
    outputs = tuple(ExportedTensor(name, _dtype_name(v.dtype), shape(v))
                    for name, v in zip(_output_names(task), out_vals, strict=True))
    return inputs, outputs, symbols


def _onnx_bytes(traced: Traced) -> tuple[bytes, int]:
    """The program as an ONNX model (one file, weights inside), its axes named as in the sidecar."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise MmfuseError(f"ONNX export needs the onnx and onnxscript packages (pip install 'mmfuse[export]'): "
                          f"{e}") from e
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        # the exporter prints its progress, logs each registry entry it skips (torchvision's ops)
        # and warns about torch's own deprecations: none of it is the user's to act on
        quiet.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(traced.program, (), None, input_names=[t.name for t in traced.inputs],
                                        output_names=[t.name for t in traced.outputs], dynamo=True,
                                        external_data=False, verbose=False)
    except Exception as e:  # noqa: BLE001
        raise MmfuseError(f"cannot convert {traced.label} to ONNX: {_reason(e)}") from e
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    symbols = traced.axis_names
    values = [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return proto.SerializeToString(), opset


# ---------------------------------------------------------------- runs and feeds
def export_run(run: Any, path: str | os.PathLike[str], *, format: str | None = None) -> ExportInfo:
    """Export a loaded run (:func:`mmfuse.load_run`) to ``path``, with its sidecar and
    preprocessing beside it (see the module docstring)."""
    path = Path(path).expanduser()
    _format(path, format)  # a bad format before minutes of tracing
    traced = trace(run.model, task=run.task, class_names=run.class_names,
                   frozen_encoders=dict(getattr(run, "_frozen", {}) or {}))
    return traced.save(path, format=format, bundle=run.bundle.folder, preprocessor=run.preprocessor)


def export_command(run_path: str | os.PathLike[str], *, out: str | os.PathLike[str], format: str | None = None,
                   strategy: str | None = None) -> int:
    """Everything ``mmfuse export`` does: load the run, export, say what was written; the exit code."""
    from mmfuse.runs.predictor import load_run

    info = load_run(run_path, strategy=strategy).export(out, format=format)
    extra = f", {info.preprocessor}/" if info.preprocessor else ""
    print(f"wrote {out} (+ {info.file}.json{extra} beside it)")
    print("\n".join(info.lines()))
    return 0


def read_export(path: str | os.PathLike[str]) -> ExportInfo:
    """The sidecar of the exported model at ``path`` (the model file, or its ``.json``),
    checked against the file's SHA-256."""
    path = Path(path).expanduser()
    side = path if path.suffix == ".json" and not path.name.endswith((".onnx", ".pt2")) else _sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path}: no export sidecar {side.name} beside it")
    try:
        info = ExportInfo.from_json(json.loads(side.read_text()), where=str(side))
    except ValueError as e:
        if isinstance(e, MmfuseError):
            raise
        raise CheckpointError(f"{side}: cannot read the export sidecar: {e}") from e
    model_file = side.with_name(info.file)
    if not model_file.is_file():
        raise CheckpointError(f"{side}: the exported model {info.file} is missing")
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    if digest != info.sha256:
        raise CheckpointError(f"{model_file}: SHA-256 {digest[:12]}... is not the sidecar's {info.sha256[:12]}... "
                              "(the file was replaced after export: export again)")
    return info


def feeds(info: ExportInfo, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None,
          *, numpy: bool = True) -> dict[str, Any]:
    """The exported model's inputs from dataset-style ``inputs`` and ``masks`` (modality ->
    tensor and ``(b,)`` or ``(b, t)`` mask: what :meth:`mmfuse.Run.transform` gives as
    ``.inputs`` and ``.masks``), by name in graph order; numpy arrays (for onnxruntime),
    or tensors with ``numpy=False`` (for a ``pt2`` program: ``module(*feeds(...).values())``).

    A ``(b, t)`` mask of a text modality (no token input in the graph) becomes pad ids
    where it is False and the presence ``mask.any(1)``: what the text encoder reads.
    """
    masks = dict(masks or {})
    out: dict[str, Any] = {}
    data: dict[str, Tensor] = {}
    for t in info.inputs:
        m = t.modality
        if m not in inputs:
            raise DataError(f"modality {m!r}: expected a tensor for the exported input {t.name!r}, got nothing")
        x = torch.as_tensor(inputs[m])
        b = x.shape[0]
        mask = masks.get(m)
        mask = torch.ones(b, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
        if t.role == "data":
            if t.kind == "text" and mask.dim() == 2:
                x = torch.where(mask, x, torch.zeros((), dtype=x.dtype))
            value = x.to(getattr(torch, t.dtype))
            data[m] = value
        elif t.role == "present":
            value = mask if mask.dim() == 1 else mask.reshape(b, -1).any(dim=1)
        else:  # tokens
            steps = data[m].shape[_TOKEN_AXIS[str(t.kind)]]
            value = mask if mask.dim() == 2 else torch.ones(b, steps, dtype=torch.bool)
        out[t.name] = value.contiguous().numpy() if numpy else value.contiguous()
    return out
