"""Use a trained model: load its bundle, predict on new rows, explain, evaluate.

Shape legend: ``n`` rows, ``k`` classes (labels, target columns), ``M`` modalities,
``d`` fused features.

:func:`load_run` takes a run bundle (:mod:`mmfuse.runs.bundle`: what ``mmfuse train``
writes, or one model of a bench folder) or a bench folder with a strategy name (the
recommended one by default) and returns a :class:`Run`. Its methods take a DataFrame
(or a table's path) with the training table's column names; the saved preprocessing
turns it into the model's inputs with the rules of new data
(:class:`~mmfuse.data.TablePreprocessor`); the training table is never read.

- :meth:`Run.predict`: one row per input row, in order: the predicted class and one
  probability per class (binary, multiclass), the labels and one probability per label
  (multilabel), the value in the target's units (regression). A row with every
  modality missing gets empty cells.
- :meth:`Run.predict_proba`, :meth:`Run.embed` (the fused representation before the
  head), :meth:`Run.evaluate` (the metrics on rows that have the target),
  :meth:`Run.explain` (per row, each modality's Shapley value through the presence
  masks, the modality weights where the strategy has them, and ``trusted``'s
  uncertainty and per-modality opinions).
- :meth:`Run.predict_file`: a table of any size in batches of rows (Parquet read one
  batch at a time, CSV in chunks), the output written as it goes, so memory is bounded.

Per-row Shapley values: the game of a row is ``v(S)`` = the model's output for the row
(the probability of its predicted class, or the regression value) with only the
modalities in ``S`` present; ``v(empty)`` is the training prior (class frequency,
target mean), since the contract refuses a sample with no modality. Exact over all
``2^M`` coalitions: ``phi_i = sum_{S not containing i} |S|! (M - |S| - 1)! / M! (v(S+i) - v(S))``,
so ``sum_i phi_i = v(all) - v(empty)``. A modality missing in the row gets 0.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from mmfuse.errors import CheckpointError, ConfigError, DataError, MmfuseError
from mmfuse.records import check_format
from mmfuse.runs.bundle import Bundle, is_bundle, read_bundle

__all__ = ["PredictSummary", "Run", "load_run", "resolve_run"]

_EXPLAIN_MAX_MODALITIES = 10


@dataclass
class PredictSummary:
    """What :meth:`Run.predict_file` did: rows in and predicted, and what reading found."""

    rows: int = 0
    predicted: int = 0
    not_predicted: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    absent_columns: list[str] = field(default_factory=list)
    bad_files: int = 0
    metrics: dict[str, float] | None = None
    out: Path | None = None

    def add(self, t: Any) -> None:
        self.rows += len(t)
        self.predicted += int(t.usable.sum())
        self.not_predicted += int((~t.usable).sum())
        for k, v in t.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.extra_columns = self.extra_columns or list(t.extra_columns)
        self.absent_columns = self.absent_columns or list(t.absent_columns)
        self.bad_files += len(t.bad_files)

    def lines(self) -> list[str]:
        return summary_lines(self.rows, self.predicted, extra_columns=self.extra_columns,
                             absent_columns=self.absent_columns, counts=self.counts, bad_files=self.bad_files)


def summary_lines(rows: int, predicted: int, *, extra_columns: Sequence[str] = (), absent_columns: Sequence[str] = (),
                  counts: Mapping[str, int] | None = None, bad_files: int = 0) -> list[str]:
    """What a prediction found, one line each (``mmfuse predict``, the server, the Ray job)."""
    out = [f"rows: {rows}, predicted: {predicted}"
           + (f", not predicted (every modality missing): {rows - predicted}" if rows > predicted else "")]
    if extra_columns:
        out.append(f"ignored columns the model does not use: {', '.join(extra_columns)}")
    if absent_columns:
        out.append(f"columns absent (their modality is missing in every row): {', '.join(absent_columns)}")
    for k, v in (counts or {}).items():
        out.append(f"{k}: {v} rows")
    if bad_files:
        out.append(f"unreadable files (their modality is missing in that row): {bad_files}")
    return out


def resolve_run(path: str | os.PathLike[str], strategy: str | None = None) -> Path:
    """The bundle folder of ``path``: a bundle itself, or in a bench folder the standard run of
    ``strategy`` (a fusion name or ``uni:<modality>``; default: the recommended one) with the
    lowest seed."""
    folder = Path(path).expanduser()
    if is_bundle(folder):
        if strategy is not None:
            raise ConfigError(f"{folder} is one model's run; --strategy is for a bench folder")
        return folder
    results = folder / "results.json"
    if not results.is_file():
        if not folder.exists():
            raise CheckpointError(f"{folder}: no such run or bench folder")
        return read_bundle(folder).folder  # says what is wrong with it
    try:
        doc = json.loads(results.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{results}: cannot read the bench results: {e}") from e
    from mmfuse.bench.store import RESULTS_VERSION

    check_format(doc, "bench_results", RESULTS_VERSION, unversioned=1, where=str(results), error=CheckpointError)
    verdicts = (doc.get("meta") or {}).get("verdicts") or {}
    runs = [r for r in doc.get("runs", []) if r.get("status") == "ok"]
    datasets = sorted({r.get("dataset") for r in runs})
    if len(datasets) != 1:
        raise ConfigError(f"{folder}: a bench of {len(datasets)} datasets ({', '.join(map(str, datasets))}); "
                          "predict takes a bench of one dataset (the bundles are in models/<key>/)")
    dataset = datasets[0]
    if strategy is None:
        rec = (verdicts.get(dataset) or {}).get("recommendation") or {}
        strategy = rec.get("pick")
        if not strategy:
            raise ConfigError(f"{folder}: the bench made no recommendation for {dataset}; pass --strategy NAME")
    from mmfuse.experiment.specs import ExperimentSpec, Variant

    chosen = []
    for r in runs:
        spec = ExperimentSpec.from_json(r["spec"])
        if spec.label == strategy and spec.variant in (Variant.STANDARD, Variant.UNIMODAL):
            chosen.append((spec.seed, r["train_key"]))
    if not chosen:
        labels = sorted({r.get("label") for r in runs})
        raise ConfigError(f"{folder}: no finished run of strategy {strategy!r}; the bench has {labels}")
    seed, key = min(chosen)
    bundle = folder / "models" / key
    if not is_bundle(bundle):
        raise CheckpointError(f"{folder}: strategy {strategy!r} (seed {seed}) has no bundle at {bundle} "
                              "(a bench from before bundles existed: run the bench again into a new folder)")
    return bundle


def load_run(path: str | os.PathLike[str], *, strategy: str | None = None,
             device: str | torch.device = "cpu", threads: int | str = "auto") -> Run:
    """The trained model at ``path`` (a bundle, or a bench folder and ``strategy``), ready to predict.
    ``threads``: torch intra-op threads of the forward on a CPU (``auto``: training's rule,
    :func:`mmfuse.training.threads.auto_threads`, which gives small models one thread)."""
    bundle = read_bundle(resolve_run(path, strategy))
    return Run(bundle, device=device, threads=threads)


class Run:
    """A trained model with its preprocessing (see the module docstring)."""

    def __init__(self, bundle: Bundle, *, device: str | torch.device = "cpu", threads: int | str = "auto") -> None:
        from mmfuse.data.table import TablePreprocessor
        from mmfuse.training.checkpoint import load_checkpoint

        self.bundle = bundle
        self.device = torch.device(device)
        self.model: nn.Module = load_checkpoint(bundle.model_file, map_location=self.device).eval()
        prep = bundle.preprocessor_file
        self.preprocessor = TablePreprocessor.load(prep) if prep is not None else None
        if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads: expected 'auto' or a positive int, got {threads!r}")
        if threads == "auto":
            from mmfuse.training.threads import auto_threads

            threads = auto_threads(self.model, 512)
        self.threads = int(threads)
        self.task = bundle.task
        self.class_names = bundle.class_names
        self.modalities = tuple(bundle.manifest["modalities"])
        from mmfuse.encoders import parse_encoder

        # the pretrained encoders that ran once over the data at training (frozen): they run here
        # on new rows; fine-tuned ones are inside the model
        self._frozen = {m: n for m, n in dict(bundle.manifest.get("data_encoders") or {}).items()
                        if parse_encoder(n).source != "builtin" and parse_encoder(n).frozen}
        self._backbones: dict[str, Any] = {}
        if self.preprocessor is not None and self.preprocessor.task != self.task:
            raise CheckpointError(f"{bundle.folder}: the preprocessing's task {self.preprocessor.task!r} is not the "
                                  f"model's {self.task!r}")

    def __repr__(self) -> str:
        return (f"Run({str(self.bundle.folder)!r}, model={self.bundle.label}, task={self.task}, "
                f"modalities={list(self.modalities)})")

    @property
    def label(self) -> str:
        return self.bundle.label

    # ------------------------------------------------------------------ inputs
    def table_preprocessor(self) -> Any:
        """The saved table preprocessing (:class:`~mmfuse.data.TablePreprocessor`); raises
        :class:`MmfuseError` for a model of a built-in dataset, which has none."""
        if self.preprocessor is None:
            raise MmfuseError(f"{self.bundle.folder}: this model was trained on the built-in dataset "
                              f"{self.bundle.manifest.get('dataset')!r}, which has no table preprocessing; "
                              "predicting on rows needs a model trained on a table (--data)")
        return self.preprocessor

    def _frame(self, data: Any) -> tuple[pd.DataFrame, Path | None, str]:
        if isinstance(data, pd.DataFrame):
            return data, None, "<DataFrame>"
        if isinstance(data, (str, os.PathLike)):
            from mmfuse.data.table import read_table

            p = Path(data).expanduser()
            return read_table(p), (p if p.is_dir() else p.parent), str(p)
        raise DataError(f"expected a DataFrame or a table's path, got {type(data).__name__}")

    def transform(self, data: Any, *, base_dir: str | os.PathLike[str] | None = None, strict: bool = False,
                  first_row: int = 0, where: str | None = None, allow_outside: bool | None = None) -> Any:
        """The saved preprocessing applied to ``data`` (:class:`~mmfuse.data.table.Transformed`),
        with any frozen pretrained encoder run on its modality.

        File paths resolve against ``base_dir``, else the table's folder, else the training
        ``base_dir``, and must stay in that folder (as at training, and as ``mmfuse serve``'s
        ``--base-dir``) unless ``allow_outside`` (default: the training table's setting); a
        DataFrame with none of these folders has no such rule."""
        prep = self.table_preprocessor()
        frame, folder, name = self._frame(data)
        base = base_dir if base_dir is not None else (folder or prep.options.base_dir)
        allow = prep.options.allow_outside if allow_outside is None else allow_outside
        out = prep.transform(frame, base_dir=base, where=where or name, strict=strict, first_row=first_row,
                             within=None if allow or base is None else base,
                             how_to_allow="give --base-dir a folder that holds it (mmfuse predict), or "
                                          "allow_outside=True (Python)")
        if self._frozen:
            self._encode_frozen(out)
        return out

    def _encode_frozen(self, out: Any) -> None:
        """Replace each modality with a frozen pretrained encoder by its embeddings, as at training."""
        from mmfuse.encoders.cache import encode_for_prediction

        for modality, name in self._frozen.items():
            out.inputs[modality], out.masks[modality] = encode_for_prediction(
                self, modality, name, out)

    # ------------------------------------------------------------------ the model
    def outputs(self, t: Any, *, batch_size: int = 512, fused: bool = False) -> np.ndarray:
        """``(n, k)`` model outputs (logits; regression: values) of rows already transformed
        (``t = run.transform(df)``), or ``(n, d)`` fused features, NaN on rows that cannot be
        predicted. What :meth:`predict` and ``mmfuse serve`` call after :meth:`transform`."""
        from mmfuse.training.threads import torch_threads

        with torch.inference_mode(), torch_threads(self.threads if self.device.type == "cpu" else
                                                   torch.get_num_threads()):
            return self._forward_rows(t, batch_size, fused)

    def _forward_rows(self, t: Any, batch_size: int, fused: bool) -> np.ndarray:
        rows = np.flatnonzero(t.usable)
        width = None
        chunks = []
        for start in range(0, len(rows), batch_size):
            idx = torch.from_numpy(rows[start:start + batch_size])
            inputs = {m: x[idx].to(self.device) for m, x in t.inputs.items()}
            masks = {m: k[idx].to(self.device) for m, k in t.masks.items()}
            y = self._embed(inputs, masks) if fused else self.model(inputs, masks)
            chunks.append(y.float().cpu().numpy())
            width = y.shape[1]
        if width is None:  # nothing to predict: the width from one dummy-free source
            width = self._width(fused)
        out = np.full((len(t), width), np.nan, dtype=np.float32)
        if chunks:
            out[rows] = np.concatenate(chunks)
        return out

    def _width(self, fused: bool) -> int:
        if not fused:
            return len(self.class_names) if self.task != "regression" else max(len(self.class_names), 1)
        fusion = getattr(self.model, "fusion", None)
        dim = getattr(fusion, "output_dim", None)
        return int(dim) if dim is not None else 0

    def _embed(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
        model = self.model
        if hasattr(model, "fusion") and hasattr(model, "encode"):
            feats, out_masks = model.encode(inputs, masks)
            return model.fusion(feats, out_masks)
        encoder = getattr(model, "encoder", None)
        modality = getattr(model, "modality", None)
        if encoder is None or modality is None:
            raise MmfuseError(f"{self.label}: this model has no fused representation to return")
        from mmfuse.models.multimodal import _encode

        feat, mask = _encode(encoder, modality, inputs, masks)
        if feat.dim() == 3:
            keep = mask.float().unsqueeze(-1) if mask is not None and mask.dim() == 2 else torch.ones_like(feat[..., :1])
            feat = (feat * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return feat

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        from mmfuse.training.threads import torch_threads

        x = torch.from_numpy(logits)
        with torch_threads(self.threads):  # a small op: the process's default threads only wait for each other
            if self.task in ("binary", "multiclass"):
                return torch.softmax(x, dim=-1).numpy()
            if self.task == "multilabel":
                return torch.sigmoid(x).numpy()
        raise MmfuseError("predict_proba: a regression model predicts values, not probabilities: use predict")

    # ------------------------------------------------------------------ public
    def predict_proba(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        """One probability column per class (or label), one row per input row (NaN: not predicted)."""
        t = self.transform(data, **kwargs)
        return pd.DataFrame(self._probabilities(self.outputs(t)), columns=list(self.class_names))

    def predict(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        """The predictions, one row per input row, in order (see the module docstring)."""
        return self.prediction_frame(self.transform(data, **kwargs))

    def prediction_frame(self, t: Any, logits: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`predict`'s table for rows already transformed (``logits``: their
        :meth:`outputs`, if already computed)."""
        out = self.outputs(t) if logits is None else logits
        ok = t.usable
        if self.task == "regression":
            cols = ["prediction"] if out.shape[1] == 1 else [f"prediction_{c}" for c in self.class_names]
            return pd.DataFrame(out.astype(np.float64), columns=cols)
        prob = self._probabilities(out)
        names = np.array(self.class_names, dtype=object)
        if self.task == "multilabel":
            pred = [list(names[p >= 0.5]) if k else None for p, k in zip(prob, ok, strict=True)]
        else:
            top = np.nan_to_num(prob, nan=-1.0).argmax(axis=1)
            pred = [names[i] if k else None for i, k in zip(top, ok, strict=True)]
        frame = pd.DataFrame({"prediction": pd.Series(pred, dtype=object)})
        for j, c in enumerate(self.class_names):
            frame[f"proba_{c}"] = prob[:, j].astype(np.float64)
        return frame

    def export(self, path: str | os.PathLike[str], *, format: str | None = None) -> Any:
        """Write the model's tensor part to ``path`` as ONNX or a ``torch.export`` program (``format``
        ``onnx`` or ``pt2``; default from the suffix, else ``onnx``), with its sidecar and the
        preprocessing beside it; returns the sidecar (:class:`mmfuse.runs.export.ExportInfo`)."""
        from mmfuse.runs.export import export_run

        return export_run(self, path, format=format)

    def embed(self, data: Any, **kwargs: Any) -> np.ndarray:
        """``(n, d)`` fused representation before the head (NaN rows: not predicted)."""
        return self.outputs(self.transform(data, **kwargs), fused=True)

    def evaluate(self, data: Any, **kwargs: Any) -> dict[str, float]:
        """The task's metrics on the rows that have the target (and at least one modality)."""
        return self._metrics(self.transform(data, **kwargs))

    def _metrics(self, t: Any, logits: np.ndarray | None = None) -> dict[str, float]:
        from mmfuse.training.metrics import task_metrics

        if t.labels is None:
            cols = list(self.preprocessor.target.columns) if self.preprocessor else []
            raise DataError(f"evaluate: the rows have no target column {cols}")
        out = self.outputs(t) if logits is None else logits
        keep = t.usable & t.has_target
        if not keep.any():
            raise DataError("evaluate: no row has both the target and a modality")
        label_pos = np.cumsum(t.has_target) - 1
        y = torch.from_numpy(t.labels[label_pos[np.flatnonzero(keep)]])
        metrics = task_metrics(torch.from_numpy(out[keep]), y, self.task)
        return {k: float(v) for k, v in metrics.items()}

    def explain(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        """Per row: each modality's Shapley value (``shapley_<m>``), the value with none
        (``base_value``) and with all present (``value``), what is explained (``target``),
        the modality weights (``weight_<m>``) where the strategy has them, and for ``trusted``
        the uncertainty ``u`` of the prediction (``uncertainty``) and each modality's own
        (``uncertainty_<m>``) and its belief in the explained class (``belief_<m>``)."""
        return self.explanation_frame(self.transform(data, **kwargs))

    def explanation_frame(self, t: Any, batch_size: int = 512) -> pd.DataFrame:
        """:meth:`explain`'s table for rows already transformed."""
        if self.task == "multilabel":
            raise MmfuseError("explain: per-row attribution is defined for binary, multiclass and regression "
                              "models (a multilabel row has no one output to explain)")
        fusion = getattr(self.model, "fusion", None)
        mods = tuple(getattr(fusion, "modalities", None) or self.modalities)
        if fusion is None:
            mods = (str(getattr(self.model, "modality", self.modalities[0])),)
        if len(mods) > _EXPLAIN_MAX_MODALITIES:
            raise MmfuseError(f"explain: {len(mods)} modalities; exact attribution enumerates 2^M coalitions and "
                              f"is limited to {_EXPLAIN_MAX_MODALITIES}")
        n, M = len(t), len(mods)
        rows = np.flatnonzero(t.usable)
        full = self.outputs(t, batch_size=batch_size)
        prior = self.bundle.manifest.get("class_prior") or []
        if self.task == "regression":
            target_idx = np.zeros(n, dtype=np.int64)
            empty = np.full(n, float(prior[0]) if prior else np.nan)
            pick = lambda out: out[np.arange(len(out)), 0]  # noqa: E731
            full_value = full[:, 0]
            what = [self.class_names[0] if self.class_names else "value"] * n
        else:
            prob = self._probabilities(full)
            target_idx = np.nan_to_num(prob, nan=-1).argmax(axis=1)
            empty = np.array([float(prior[i]) if prior else np.nan for i in target_idx])
            full_value = prob[np.arange(n), target_idx]
            pick = None
            what = [f"p({self.class_names[i]})" for i in target_idx]
        present = np.stack([_present(t.masks[m]) for m in mods], axis=1) if M else np.zeros((n, 0), bool)
        values: dict[frozenset[int], np.ndarray] = {frozenset(): empty}
        for size in range(1, M + 1):
            for combo in itertools.combinations(range(M), size):
                s = frozenset(combo)
                if size == M:
                    values[s] = full_value
                    continue
                masks = {m: (k if i in s else torch.zeros_like(k)) for i, (m, k) in
                         enumerate((m, t.masks[m]) for m in mods)}
                masks.update({m: k for m, k in t.masks.items() if m not in mods})
                has = present[:, list(combo)].any(axis=1)
                sub = _Sub(t.inputs, masks, t.usable & has)
                out = self.outputs(sub, batch_size=batch_size)
                if self.task == "regression":
                    v = pick(out)
                else:
                    v = self._probabilities(out)[np.arange(n), target_idx]
                values[s] = np.where(has, v, empty)
        phi = np.zeros((n, M))
        for i in range(M):
            others = [j for j in range(M) if j != i]
            for size in range(0, M):
                w = math.factorial(size) * math.factorial(M - size - 1) / math.factorial(M)
                for combo in itertools.combinations(others, size):
                    s = frozenset(combo)
                    phi[:, i] += w * (values[s | {i}] - values[s])
        frame = pd.DataFrame({"target": what, "base_value": empty, "value": full_value})
        for i, m in enumerate(mods):
            frame[f"shapley_{m}"] = np.where(present[:, i], phi[:, i], 0.0)
        weights = self._weights(t, mods, rows, batch_size)
        for m, w in weights.items():
            frame[f"weight_{m}"] = w
        if self.task != "regression":
            for column, values in self._opinions(t, mods, rows, target_idx, batch_size).items():
                frame[column] = values
        frame.loc[~t.usable, :] = np.nan
        frame.loc[~t.usable, "target"] = None
        return frame

    @torch.inference_mode()
    def _weights(self, t: Any, mods: tuple[str, ...], rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """Per row and modality: the strategy's own modality weights, where it has them."""
        if getattr(self.model, "fusion", None) is None or len(t) == 0:
            return {}
        n = len(t)
        if not len(rows):  # nothing to predict here: the same columns as other batches, empty
            return {m: np.full(n, np.nan) for m in mods} if self._gives_weights(t, mods) else {}
        got: dict[str, np.ndarray] = {}
        for start in range(0, len(rows), batch_size):
            idx = torch.from_numpy(rows[start:start + batch_size])
            inputs = {m: x[idx].to(self.device) for m, x in t.inputs.items()}
            masks = {m: k[idx].to(self.device) for m, k in t.masks.items()}
            _, info = self.model(inputs, masks, return_intermediates=True)
            w = getattr(info, "modality_weights", None) if info is not None else None
            if w is None or w.dim() != 2 or w.shape[1] != len(mods):
                return {}
            for i, m in enumerate(mods):
                got.setdefault(m, np.full(n, np.nan))[rows[start:start + batch_size]] = w[:, i].float().cpu().numpy()
        return got

    @torch.inference_mode()
    def _gives_weights(self, t: Any, mods: tuple[str, ...]) -> bool:
        """Whether the strategy exposes per-sample modality weights (asked once, on one row
        with every modality present)."""
        known = getattr(self, "_weights_known", None)
        if known is None:
            inputs = {m: x[:1].to(self.device) for m, x in t.inputs.items()}
            masks = {m: torch.ones_like(k[:1]).to(self.device) for m, k in t.masks.items()}
            _, info = self.model(inputs, masks, return_intermediates=True)
            w = getattr(info, "modality_weights", None) if info is not None else None
            known = self._weights_known = w is not None and w.dim() == 2 and w.shape[1] == len(mods)
        return bool(known)

    @torch.inference_mode()
    def _opinions(self, t: Any, mods: tuple[str, ...], rows: np.ndarray, target_idx: np.ndarray,
                  batch_size: int) -> dict[str, np.ndarray]:
        """Per row, for a strategy that forms subjective-logic opinions (``trusted``): the
        combined uncertainty (``uncertainty``), each modality's own (``uncertainty_<m>``, 1
        where it is missing) and its belief in the explained class (``belief_<m>``)."""
        if getattr(self.model, "fusion", None) is None or len(t) == 0 or not self._gives_opinions(t):
            return {}
        n = len(t)
        got = {c: np.full(n, np.nan) for c in ("uncertainty", *(f"{w}_{m}" for w in ("uncertainty", "belief")
                                                                  for m in mods))}
        for start in range(0, len(rows), batch_size):
            sel = rows[start:start + batch_size]
            idx = torch.from_numpy(sel)
            inputs = {m: x[idx].to(self.device) for m, x in t.inputs.items()}
            masks = {m: k[idx].to(self.device) for m, k in t.masks.items()}
            _, info = self.model(inputs, masks, return_intermediates=True)
            extras = info.extras
            got["uncertainty"][sel] = extras["uncertainty"].float().cpu().numpy()
            own_u = extras["modality_uncertainty"].float().cpu().numpy()  # (b, M)
            own_b = extras["modality_belief"].float().cpu().numpy()  # (b, M, k)
            for i, m in enumerate(mods):
                got[f"uncertainty_{m}"][sel] = own_u[:, i]
                got[f"belief_{m}"][sel] = own_b[np.arange(len(sel)), i, target_idx[sel]]
        return got

    @torch.inference_mode()
    def _gives_opinions(self, t: Any) -> bool:
        """Whether the strategy's intermediates hold opinions (asked once, on one row)."""
        known = getattr(self, "_opinions_known", None)
        if known is None:
            inputs = {m: x[:1].to(self.device) for m, x in t.inputs.items()}
            masks = {m: torch.ones_like(k[:1]).to(self.device) for m, k in t.masks.items()}
            _, info = self.model(inputs, masks, return_intermediates=True)
            extras = getattr(info, "extras", None) or {}
            known = self._opinions_known = {"uncertainty", "modality_uncertainty", "modality_belief"} <= set(extras)
        return bool(known)

    # ------------------------------------------------------------------ files
    def predict_file(
        self,
        data: str | os.PathLike[str],
        out: str | os.PathLike[str] | None = None,
        *,
        id_column: str | None = None,
        explain: bool = False,
        batch_rows: int = 4096,
        base_dir: str | os.PathLike[str] | None = None,
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
        allow_outside: bool | None = None,
    ) -> PredictSummary:
        """Predict the table at ``data`` in batches of ``batch_rows`` and write ``out`` (CSV or
        Parquet, by extension) as it goes; the metrics when the target column is present.
        The output is written to ``<out>.partial`` and renamed when complete; on an error or an
        interruption the partial file is removed and ``out`` is left as it was."""
        src = Path(data).expanduser()
        if not src.exists():
            raise DataError(f"{src}: no such file or folder")
        base = base_dir if base_dir is not None else (src if src.is_dir() else src.parent)
        summary = PredictSummary()
        writer = _Writer(Path(out), multilabel=self.task == "multilabel") if out is not None else None
        all_logits, all_t = [], []
        first = 0
        try:
            for frame in _batches(src, batch_rows):
                t = self.transform(frame, base_dir=base, strict=strict, first_row=first, where=str(src),
                                   allow_outside=allow_outside)
                logits = self.outputs(t)
                pred = self.prediction_frame(t, logits)
                if explain:
                    ex = self.explanation_frame(t)
                    pred = pd.concat([pred, ex.drop(columns=["value"])], axis=1)
                if id_column is not None:
                    if id_column not in frame.columns:
                        raise DataError(f"{src}: --id column {id_column!r} does not exist; the columns are "
                                        f"{[str(c) for c in frame.columns]}")
                    pred.insert(0, id_column, frame[id_column].to_numpy())
                if writer is not None:
                    writer.write(pred)
                summary.add(t)
                if t.labels is not None:
                    all_logits.append(logits)
                    all_t.append(_Labels(t.usable, t.labels, t.has_target))
                first += len(frame)
                if progress is not None:
                    progress(len(frame))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            summary.out = writer.close()
        if all_t:
            summary.metrics = self._metrics(_Labels.cat(all_t), np.concatenate(all_logits))
        return summary


@dataclass
class _Sub:
    inputs: Mapping[str, Tensor]
    masks: Mapping[str, Tensor]
    usable: np.ndarray

    def __len__(self) -> int:
        return int(self.usable.shape[0])


@dataclass
class _Labels:
    usable: np.ndarray
    labels: np.ndarray
    has_target: np.ndarray

    @staticmethod
    def cat(parts: list[_Labels]) -> _Labels:
        return _Labels(np.concatenate([p.usable for p in parts]), np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.has_target for p in parts]))


def _present(mask: Tensor) -> np.ndarray:
    return (mask if mask.dim() == 1 else mask.reshape(mask.shape[0], -1).any(dim=1)).cpu().numpy().astype(bool)


def _batches(src: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    from mmfuse.data.table import iter_parquet, read_table, table_format

    kind = table_format(src, None)
    if kind == "parquet":
        yield from iter_parquet(src, batch_rows=batch_rows)
    elif kind in ("csv", "tsv"):
        try:
            reader = pd.read_csv(src, sep="\t" if kind == "tsv" else ",", chunksize=batch_rows)
            yield from reader
        except (OSError, ValueError) as e:
            raise DataError(f"{src}: cannot read as {kind}: {type(e).__name__}: {e}") from e
    else:
        frame = read_table(src, kind)
        for start in range(0, len(frame), batch_rows):
            yield frame.iloc[start:start + batch_rows]


class _Writer:
    """Predictions appended batch by batch to ``<out>.partial``, renamed to ``out`` at the end."""

    def __init__(self, out: Path, *, multilabel: bool = False) -> None:
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise ConfigError(f"--out {out}: expected a .csv or .parquet file")
        self.out, self.parquet = out, suffix != ".csv"
        self.tmp = out.with_name(out.name + ".partial")
        out.parent.mkdir(parents=True, exist_ok=True)
        self._pq = None
        self._first = True
        self._multilabel = multilabel

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._pq is None:
                # a first batch with no predicted row has all-empty text columns, typed null by Arrow:
                # give them the type later batches carry
                def typed(f: Any) -> Any:
                    if not pa.types.is_null(f.type):
                        return f
                    multi = f.name == "prediction" and self._multilabel
                    return f.with_type(pa.list_(pa.string()) if multi else pa.string())

                schema = pa.schema([typed(f) for f in table.schema], metadata=table.schema.metadata)
                self._pq = pq.ParquetWriter(str(self.tmp), schema)
            self._pq.write_table(table.cast(self._pq.schema))
        else:
            frame = frame.copy()
            if "prediction" in frame.columns and frame["prediction"].map(lambda v: isinstance(v, list)).any():
                frame["prediction"] = frame["prediction"].map(lambda v: ";".join(v) if isinstance(v, list) else v)
            frame.to_csv(self.tmp, mode="w" if self._first else "a", header=self._first, index=False)
        self._first = False

    def close(self) -> Path:
        if self._pq is not None:
            self._pq.close()
        if self._first:  # no rows: an empty file with no columns
            self.tmp.write_text("")
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        """Remove the partial file: a prediction cut short is not resumed, and never mistaken for one."""
        if self._pq is not None:
            try:
                self._pq.close()
            except Exception:  # noqa: BLE001  (the original error is the one to see)
                pass
        self.tmp.unlink(missing_ok=True)
