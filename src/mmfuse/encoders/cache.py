"""Encode a dataset's modalities once with frozen pretrained encoders, cached on disk.

Shape legend: ``n`` samples, ``t`` tokens, ``d`` the backbone's hidden size. Masks are
bool, True means keep.

:func:`encode_dataset` replaces each named modality of every split by its embeddings:
a ``vector`` ``(d,)`` with the ``(n,)`` presence mask (``output="pooled"``), or a
``sequence`` ``(t, d)`` with an ``(n, t)`` token mask (``output="tokens"``), so every
fusion strategy and :func:`mmfuse.training.fit` work on them unchanged. A missing
sample (mask False) is encoded anyway and then zeroed, with its mask False.

The cache: one entry per (modality, split), a folder
``<cache_dir>/<modality>-<split>-<key>/`` named by a sha256 ``key`` of

- the data: the stored tensor and mask of that split (or the raw inputs: each
  string's content, each waveform's samples), and the vocabulary used to decode text,
- the encoder: its name, revision, output kind and the sha256 of its weights,
- the preprocessing: tokenizer vocabulary and ``max_length``, image size, mean and
  std, the cache format version.

A changed data file or encoder therefore yields another key: its stale entry is simply
never read again (:func:`clear_cache` removes everything). The entry holds one
safetensors file per chunk of ``chunk_size`` samples, each written with
:func:`mmfuse.io.atomic_write` as soon as it is encoded, so a crash loses at most the
chunk in progress and a rerun resumes after the last complete one; ``manifest.json``
(the sha256 of every chunk) is written last. Reading checks every chunk against the
manifest and its shapes; a chunk that is unreadable, torn or altered is encoded again
(the rest of the entry is kept).

What a text modality's backbone reads: the raw strings when there are any
(``raw_inputs``, or a table's joined text columns, ``splits.info["texts"]``, which
:func:`mmfuse.data.from_table` keeps), else the stored ids decoded with the dataset's
vocabulary (see :mod:`mmfuse.encoders.pretrained`).

:func:`encode_for_prediction` is the same encoding for new rows of a trained run
(:meth:`mmfuse.runs.Run.transform`): the backbone recorded at training, checked
against the sha256 of its weights, the same output kind, no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmfuse.data._base import DatasetSplits, ModalitySpec, MultimodalDataset
from mmfuse.encoders._base import EncoderError
from mmfuse.encoders.pretrained import (
    EncoderSpec,
    PretrainedBackbone,
    decode_ids,
    load_backbone,
    parse_encoder,
)
from mmfuse.errors import CheckpointError, ConfigError, MmfuseError
from mmfuse.io import atomic_write
from mmfuse.records import RecordVersionError, check_format, stamp

__all__ = ["CACHE_VERSION", "CacheStats", "clear_cache", "default_cache_dir", "encode_dataset",
           "encode_for_prediction", "prepare_encoders"]

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")


def _safe_name(modality: str) -> str:
    """A modality's name as one path component inside the cache (``/``, ``..`` and other
    characters a path gives meaning to are replaced): the key already identifies the entry."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", modality).strip(".") or "_"
    return cleaned[:64]


def default_cache_dir() -> Path:
    """``$MMFUSE_CACHE/embeddings`` (default ``~/.cache/mmfuse/processed/embeddings``)."""
    from mmfuse.data._files import cache_dir

    return cache_dir() / "embeddings"


def clear_cache(cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Remove every embedding entry under ``cache_dir``; returns how many were removed."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    n = 0
    for entry in root.glob("*-*-*") if root.is_dir() else []:
        if entry.is_dir():
            shutil.rmtree(entry)
            n += 1
    return n


@dataclass
class CacheStats:
    """What one :func:`encode_dataset` call did for one (modality, split).

    Attributes:
        key: the cache key (``None`` with the cache off).
        path: the entry's folder.
        encoded: samples run through the backbone now.
        reused: samples read from the cache.
        rebuilt_chunks: chunks found corrupt and encoded again.
    """

    key: str | None
    path: str | None
    encoded: int = 0
    reused: int = 0
    rebuilt_chunks: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _sha_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())


def _data_digest(x: Any, mask: Tensor, extra: Any) -> str:
    h = hashlib.sha256()
    if isinstance(x, Tensor):
        _sha_tensor(h, x)
    else:  # raw inputs: strings or waveforms
        for item in x:
            if isinstance(item, str):  # length-prefixed: no two lists of strings hash alike
                b = item.encode()
                h.update(b"s%d:" % len(b) + b)
            else:
                _sha_tensor(h, torch.as_tensor(np.asarray(item)))
    _sha_tensor(h, mask)
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


class _Progress:
    """A progress bar on stderr: ``rich`` when installed, else plain text lines."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.done = total, label, 0
        self._bar: Any = None
        self._rich: Any = None
        if not enabled:
            self.total = -1
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._rich = Progress("[progress.description]{task.description}", BarColumn(),
                                  MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self._rich.start()
            self._bar = self._rich.add_task(label, total=total)
        except ImportError:
            print(f"mmfuse: {label}: 0/{total}", file=sys.stderr)

    def advance(self, n: int) -> None:
        self.done += n
        if self.total < 0:
            return
        if self._rich is not None:
            self._rich.update(self._bar, completed=self.done)
        else:
            print(f"mmfuse: {self.label}: {self.done}/{self.total}", file=sys.stderr)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()


def _raw_batch(backbone: PretrainedBackbone, x: Any, lo: int, hi: int, vocab: Sequence[str] | None,
               spec: ModalitySpec) -> Any:
    if not isinstance(x, Tensor):
        return list(x[lo:hi])
    if backbone.kind == "text":
        assert vocab is not None
        unk = getattr(backbone.tokenizer, "unk_token", None) or "[UNK]"
        return decode_ids(x[lo:hi], vocab, pad_id=int(spec.meta.get("pad_id", 0)),
                          unk_id=spec.meta.get("unk_id", 1), unk_token=unk)
    return x[lo:hi]


def _encode_rows(backbone: PretrainedBackbone, raw: Any, present: Tensor, output: str) -> dict[str, Tensor]:
    with torch.inference_mode():
        tokens, tmask, pooled = backbone(raw)
    present = present.to(tokens.device)
    if output == "tokens":
        tmask = tmask & present.unsqueeze(1)
        feats = tokens * tmask.unsqueeze(-1).to(tokens.dtype)
        return {"x": feats.float().cpu().contiguous(), "mask": tmask.cpu().contiguous()}
    feats = torch.where(present.unsqueeze(1), pooled, pooled.new_zeros(()))
    return {"x": feats.float().cpu().contiguous(), "mask": present.cpu().contiguous()}


def _chunk_ok(path: Path, want_sha: str | None, lo: int, rows: int, key: str) -> dict[str, Tensor] | None:
    """The chunk's tensors, or None when it is missing, unreadable or not what is expected."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_file():
        return None
    try:
        blob = path.read_bytes()
        if want_sha is not None and hashlib.sha256(blob).hexdigest() != want_sha:
            return None
        tensors = load(blob)
        with_meta = _safetensors_meta(blob)
    except (OSError, SafetensorError, ValueError, RuntimeError, json.JSONDecodeError):
        return None
    if with_meta.get("key") != key or with_meta.get("rows") != f"{lo}:{lo + rows}" or set(tensors) != {"x", "mask"}:
        return None
    if tensors["x"].shape[0] != rows or tensors["mask"].shape[0] != rows or tensors["mask"].dtype != torch.bool:
        return None
    return tensors


def _safetensors_meta(blob: bytes) -> dict[str, str]:
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    return dict(header.get("__metadata__", {}))


def _encode_entry(
    backbone: PretrainedBackbone,
    x: Any,
    mask: Tensor,
    spec: ModalitySpec,
    vocab: Sequence[str] | None,
    *,
    folder: Path | None,
    key: str | None,
    label: str,
    progress: bool,
    chunk_size: int,
) -> tuple[Tensor, Tensor, CacheStats]:
    from safetensors.torch import save

    n = len(x)
    present = mask if mask.dim() == 1 else mask.any(dim=1)
    stats = CacheStats(key=key, path=str(folder) if folder else None)
    manifest: dict[str, Any] = {}
    if folder is not None and (folder / "manifest.json").is_file():
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if (not _manifest_version_ok(manifest) or manifest.get("key") != key
                or manifest.get("chunk_size") != chunk_size
                or not isinstance(manifest.get("chunks"), list)
                or not all(isinstance(c, str) and len(c) == 64 for c in manifest["chunks"])):
            manifest = {}
    # a chunk is used only against the SHA-256 its manifest recorded: without one (a missing or
    # damaged manifest) it is encoded again, never trusted on its own metadata
    shas = list(manifest.get("chunks", []))
    bounds = [(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)] or [(0, 0)]
    parts: list[dict[str, Tensor]] = []
    chunk_shas: list[str] = []
    bar: _Progress | None = None
    bs = backbone.spec.batch_size
    for i, (lo, hi) in enumerate(bounds):
        path = folder / f"chunk-{i:05d}.safetensors" if folder is not None else None
        got = None
        if path is not None:
            got = _chunk_ok(path, shas[i], lo, hi - lo, key or "") if i < len(shas) else None
            if got is None and path.is_file():
                stats.rebuilt_chunks += 1
        if got is not None:
            stats.reused += hi - lo
            assert path is not None
            chunk_shas.append(shas[i])
            parts.append(got)
            continue
        if bar is None:
            bar = _Progress(n - lo, label, progress)
        pieces = []
        for b0 in range(lo, hi, bs):
            b1 = min(b0 + bs, hi)
            pieces.append(_encode_rows(backbone, _raw_batch(backbone, x, b0, b1, vocab, spec), present[b0:b1],
                                       backbone.spec.output))
            bar.advance(b1 - b0)
        got = {k: torch.cat([p[k] for p in pieces]) for k in ("x", "mask")} if pieces else {}
        stats.encoded += hi - lo
        if path is not None and got:
            blob = save(got, metadata={"key": key or "", "rows": f"{lo}:{hi}"})
            try:
                atomic_write(path, blob)
            except OSError as err:  # an unwritable cache only warns: the run goes on uncached
                warnings.warn(f"mmfuse: cannot write the embedding cache {folder}: {err}", stacklevel=3)
                folder = path = None
            chunk_shas.append(hashlib.sha256(blob).hexdigest())
            if folder is not None:  # the manifest follows every chunk: a killed run resumes from it
                _write_manifest(folder, key, n, chunk_size, got, chunk_shas + shas[len(chunk_shas):])
        parts.append(got)
    if bar is not None:
        bar.close()
    parts = [p for p in parts if p]
    if not parts:
        raise EncoderError(f"{label}: no samples to encode")
    feats = torch.cat([p["x"] for p in parts])
    fmask = torch.cat([p["mask"] for p in parts])
    if folder is not None and len(chunk_shas) == len(bounds) and (
            chunk_shas != shas or stats.encoded or stats.rebuilt_chunks):
        _write_manifest(folder, key, n, chunk_size, parts[-1], chunk_shas)  # every chunk, with the reused ones
    return feats, fmask, stats


def _manifest_version_ok(manifest: Any) -> bool:
    """A manifest of this layout: ``"format": "mmfuse.embedding_cache/1"``, or ``"version": 1``
    as mmfuse wrote it before (its chunks are still used)."""
    try:
        check_format(manifest, "embedding_cache", CACHE_VERSION, legacy="version")
    except RecordVersionError:
        return False
    return True


def _write_manifest(folder: Path, key: str | None, n: int, chunk_size: int, chunk: Mapping[str, Tensor],
                    shas: Sequence[str]) -> None:
    """The entry's manifest: the SHA-256 of every chunk written so far, in order."""
    try:
        atomic_write(folder / "manifest.json", json.dumps(stamp("embedding_cache", CACHE_VERSION, {
            "key": key, "n": n, "chunk_size": chunk_size,
            "shape": list(chunk["x"].shape[1:]), "mask_shape": list(chunk["mask"].shape[1:]), "chunks": list(shas),
        }), indent=1))
    except OSError as err:
        warnings.warn(f"mmfuse: cannot write the embedding cache {folder}: {err}", stacklevel=3)


def _vocab_for(splits: DatasetSplits, modality: str) -> list[str] | None:
    """id -> word of a text modality: the spec's, the dataset's, or a table's fitted text block's."""
    spec = splits.specs[modality]
    vocab = spec.meta.get("vocab") or (splits.info.get("vocabs", {}) or {}).get(modality)
    if vocab is None and "vocab" in splits.info and sum(s.kind == "text" for s in splits.specs.values()) == 1:
        vocab = splits.info["vocab"]
    if vocab is None:  # a table (mmfuse.data.from_table): the vocabulary its preprocessor fitted
        block = (getattr(splits.info.get("preprocessor"), "blocks", None) or {}).get(modality)
        vocab = getattr(block, "vocabulary", None)
    return list(vocab) if vocab is not None else None


def _table_texts(splits: DatasetSplits, modality: str) -> dict[str, list[str]] | None:
    """A table's raw joined strings of a text modality per split (``splits.info["texts"]``), checked."""
    texts = (splits.info.get("texts") or {}).get(modality)
    if texts is None:
        return None
    out = {}
    for split in SPLITS:
        strings = list(texts.get(split, []))
        n = len(getattr(splits, split))
        if len(strings) != n or not all(isinstance(t, str) for t in strings):
            raise ConfigError(
                f"encoders: text modality {modality!r}: expected {n} strings for the {split} split in "
                f"splits.info['texts'], got {len(strings)} (were the splits changed after loading the table?)"
            )
        out[split] = strings
    return out


def _local_folder(enc: EncoderSpec) -> str | None:
    """The absolute path of an ``hf:`` encoder's local model folder, or None for a hub name."""
    if enc.source != "hf":
        return None
    path = Path(os.path.expanduser(enc.model_id))
    return str(path.resolve()) if path.is_dir() else None


def encode_dataset(
    splits: DatasetSplits,
    encoders: Mapping[str, str | EncoderSpec],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    raw_inputs: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    chunk_size: int = 1024,
    stats: dict[str, dict[str, CacheStats]] | None = None,
    backbone_factory: Callable[[EncoderSpec, str], PretrainedBackbone] = load_backbone,
) -> DatasetSplits:
    """``splits`` with each modality named in ``encoders`` replaced by its frozen embeddings.

    Args:
        splits: the dataset (e.g. from :func:`mmfuse.data.load_dataset`).
        encoders: modality -> encoder name (``"hf:./my-bert"``, ``"timm:resnet18"``,
            ``"hf:bert-base-uncased,tokens"``, ``"builtin"`` to leave it as it is) or
            :class:`~mmfuse.encoders.EncoderSpec`. Only frozen encoders: one that
            fine-tunes must run inside the model (``build_model(...,
            encoder_options={m: {"pretrained": name}})``).
        cache_dir: where entries live (default :func:`default_cache_dir`).
        cache: False encodes without reading or writing the cache.
        progress: show a progress bar while encoding.
        device: where the backbone runs (default ``cuda`` when available, else ``cpu``).
        raw_inputs: modality -> split -> one raw item per sample (strings for text,
            1-D waveforms for audio), used instead of the stored form. A table's text
            modality needs none: its raw strings (``splits.info["texts"]``) are used.
        chunk_size: samples per cache file (the unit of resuming after a crash).
        stats: if given, filled with ``{modality: {split: CacheStats}}``.
        backbone_factory: loads a backbone (tests and custom models).

    Returns:
        New :class:`~mmfuse.data.DatasetSplits`; ``info["encoders"]`` records each
        encoder's spec, weights' checksum, preprocessing facts, local folder (absolute),
        what it read (``raw`` strings/waveforms or the ``stored`` form) and cache keys.

    Raises:
        ConfigError: an unknown modality, a fine-tuning encoder, a text modality
            with neither raw strings nor a vocabulary, a missing extra or an
            unreachable model.
    """
    if not isinstance(splits, DatasetSplits):
        raise ConfigError(f"splits: expected a DatasetSplits, got {type(splits).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    parsed = {m: parse_encoder(e) for m, e in encoders.items()}
    unknown = sorted(set(parsed) - set(splits.modalities))
    if unknown:
        raise ConfigError(f"encoders: unknown modality {unknown[0]!r}: expected one of {list(splits.modalities)}")
    raw_inputs = dict(raw_inputs or {})
    for m in raw_inputs:
        if m not in parsed:
            raise ConfigError(f"raw_inputs: modality {m!r} has no encoder in encoders")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    new_specs = dict(splits.specs)
    data = {s: (dict(getattr(splits, s).inputs), dict(getattr(splits, s).masks)) for s in SPLITS}
    record: dict[str, Any] = {}
    for m, enc in sorted(parsed.items()):
        if enc.source == "builtin":
            continue
        if not enc.frozen:
            raise ConfigError(
                f"encoders: modality {m!r}: {str(enc)!r} fine-tunes, so it cannot be encoded once: put it in the "
                f"model with build_model(..., encoder_options={{{m!r}: {{'pretrained': {str(enc)!r}}}}})"
            )
        spec = splits.specs[m]
        vocab = None
        if spec.kind == "text" and m not in raw_inputs:
            table_texts = _table_texts(splits, m)  # a table's raw strings: better than decoding ids
            if table_texts is not None:
                raw_inputs[m] = table_texts
        if spec.kind == "text" and m not in raw_inputs:
            vocab = _vocab_for(splits, m)
            if vocab is None:
                raise ConfigError(
                    f"encoders: text modality {m!r}: expected its vocabulary (id -> word) in "
                    f"splits.info['vocab'] or spec.meta['vocab'] to turn token ids back into words, got none; "
                    f"pass the strings with raw_inputs={{{m!r}: {{'train': [...], 'val': [...], 'test': [...]}}}}"
                )
        if spec.kind == "audio" and m not in raw_inputs:
            raise ConfigError(
                f"encoders: audio modality {m!r} stores a {tuple(spec.shape)} spectrogram; {enc.name!r} reads "
                f"waveforms: pass them with raw_inputs={{{m!r}: {{'train': [...], 'val': [...], 'test': [...]}}}}"
            )
        backbone = backbone_factory(enc, spec.kind).to(dev)
        backbone.eval()
        checksum = backbone.checksum()
        enc_key = {"cache": CACHE_VERSION, "encoder": enc.name, "revision": enc.revision, "output": enc.output,
                   "weights": checksum, "preprocess": backbone.preprocess}
        record[m] = {"spec": enc.to_json(), "weights_sha256": checksum, "source_kind": spec.kind,
                     "source_shape": list(spec.shape), "reads": "raw" if m in raw_inputs else "stored",
                     "folder": _local_folder(enc), "preprocess": backbone.preprocess, "keys": {}}
        for split in SPLITS:
            inputs, masks = data[split]
            if m in raw_inputs:
                x: Any = list(raw_inputs[m].get(split, []))
                if len(x) != len(masks[m]):
                    raise ConfigError(f"raw_inputs[{m!r}][{split!r}]: expected {len(masks[m])} items, got {len(x)}")
            else:
                x = inputs[m]
            key = hashlib.sha256(json.dumps({
                "enc": enc_key, "data": _data_digest(x, masks[m], vocab),
            }, sort_keys=True).encode()).hexdigest()[:32]
            folder = root / f"{_safe_name(m)}-{split}-{key}" if cache else None
            feats, fmask, st = _encode_entry(
                backbone, x, masks[m], spec, vocab, folder=folder, key=key if cache else None,
                label=f"encoding {splits.name}/{m}/{split} with {enc.name}", progress=progress,
                chunk_size=chunk_size,
            )
            inputs[m], masks[m] = feats, fmask
            record[m]["keys"][split] = key if cache else None
            if stats is not None:
                stats.setdefault(m, {})[split] = st
        meta = {"encoder": str(enc), "source_kind": spec.kind, "source_shape": list(spec.shape)}
        new_specs[m] = (ModalitySpec("sequence", tuple(feats.shape[1:]), meta) if enc.output == "tokens"
                        else ModalitySpec("vector", tuple(feats.shape[1:]), meta))
        del backbone
    out = {}
    for split in SPLITS:
        old: MultimodalDataset = getattr(splits, split)
        inputs, masks = data[split]
        out[split] = MultimodalDataset(old.name, inputs, old.labels, specs=new_specs, num_classes=old.num_classes,
                                       masks=masks, class_names=old.class_names, task=old.task)
    info = dict(splits.info)
    info["encoders"] = {**dict(info.get("encoders", {})), **record}
    return DatasetSplits(splits.name, out["train"], out["val"], out["test"], info)


def prepare_encoders(
    splits: DatasetSplits,
    encoders: Mapping[str, str | EncoderSpec],
    **encode_options: Any,
) -> tuple[DatasetSplits, dict[str, dict[str, Any]]]:
    """Apply per-modality encoder names the way a run needs them: frozen pretrained
    encoders are run once (:func:`encode_dataset`, cached), fine-tuned ones go into the
    model.

    Returns ``(splits, encoder_options)``: the splits with the frozen modalities
    replaced by their embeddings, and the ``encoder_options`` to pass to
    :func:`mmfuse.models.build_model` (``{modality: {"pretrained": name, ...}}`` for
    each fine-tuned encoder; a text modality also gets its ``vocab``). ``builtin``
    leaves a modality as it is.

    A table's text modality (:func:`mmfuse.data.from_table`): a frozen encoder reads
    its raw strings; a fine-tuned one runs on every batch, which holds the stored ids,
    so it reads them decoded with the vocabulary the table's preprocessor fitted
    (words outside it become the tokenizer's unknown token, the text is cut to
    ``max_tokens``).

    Example (the ``--encoder image=timm:resnet18 --encoder text=hf:./my-bert`` flags)::

        splits, enc_opts = prepare_encoders(splits, {"image": "timm:resnet18", "text": "hf:./my-bert"})
        model = build_model(splits, fusion="gated", encoder_options=enc_opts)
    """
    parsed = {m: parse_encoder(e) for m, e in encoders.items()}
    unknown = sorted(set(parsed) - set(splits.modalities))
    if unknown:
        raise ConfigError(f"encoders: unknown modality {unknown[0]!r}: expected one of {list(splits.modalities)}")
    frozen = {m: e for m, e in parsed.items() if e.source != "builtin" and e.frozen}
    options: dict[str, dict[str, Any]] = {}
    for m, e in sorted(parsed.items()):
        if e.source == "builtin" or e.frozen:
            continue
        opts: dict[str, Any] = {"pretrained": str(e)}
        if splits.specs[m].kind == "text" and "vocab" not in splits.specs[m].meta:
            vocab = _vocab_for(splits, m)
            if vocab is None:
                raise ConfigError(f"encoders: text modality {m!r}: {str(e)!r} fine-tunes inside the model, which "
                                  f"reads the stored token ids: expected their vocabulary (id -> word) in "
                                  f"splits.info['vocab'] or spec.meta['vocab'], got none; a frozen encoder "
                                  f"({e.name!r}) can read raw strings instead")
            opts["vocab"] = vocab
        options[m] = opts
    out = encode_dataset(splits, frozen, **encode_options) if frozen else splits
    return out, options


# ---------------------------------------------------------------- new rows of a trained run


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _prediction_backbone(run: Any, modality: str, enc: EncoderSpec, kind: str,
                         record: Mapping[str, Any]) -> PretrainedBackbone:
    """The run's backbone of ``modality``, loaded once (``run._backbones``) and checked
    against what training recorded: the same weights and preprocessing."""
    cached = run._backbones.get(modality)
    if cached is not None and cached[0] == enc:
        return cached[1]
    where = f"{run.bundle.folder}: modality {modality!r}"
    load = enc
    folder = record.get("folder")
    if folder and Path(folder).is_dir():  # the folder used at training, whatever the current directory
        load = replace(enc, name=f"hf:{folder}")
    try:
        backbone = load_backbone(load, kind)
    except ConfigError as err:
        raise CheckpointError(f"{where} was encoded at training by the frozen encoder {str(enc)!r}, "
                              f"which cannot be loaded now: {err}") from err
    backbone = backbone.to(run.device).eval()
    want = record.get("weights_sha256")
    got = backbone.checksum()
    if want and got != want:
        raise CheckpointError(
            f"{where}: the weights of the frozen encoder {str(enc)!r} (at {folder or enc.model_id}) are not "
            f"the ones this model was trained with (sha256 {str(want)[:12]}... at training, {got[:12]}... now): "
            f"the model folder changed since training, so restore it or train again"
        )
    facts = record.get("preprocess")
    if facts is not None and _normalised(facts) != _normalised(backbone.preprocess):
        raise CheckpointError(
            f"{where}: the preprocessing of the frozen encoder {str(enc)!r} (tokenizer or image processor) is not "
            f"the one this model was trained with ({_normalised(facts)} at training, "
            f"{_normalised(backbone.preprocess)} now): restore the model folder or train again"
        )
    run._backbones[modality] = (enc, backbone)
    return backbone


def encode_for_prediction(run: Any, modality: str, name: str, transformed: Any) -> tuple[Tensor, Tensor]:
    """New rows' ``modality`` through the frozen encoder ``name`` of a trained run, as at training.

    Args:
        run: the :class:`mmfuse.runs.Run` (its ``bundle``, ``device``, and ``_backbones``,
            where the loaded backbone is kept for the next call).
        modality: the modality.
        name: its encoder, as recorded in the bundle (``data_encoders``).
        transformed: the rows after the run's preprocessing
            (:class:`~mmfuse.data.table.Transformed`): a text modality is read from its raw
            strings (``texts``), an image modality from its preprocessed images (``inputs``).

    Returns:
        ``(n, d)`` embeddings with the ``(n,)`` presence mask (``pooled``), or ``(n, t, d)``
        with the ``(n, t)`` token mask (``tokens``): the values the training cache holds for
        the same rows. A row whose modality is missing (an empty text, mask False) is zeros
        with its mask False. ``builtin`` and fine-tuned encoders run inside the model: the
        rows' stored form is returned as it is.

    Raises:
        CheckpointError: the backbone cannot be loaded, or its weights or preprocessing
            are not the ones recorded at training (the local model folder changed).
        MmfuseError: an audio modality (training read waveforms the rows do not give),
            or a text modality without its raw strings.
    """
    enc = parse_encoder(name)
    if enc.source == "builtin" or not enc.frozen:
        return transformed.inputs[modality], transformed.masks[modality]
    record = dict((run.bundle.manifest.get("encoders") or {}).get(modality) or {})
    stored = run.preprocessor.specs[modality] if run.preprocessor is not None else None
    kind = str(record.get("source_kind") or (stored.kind if stored is not None else ""))
    if kind not in ("text", "image"):
        raise MmfuseError(
            f"{run.bundle.folder}: modality {modality!r}: predicting with the frozen encoder {str(enc)!r} takes "
            f"text (its raw strings) or images, got a {kind or 'unknown'} modality"
        )
    mask = transformed.masks[modality]
    present = mask if mask.dim() == 1 else mask.reshape(mask.shape[0], -1).any(dim=1)
    if kind == "text":
        texts = (getattr(transformed, "texts", None) or {}).get(modality)
        if texts is None or len(texts) != len(present):
            got = "none" if texts is None else f"{len(texts)}"
            raise MmfuseError(f"{run.bundle.folder}: text modality {modality!r}: expected the raw strings of "
                              f"its {len(present)} rows from the preprocessing, got {got}")
        x: Any = [str(t) for t in texts]
        present = present & torch.tensor([bool(t) for t in x], dtype=torch.bool)
    else:
        x = transformed.inputs[modality]
    backbone = _prediction_backbone(run, modality, enc, kind, record)
    n = len(x)
    if n == 0:  # no rows: the shapes from one dummy row
        x = [""] if kind == "text" else x.new_zeros((1, *x.shape[1:]))
        present = torch.zeros(1, dtype=torch.bool)
    if stored is None:
        stored = ModalitySpec(kind, tuple(record.get("source_shape") or ()))  # type: ignore[arg-type]
    feats, fmask, _ = _encode_entry(backbone, x, present, stored, None, folder=None, key=None,
                                    label=f"encoding {modality} with {enc.name}", progress=False,
                                    chunk_size=max(len(x), 1))
    return feats[:n], fmask[:n]
