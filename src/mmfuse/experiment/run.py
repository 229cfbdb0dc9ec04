"""The one training path and the one measurement path of mmfuse.

Shape legend: ``b`` batch, ``m`` modalities (fusion order), ``h`` heads, ``t_q``/``t_k``
query/key tokens.

:func:`train_one` trains the model of an :class:`~mmfuse.experiment.ExperimentSpec`:
``mmfuse train`` and every bench run call it, so the same settings and seed give the
same weights from both. :func:`measure` computes everything on the test split of a
trained model (:class:`~mmfuse.experiment.Measurement`):

- the task's metrics (:func:`mmfuse.training.task_metrics`);
- for classification tasks, calibration (:mod:`mmfuse.training.calibration`): ECE
  (15 equal-width top-label bins), NLL and Brier score, clean, with each modality
  missing and under each noise; on the clean split also the selective accuracy at
  100/90/80/50 % coverage, the AURC and the reliability diagram's bins; for a model
  calibrated by temperature scaling, the clean split's numbers before scaling too;
- robustness: the main metric with each modality missing in turn (on the test samples
  that keep another modality; ``missing_n`` counts them) and with Gaussian noise of
  each scale added to one modality at a time (``GaussianNoise.for_spec``: numeric
  columns only for tabular data; for token ids, whose noise is a fraction of replaced
  tokens in ``[0, 1]``, the fraction is ``scale / max(noise_scales)``);
- cost: inference throughput (samples/s of the forward pass alone, after one warm-up
  batch, no gradients) and the model's own training-step memory (parameters,
  gradients, AdamW's moments, and the activations autograd saves for one batch);
- what the fusion learned: modality weights and gates of the first
  ``intermediates_samples`` test samples, attention maps (averaged over heads) for the
  first 4 of them and their mean.

:func:`load_trained` rebuilds a trained model from its checkpoint, so a finished run
is measured again with new settings without retraining.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.data._base import DatasetSplits, MultimodalDataset
from mmfuse.experiment.results import (
    AttentionSummary,
    GateSummary,
    Learned,
    Measurement,
    TrainingFacts,
)
from mmfuse.experiment.specs import DataSpec, ExperimentSpec, MeasureConfig
from mmfuse.training.config import FitResult

__all__ = ["TrainedRun", "build_for", "load_data", "load_trained", "main_metric_of", "measure", "train_one"]

_ATTENTION_SAMPLES = 4
_MAX_TOKENS = 48


@dataclass
class TrainedRun:
    """A trained model with the spec and data it came from.

    Attributes:
        spec: its settings; splits: its data; model: in eval mode.
        facts: what training produced (:class:`TrainingFacts`).
        fit: the :class:`~mmfuse.training.FitResult` when it was trained now, else None.
        checkpoint: where its weights are saved, if they are.
    """

    spec: ExperimentSpec
    splits: DatasetSplits
    model: nn.Module
    facts: TrainingFacts
    fit: FitResult | None = None
    checkpoint: Path | None = None


# --------------------------------------------------------------------------- data
@lru_cache(maxsize=2)
def _load_cached(name: str, options_json: str, seed: int, root: str | None) -> DatasetSplits:
    from mmfuse.data import load_dataset

    return load_dataset(name, root=root, seed=seed, **json.loads(options_json))


@lru_cache(maxsize=2)
def _encoded(name: str, options_json: str, seed: int, root: str | None, encoders_json: str) -> DatasetSplits:
    from mmfuse.encoders import prepare_encoders

    splits = _load_cached(name, options_json, seed, root)
    encoded, options = prepare_encoders(splits, json.loads(encoders_json), progress=False)
    encoded.info = {**encoded.info, "encoder_options": options}
    return encoded


def load_data(data: DataSpec) -> DatasetSplits:
    """The splits of ``data``, with its pretrained encoders applied (frozen ones as cached
    embeddings; the options of fine-tuned ones in ``info["encoder_options"]``). The last
    two datasets loaded are kept, so a worker re-uses them."""
    options = json.dumps(dict(data.options), sort_keys=True)
    if data.encoders:
        return _encoded(data.name, options, data.seed, data.root, json.dumps(dict(data.encoders), sort_keys=True))
    return _load_cached(data.name, options, data.seed, data.root)


def build_for(spec: ExperimentSpec, splits: DatasetSplits) -> nn.Module:
    """The untrained model of ``spec`` for ``splits``, its weights drawn from ``spec.seed``."""
    from mmfuse.models import build_model, build_unimodal_model

    m = spec.model
    # fine-tuned pretrained encoders (from DataSpec.encoders) first, the model's own options over them
    enc: dict[str, dict[str, Any]] = {k: dict(v) for k, v in splits.info.get("encoder_options", {}).items()}
    for k, v in m.encoder_options.items():
        enc[k] = {**enc.get(k, {}), **v}
    torch.manual_seed(spec.seed)  # the initial weights follow the run's seed
    if m.unimodal is not None:
        return build_unimodal_model(splits, modality=m.unimodal, hidden_dim=m.hidden_dim,
                                    dropout=m.dropout, encoder_options=enc.get(m.unimodal))
    return build_model(splits, fusion=str(m.fusion), hidden_dim=m.hidden_dim, dropout=m.dropout,
                       fusion_options=dict(m.fusion_options) or None,
                       encoder_options=enc or None,
                       modalities=list(m.modalities) if m.modalities else None)


def _count(module: nn.Module | None) -> int | None:
    return None if module is None else sum(p.numel() for p in module.parameters())


def _facts(model: nn.Module, *, train_time_s: float, epochs_run: int, best_epoch: int,
           val_metrics: dict[str, Any], threads: int, trained_now: bool) -> TrainingFacts:
    fusion = getattr(model, "fusion", None)
    return TrainingFacts(
        params=int(_count(model) or 0),
        fusion_params=_count(fusion) if isinstance(fusion, nn.Module) else None,
        train_time_s=float(train_time_s),
        epochs_run=int(epochs_run),
        best_epoch=int(best_epoch),
        val_metrics={k: float(v) for k, v in val_metrics.items() if isinstance(v, (int, float))},
        threads=int(threads),
        trained_now=trained_now,
    )


# ------------------------------------------------------------------------ training
def train_one(
    spec: ExperimentSpec,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    splits: DatasetSplits | None = None,
) -> TrainedRun:
    """Train the model of ``spec`` (loading its data unless ``splits`` is given).

    With ``out_dir``, the fit writes its resumable state and the best weights
    (``model.safetensors``) there, and ``resume=True`` continues it.
    """
    from mmfuse.training.engine import fit

    splits = splits if splits is not None else load_data(spec.data)
    model = build_for(spec, splits)
    result = fit(model, splits, spec.train, out_dir, resume=resume)
    facts = _facts(result.model, train_time_s=result.train_time_s, epochs_run=result.epochs_run,
                   best_epoch=result.best_epoch, val_metrics=dict(result.val_metrics),
                   threads=int(getattr(result, "threads", torch.get_num_threads())), trained_now=True)
    return TrainedRun(spec=spec, splits=splits, model=result.model.eval(), facts=facts, fit=result,
                      checkpoint=result.checkpoint)


def load_trained(spec: ExperimentSpec, checkpoint: str | Path, facts: TrainingFacts, *,
                 splits: DatasetSplits | None = None) -> TrainedRun:
    """The model of ``spec`` with its saved weights (nothing is trained)."""
    from mmfuse.training.checkpoint import load_checkpoint

    splits = splits if splits is not None else load_data(spec.data)
    model = load_checkpoint(checkpoint).eval()
    return TrainedRun(spec=spec, splits=splits, model=model,
                      facts=TrainingFacts(**{**facts.to_json(), "trained_now": False}),
                      checkpoint=Path(checkpoint))


# ----------------------------------------------------------------------- measuring
def main_metric_of(task: str) -> tuple[str, bool]:
    """The main metric of a task and whether higher is better."""
    from mmfuse.training.metrics import main_metric

    return main_metric(task)


def _batches(ds: MultimodalDataset, size: int) -> list[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """The split as ``(inputs, masks)`` pairs of :func:`~mmfuse.training.metrics.iter_batches`."""
    from mmfuse.training.metrics import iter_batches

    return [(b["inputs"], b["masks"]) for b in iter_batches(ds, size)]


@torch.inference_mode()
def _throughput(model: nn.Module, ds: MultimodalDataset, batch: int) -> float:
    batches = _batches(ds, batch)
    model(*batches[0])  # warm-up
    start = time.perf_counter()
    for inputs, masks in batches:
        model(inputs, masks)
    elapsed = time.perf_counter() - start
    return len(ds) / elapsed if elapsed > 0 else math.inf


def training_step_memory_mb(model: nn.Module, ds: MultimodalDataset, batch_size: int) -> float:
    """Parameters x 4 (weights, gradients, AdamW's two moments) plus the activations
    autograd saves in one forward pass over ``batch_size`` training samples, in MiB."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    seen: set[tuple[int, int]] = set()
    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    inputs, masks = _batches(ds, batch_size)[0]
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(inputs, masks)
        del out
    finally:
        model.train(was_training)
    return (4 * param_bytes + saved) / 2**20


def _round(t: Tensor, digits: int = 4) -> list[Any]:
    return torch.round(t.detach().float().cpu(), decimals=digits).tolist()


@torch.inference_mode()
def _learned(model: nn.Module, ds: MultimodalDataset, n: int, modalities: tuple[str, ...]) -> Learned | None:
    inputs, masks = _batches(ds.subset(range(min(n, len(ds)))), n)[0]
    out = model(inputs, masks, return_intermediates=True)
    info = out[1] if isinstance(out, tuple) else None
    if info is None:
        return None
    weights: dict[str, list[float]] = {}
    if info.modality_weights is not None:
        w = info.modality_weights
        weights = {m: _round(w[:, i]) for i, m in enumerate(modalities) if i < w.shape[1]}
    gates: dict[str, GateSummary] = {}
    for key, g in (info.gates or {}).items():
        g = g.detach().float()
        if g.dim() >= 2 and g.shape[1] == len(modalities) and len(modalities) > 1:
            per = g.reshape(g.shape[0], g.shape[1], -1).mean(dim=2)  # (b, m): mean over features
            gates[key] = GateSummary(shape=list(g.shape[1:]),
                                     per_modality={m: _round(per[:, i]) for i, m in enumerate(modalities)})
        else:
            gates[key] = GateSummary(shape=list(g.shape[1:]), mean=_round(g.reshape(g.shape[0], -1).mean(dim=1)))
    attention: dict[str, AttentionSummary] = {}
    for key, a in (info.attention or {}).items():
        a = a.detach().float()
        if a.dim() == 4:  # (b, h, t_q, t_k) -> (b, t_q, t_k)
            a = a.mean(dim=1)
        if a.dim() != 3:
            continue
        a = a[:, :_MAX_TOKENS, :_MAX_TOKENS]
        attention[key] = AttentionSummary(samples=_round(a[:_ATTENTION_SAMPLES], 3), mean=_round(a.mean(dim=0), 3))
    if not (weights or gates or attention):
        return None
    return Learned(modalities=list(modalities), modality_weights=weights, gates=gates, attention=attention)


def _others_present(ds: MultimodalDataset, mod: str) -> Tensor:
    """``(n,)`` bool: the sample has at least one modality other than ``mod`` present."""
    out = torch.zeros(len(ds), dtype=torch.bool)
    for name, mask in ds.masks.items():
        if name != mod:
            out |= mask if mask.dim() == 1 else mask.any(dim=1)
    return out


def measure(trained: TrainedRun, config: MeasureConfig) -> Measurement:
    """Everything :class:`MeasureConfig` asks for on the test split (see the module docstring)."""
    from mmfuse.data.transforms import GaussianNoise, MissingModality
    from mmfuse.training.calibration import CalibrationStats, calibration_stats
    from mmfuse.training.metrics import predict_logits, task_metrics

    model, splits = trained.model.eval(), trained.splits
    test = splits.test
    if config.metric is None:  # a record from before the metric setting
        metric, higher = main_metric_of(splits.task)
    else:
        from mmfuse.training.metrics import choose_metric

        metric, higher = choose_metric(config.metric, splits.task, getattr(splits.train, "labels", None))
    classify = splits.task in ("binary", "multiclass")
    errors: dict[str, str] = {}

    def calibration(logits: Tensor, ds: MultimodalDataset, where: str, *, full: bool = False
                    ) -> CalibrationStats | None:
        if not classify:
            return None
        try:
            return calibration_stats(logits, ds.labels, bins=full, selective=full)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            errors[where] = f"{type(exc).__name__}: {exc}"
            return None

    def evaluate(ds: MultimodalDataset, corruption: Any, where: str,
                 ) -> tuple[dict[str, float], CalibrationStats | None, Tensor]:
        """The task's metrics, the calibration and the outputs of one (corrupted) split."""
        logits = predict_logits(model, ds, corruption=corruption)
        return task_metrics(logits, ds.labels, splits.task), calibration(logits, ds, where), logits

    # a calibrated model's outputs are z / T: z = outputs * T is the model before scaling
    temperature = float(getattr(model, "temperature", 1.0))

    clean_logits = predict_logits(model, test)
    clean = task_metrics(clean_logits, test.labels, splits.task)
    clean_cal = calibration(clean_logits, test, "calibration", full=True)
    uncalibrated = None
    if temperature != 1.0:
        uncalibrated = calibration(clean_logits * temperature, test, "calibration:uncalibrated", full=True)
    cal_missing: dict[str, CalibrationStats | None] = {}
    uncal_missing: dict[str, CalibrationStats | None] = {}
    cal_noise: dict[str, dict[str, CalibrationStats | None]] = {}

    missing: dict[str, float | None] = {}
    missing_n: dict[str, int] = {}
    mods = splits.modalities if trained.spec.model.unimodal is None else ()
    if config.missing and len(mods) > 1:
        for mod in mods:
            keep = _others_present(test, mod)
            missing_n[mod] = int(keep.sum())
            try:
                if not bool(keep.any()):
                    raise ValueError(f"no test sample has a modality besides {mod!r}")
                ds = test if bool(keep.all()) else test.subset(keep.nonzero().squeeze(1))
                scores, cal_missing[mod], logits = evaluate(ds, MissingModality(mod), f"calibration:missing:{mod}")
                missing[mod] = float(scores[metric])
                if temperature != 1.0:
                    uncal_missing[mod] = calibration(logits * temperature, ds, f"calibration:missing:{mod}:before")
            except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, the run goes on
                missing[mod] = None
                errors[f"missing:{mod}"] = f"{type(exc).__name__}: {exc}"

    noise: dict[str, dict[str, float | None]] = {}
    top = max(config.noise_scales, default=0.0)
    noised = splits.modalities if trained.spec.model.unimodal is None else (trained.spec.model.unimodal,)
    for mod in noised:
        noise[mod] = {}
        for scale in config.noise_scales:
            try:
                spec = splits.specs[mod]
                level = scale / top if spec.kind == "text" and top > 0 else scale
                corruption = GaussianNoise.for_spec(mod, spec, level, seed=trained.spec.seed)
                scores, cal, _ = evaluate(test, corruption, f"calibration:noise:{mod}:{scale:g}")
                noise[mod][f"{scale:g}"] = float(scores[metric])
                if cal is not None:
                    cal_noise.setdefault(mod, {})[f"{scale:g}"] = cal
            except Exception as exc:  # noqa: BLE001 - e.g. noise on a kind without a numeric form
                noise[mod][f"{scale:g}"] = None
                errors[f"noise:{mod}:{scale:g}"] = f"{type(exc).__name__}: {exc}"
    noise_mean: dict[str, float | None] = {}
    for scale in config.noise_scales:
        vals = [noise[m][f"{scale:g}"] for m in noise if noise[m][f"{scale:g}"] is not None]
        noise_mean[f"{scale:g}"] = sum(vals) / len(vals) if vals else None  # type: ignore[arg-type]

    shapley = None
    fused = trained.spec.model.unimodal is None and len(splits.modalities) > 1
    if config.attribution and fused and splits.task in ("binary", "multiclass"):
        try:
            shapley = _shapley(model, splits, metric, trained.spec.seed)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            errors["attribution"] = f"{type(exc).__name__}: {exc}"
    sample_scores = None
    per_sample: dict[str, Any] = {}
    if config.sample_scores and splits.task in ("binary", "multiclass", "regression"):
        out = clean_logits
        if splits.task == "regression":
            y = test.labels.float().reshape(out.shape)
            if metric == "mae":  # |e| per sample (mean over targets): its mean is the MAE
                sample_scores = (out - y).abs().mean(dim=1).tolist()
            else:
                # 1 - e^2 / var per sample: its mean over the test split is R^2 (averaged over targets)
                var = y.var(dim=0, unbiased=False).clamp_min(1e-12)
                sample_scores = (1 - ((out - y) ** 2 / var)).mean(dim=1).tolist()
        else:
            pred = out.argmax(dim=-1)
            sample_scores = (pred == test.labels).float().tolist()
            per_sample = {"sample_labels": test.labels.long().tolist(), "sample_predictions": pred.tolist()}
            probs = torch.softmax(out.double(), dim=-1)
            if splits.task == "binary":
                per_sample["sample_probabilities"] = torch.round(probs[:, 1], decimals=4).tolist()
            elif metric == "auroc":
                per_sample["sample_probabilities"] = torch.round(probs, decimals=4).tolist()

    probe = None
    if config.probe and fused and splits.task in ("binary", "multiclass"):
        try:
            from mmfuse.training.balance import modality_probe_accuracy

            probe = {k: float(v) for k, v in modality_probe_accuracy(model, splits).items()}
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            errors["probe"] = f"{type(exc).__name__}: {exc}"

    learned = None
    if config.intermediates_samples > 0 and trained.spec.model.unimodal is None:
        fusion = getattr(model, "fusion", None)
        order = tuple(getattr(fusion, "modalities", None) or splits.modalities)
        learned = _learned(model, test, config.intermediates_samples, order)
    return Measurement(
        metric=metric,
        higher_is_better=higher,
        metrics={k: float(v) for k, v in clean.items() if isinstance(v, (int, float)) and k != "n"},
        n_test=int(clean.get("n", len(test))),
        missing=missing,
        missing_n=missing_n,
        noise=noise,
        noise_mean=noise_mean,
        errors=errors,
        throughput_sps=float(_throughput(model, test, config.throughput_batch)),
        memory_mb=round(training_step_memory_mb(model, splits.train, trained.spec.train.batch_size), 3),
        learned=learned,
        shapley=shapley,
        sample_scores=sample_scores,
        probe=probe,
        **per_sample,
        calibration=clean_cal,
        calibration_missing={k: v for k, v in cal_missing.items() if v is not None},
        calibration_noise=cal_noise,
        temperature=temperature if temperature != 1.0 else None,
        uncalibrated=uncalibrated,
        uncalibrated_missing={k: v for k, v in uncal_missing.items() if v is not None},
    )


def _shapley(model: nn.Module, splits: DatasetSplits, metric: str, seed: int) -> dict[str, Any]:
    """Shapley attribution on the test samples that have every modality present."""
    from mmfuse.training.attribution import modality_shapley

    test = splits.test
    full = torch.ones(len(test), dtype=torch.bool)
    for mask in test.masks.values():
        full &= mask if mask.dim() == 1 else mask.any(dim=1)
    if not bool(full.any()):
        raise ValueError("no test sample has every modality present")
    ds = test if bool(full.all()) else test.subset(full.nonzero().squeeze(1))
    result = modality_shapley(model, splits.train, ds, metric=metric, seed=seed)
    return {**result.to_json(), "n": len(ds)}
