"""From run records to the comparison table: mean and spread over seeds, gain over the best unimodal baseline.

One summary row per dataset x model x training variant. The *best unimodal
baseline* of a dataset is the unimodal model with the highest mean test accuracy;
every row's ``gain`` is its mean accuracy minus that baseline's (negative: fusion
did not help).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["best_unimodal", "mean_std", "summarize"]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the non-missing values; std is None below 2 values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _mean(values: Iterable[float | None]) -> float | None:
    return mean_std(values)[0]


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows (see the module docstring), in the order the runs first appear."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        spec = rec.get("spec", {})
        key = (spec.get("dataset_label", "?"), rec.get("label", "?"), spec.get("variant", "?"))
        groups.setdefault(key, []).append(rec)

    rows: list[dict[str, Any]] = []
    for (dataset, label, variant), recs in groups.items():
        ok = [r for r in recs if r.get("status") == "ok" and r.get("result")]
        res = [r["result"] for r in ok]
        spec = recs[0].get("spec", {})
        acc_m, acc_s = mean_std(r.get("metrics", {}).get("accuracy") for r in res)
        f1_m, f1_s = mean_std(r.get("metrics", {}).get("macro_f1") for r in res)
        mods = sorted({m for r in res for m in (r.get("missing") or {})})
        scales = sorted({s for r in res for s in (r.get("noise_mean") or {})}, key=float)
        noise_mods = sorted({m for r in res for m in (r.get("noise") or {})})
        missing = {m: _mean((r.get("missing") or {}).get(m) for r in res) for m in mods}
        present = [v for v in missing.values() if v is not None]
        rows.append({
            "dataset": dataset,
            "model": label,
            "variant": variant,
            "unimodal": spec.get("model") == "unimodal",
            "seeds": sorted(r["spec"]["seed"] for r in ok),
            "n_ok": len(ok),
            "n_failed": len(recs) - len(ok),
            "errors": [r.get("error") for r in recs if r.get("status") != "ok"],
            "accuracy_mean": acc_m,
            "accuracy_std": acc_s,
            "macro_f1_mean": f1_m,
            "macro_f1_std": f1_s,
            "params": _mean(r.get("params") for r in res),
            "fusion_params": _mean(r.get("fusion_params") for r in res),
            "train_time_s": _mean(r.get("train_time_s") for r in res),
            "epochs_run": _mean(r.get("epochs_run") for r in res),
            "throughput_sps": _mean(r.get("throughput_sps") for r in res),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in res if r.get("peak_rss_mb") is not None), default=None),
            "missing": missing,
            "missing_worst": min(present) if present else None,
            "noise_mean": {s: _mean((r.get("noise_mean") or {}).get(s) for r in res) for s in scales},
            "noise": {m: {s: _mean(((r.get("noise") or {}).get(m) or {}).get(s) for r in res) for s in scales}
                      for m in noise_mods},
        })

    best = best_unimodal(rows)
    for row in rows:
        ref = best.get(row["dataset"])
        row["best_unimodal"] = ref["model"] if ref else None
        row["best_unimodal_accuracy"] = ref["accuracy_mean"] if ref else None
        row["gain"] = (row["accuracy_mean"] - ref["accuracy_mean"]
                       if ref and row["accuracy_mean"] is not None else None)
    return rows


def best_unimodal(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Per dataset, the standard-variant unimodal row with the highest mean accuracy."""
    best: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if not row["unimodal"] or row["variant"] != "standard" or row["accuracy_mean"] is None:
            continue
        cur = best.get(row["dataset"])
        if cur is None or row["accuracy_mean"] > cur["accuracy_mean"]:
            best[row["dataset"]] = row
    return best
