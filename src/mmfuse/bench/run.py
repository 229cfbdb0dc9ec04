"""The run function of the grid: train one model on one dataset, then measure it.

Shape legend: ``b`` batch, ``m`` modalities (fusion order), ``h`` heads, ``t_q``/``t_k``
query/key tokens.

:func:`train_and_evaluate` is what every executor calls for a :class:`RunSpec`. It
builds the model with :func:`mmfuse.models.build_model` (or the unimodal baseline),
trains it with :func:`mmfuse.training.fit` and measures, on the test split:

- accuracy and macro-F1 (and AUROC for binary tasks) with :func:`mmfuse.training.evaluate`;
- robustness: accuracy with each modality missing in turn (``MissingModality``, on
  the test samples that keep at least one other modality: ``missing_n`` counts them) and
  with Gaussian noise of each scale added to each modality in turn
  (``GaussianNoise.for_spec``: numeric columns only for tabular data; for token ids,
  whose noise is a fraction of replaced tokens in ``[0, 1]``, the fraction is
  ``scale / max(noise_scales)``);
- cost: parameter count, training wall time, inference throughput (samples/s of the
  model's forward pass alone, batches of 512, after one warm-up batch, no gradients)
  and peak memory;
- for fusions that expose them, what the fusion learned: modality weights and gates
  of the first ``intermediates_samples`` test samples, attention maps (averaged over
  heads) for the first 4 of them and their mean.

Peak memory is the resident-set high-water mark (``VmHWM``) of the process running
the run, reset at the start of the run through ``/proc/self/clear_refs`` (Linux), so
a worker that runs many runs reports each run's own peak. It includes the
interpreter, torch and the loaded dataset: compare strategies by their differences.
Where the reset is not possible the process-lifetime ``ru_maxrss`` is reported and
``peak_method`` says so.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.bench.grid import RunSpec

__all__ = ["train_and_evaluate", "peak_memory_mb", "reset_peak_memory"]

_ATTENTION_SAMPLES = 4
_MAX_TOKENS = 48
_THROUGHPUT_BATCH = 512


# ------------------------------------------------------------------------ memory
def reset_peak_memory() -> bool:
    """Reset this process's RSS high-water mark; False where the OS does not allow it."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(reset_ok: bool) -> tuple[float, str]:
    """``(peak MiB, method)`` since :func:`reset_peak_memory` (or process start)."""
    if reset_ok:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "vmhwm_reset"
        except OSError:
            pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024), "ru_maxrss_process"


# -------------------------------------------------------------------------- data
@lru_cache(maxsize=2)
def _load(dataset: str, options_json: str, data_seed: int, data_root: str | None) -> Any:
    from mmfuse.data import load_dataset

    return load_dataset(dataset, root=data_root, seed=data_seed, **json.loads(options_json))


def _batches(ds: Any, size: int) -> list[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """The test split as ``(inputs, masks)`` slices, collated like the data loader does."""
    n = len(ds)
    return [
        ({m: x[i:i + size] for m, x in ds.inputs.items()}, {m: k[i:i + size] for m, k in ds.masks.items()})
        for i in range(0, n, size)
    ]


# ----------------------------------------------------------------- measurements
@torch.inference_mode()
def _throughput(model: nn.Module, ds: Any) -> float:
    batches = _batches(ds, _THROUGHPUT_BATCH)
    model(*batches[0])  # warm-up
    start = time.perf_counter()
    for inputs, masks in batches:
        model(inputs, masks)
    elapsed = time.perf_counter() - start
    return len(ds) / elapsed if elapsed > 0 else math.inf


def _round(t: Tensor, digits: int = 4) -> list[Any]:
    return torch.round(t.detach().float().cpu(), decimals=digits).tolist()


@torch.inference_mode()
def _intermediates(model: nn.Module, ds: Any, n: int, modalities: tuple[str, ...]) -> dict[str, Any] | None:
    """What the fusion computed on the first ``n`` test samples, reduced for plotting."""
    inputs, masks = _batches(ds.subset(range(min(n, len(ds)))), n)[0]
    out = model(inputs, masks, return_intermediates=True)
    info = out[1] if isinstance(out, tuple) else None
    if info is None:
        return None
    learned: dict[str, Any] = {"modalities": list(modalities)}
    if info.modality_weights is not None:
        w = info.modality_weights
        learned["modality_weights"] = {m: _round(w[:, i]) for i, m in enumerate(modalities) if i < w.shape[1]}
    if info.gates:
        gates: dict[str, Any] = {}
        for key, g in info.gates.items():
            g = g.detach().float()
            if g.dim() >= 2 and g.shape[1] == len(modalities) and len(modalities) > 1:
                # (b, m) or (b, m, d...): one value per sample and modality (mean over features)
                per = g.reshape(g.shape[0], g.shape[1], -1).mean(dim=2)
                gates[key] = {"per_modality": {m: _round(per[:, i]) for i, m in enumerate(modalities)},
                              "shape": list(g.shape[1:])}
            else:
                gates[key] = {"mean": _round(g.reshape(g.shape[0], -1).mean(dim=1)), "shape": list(g.shape[1:])}
        learned["gates"] = gates
    if info.attention:
        att: dict[str, Any] = {}
        for key, a in info.attention.items():
            a = a.detach().float()
            if a.dim() == 4:  # (b, h, t_q, t_k) -> (b, t_q, t_k)
                a = a.mean(dim=1)
            if a.dim() != 3:
                continue
            a = a[:, :_MAX_TOKENS, :_MAX_TOKENS]
            att[key] = {"samples": _round(a[:_ATTENTION_SAMPLES], 3), "mean": _round(a.mean(dim=0), 3)}
        learned["attention"] = att
    return learned if len(learned) > 1 else None


def _others_present(ds: Any, mod: str) -> Tensor:
    """``(n,)`` bool: the sample has at least one modality other than ``mod`` present."""
    out = torch.zeros(len(ds), dtype=torch.bool)
    for name, mask in ds.masks.items():
        if name != mod:
            out |= mask if mask.dim() == 1 else mask.any(dim=1)
    return out


def _noise(cls: Any, mod: str, mspec: Any, scale: float, top: float, seed: int) -> Any:
    """Gaussian noise suited to the modality's kind (token ids: a replaced fraction ``scale / top``)."""
    if not hasattr(cls, "for_spec"):
        return cls(mod, scale, seed=seed)
    if mspec.kind == "text":
        scale = scale / top if top > 0 else 0.0
    return cls.for_spec(mod, mspec, scale, seed=seed)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------- the run itself
def train_and_evaluate(spec: RunSpec) -> dict[str, Any]:
    """Train the model of ``spec`` and measure it (see the module docstring)."""
    from mmfuse.data.transforms import GaussianNoise, MissingModality
    from mmfuse.models import build_model, build_unimodal_model
    from mmfuse.training import TrainConfig, evaluate, fit

    reset_ok = reset_peak_memory()
    splits = _load(spec.dataset, json.dumps(dict(spec.dataset_options), sort_keys=True), spec.data_seed,
                   spec.data_root)
    torch.manual_seed(spec.seed)
    if spec.is_unimodal:
        model = build_unimodal_model(splits.specs, splits.num_classes, modality=spec.modality,
                                     hidden_dim=spec.hidden_dim)
    else:
        model = build_model(splits.specs, splits.num_classes, fusion=spec.model, hidden_dim=spec.hidden_dim,
                            fusion_options=dict(spec.fusion_options) or None)
    params = _count_params(model)
    fusion = getattr(model, "fusion", None)
    fusion_params = _count_params(fusion) if isinstance(fusion, nn.Module) else None
    modalities = tuple(getattr(fusion, "modalities", None) or sorted(splits.modalities))

    cfg = TrainConfig(**dict(spec.train), seed=spec.seed, progress=False)
    fitted = fit(model, splits, cfg)
    model = fitted.model.eval()

    test = splits.test
    clean = evaluate(model, test)
    missing: dict[str, float | None] = {}
    noise: dict[str, dict[str, float | None]] = {}
    problems: dict[str, str] = {}
    missing_n: dict[str, int] = {}
    if len(splits.modalities) > 1:
        for mod in splits.modalities:
            # samples that keep another modality (a sample whose other modalities are
            # already missing in the data would have nothing left)
            keep = _others_present(test, mod)
            missing_n[mod] = int(keep.sum())
            try:
                if not bool(keep.any()):
                    raise ValueError(f"no test sample has a modality besides {mod!r}")
                ds = test if bool(keep.all()) else test.subset(keep.nonzero().squeeze(1))
                missing[mod] = evaluate(model, ds, corruption=MissingModality(mod))["accuracy"]
            except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, the run goes on
                missing[mod] = None
                problems[f"missing:{mod}"] = f"{type(exc).__name__}: {exc}"
    top = max(spec.noise_scales, default=0.0)
    for mod in splits.modalities:
        noise[mod] = {}
        for scale in spec.noise_scales:
            try:
                acc = (clean["accuracy"] if scale == 0 else
                       evaluate(model, test, corruption=_noise(GaussianNoise, mod, splits.specs[mod], scale, top,
                                                               spec.seed))["accuracy"])
            except Exception as exc:  # noqa: BLE001 - e.g. noise on token ids
                acc = None
                problems[f"noise:{mod}:{scale:g}"] = f"{type(exc).__name__}: {exc}"
            noise[mod][f"{scale:g}"] = acc
    noise_mean: dict[str, float | None] = {}
    for scale in spec.noise_scales:
        vals = [noise[m][f"{scale:g}"] for m in noise if noise[m][f"{scale:g}"] is not None]
        noise_mean[f"{scale:g}"] = sum(vals) / len(vals) if vals else None

    throughput = _throughput(model, test)
    learned = None
    if spec.intermediates_samples > 0 and not spec.is_unimodal:
        learned = _intermediates(model, test, spec.intermediates_samples, modalities)
    peak, method = peak_memory_mb(reset_ok)

    return {
        "metrics": {k: float(v) for k, v in clean.items() if isinstance(v, (int, float)) and k != "n"},
        "n_test": int(clean.get("n", len(test))),
        "params": params,
        "fusion_params": fusion_params,
        "train_time_s": float(fitted.train_time_s),
        "epochs_run": int(fitted.epochs_run),
        "val_metrics": {k: float(v) for k, v in dict(fitted.val_metrics).items() if isinstance(v, (int, float))},
        "throughput_sps": float(throughput),
        "peak_rss_mb": round(peak, 1),
        "peak_method": method,
        "missing": missing,
        "missing_n": missing_n,
        "noise": noise,
        "noise_mean": noise_mean,
        "robustness_errors": problems,
        "learned": learned,
        "modalities": list(modalities),
        "torch_threads": torch.get_num_threads(),
    }


