"""Balanced multimodal training side by side: fused accuracy, each modality's accuracy
inside the fused model (linear probe), that modality trained alone, and the accuracy
with one modality missing, for no balancing and every ``TrainConfig.balance`` method.

    OMP_NUM_THREADS=1 python benchmarks/balance.py --dataset avdigits \\
        --fusions late,gated,tensor,multihead_cross_attention --seeds 0,1,2 \\
        --epochs 8 --out benchmarks/results/balance_cpu2

Every run is appended to ``<out>.jsonl`` as soon as it ends (so a long run can be
read while it goes on, and ``--resume`` skips what is there); ``<out>.md`` gets the
table of means and standard deviations over seeds (and the per-seed values), with
the number of seeds each cell holds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from mmfuse.data import load_dataset
from mmfuse.data.transforms import MissingModality
from mmfuse.io import atomic_write
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, evaluate, fit
from mmfuse.training.balance import balance_methods, modality_probe_accuracy

METHODS = ["none", *balance_methods()]


def run_one(splits, fusion: str, method: str, seed: int, cfg: TrainConfig, missing: str) -> dict:
    torch.manual_seed(seed)
    model = build_model(splits, fusion=fusion, hidden_dim=64)
    res = fit(model, splits, cfg.replace(seed=seed, balance=None if method == "none" else method))
    test = evaluate(res.model, splits.test)
    gone = evaluate(res.model, splits.test, corruption=MissingModality(missing))
    probe = modality_probe_accuracy(res.model, splits)
    return {"fusion": fusion, "method": method, "seed": seed, "acc": test["accuracy"],
            "acc_missing": gone["accuracy"], "probe": probe, "epochs": res.epochs_run,
            "fit_s": round(res.train_time_s, 1)}


def run_unimodal(splits, modality: str, seed: int, cfg: TrainConfig) -> dict:
    torch.manual_seed(seed)
    model = build_unimodal_model(splits, modality=modality, hidden_dim=64)
    res = fit(model, splits, cfg.replace(seed=seed))
    return {"fusion": f"alone:{modality}", "method": "-", "seed": seed,
            "acc": evaluate(res.model, splits.test)["accuracy"], "epochs": res.epochs_run,
            "fit_s": round(res.train_time_s, 1)}


def _cell(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: list[dict], modalities: list[str], missing: str) -> str:
    alone = {r["fusion"].split(":")[1]: [] for r in rows if r["fusion"].startswith("alone:")}
    for r in rows:
        if r["fusion"].startswith("alone:"):
            alone[r["fusion"].split(":")[1]].append(r["acc"])
    lines = ["| modality trained alone | test acc | seeds |", "|---|---|---|"]
    for m, v in sorted(alone.items()):
        lines.append(f"| {m} | {_cell(v)} | {len(v)} |")
    probe_cols = " | ".join(f"{m} inside (probe)" for m in modalities)
    lines += ["", f"| fusion | balance | fused acc | {probe_cols} | acc, {missing} missing | seeds | per-seed fused acc |",
              "|" + "---|" * (6 + len(modalities))]
    fusions = list(dict.fromkeys(r["fusion"] for r in rows if not r["fusion"].startswith("alone:")))
    for f in fusions:
        for meth in METHODS:
            sel = [r for r in rows if r["fusion"] == f and r["method"] == meth]
            if not sel:
                continue
            probes = " | ".join(_cell([r["probe"][m] for r in sel]) for m in modalities)
            per_seed = ", ".join(f"{r['acc']:.3f}" for r in sorted(sel, key=lambda r: r["seed"]))
            lines.append(f"| {f} | {meth} | {_cell([r['acc'] for r in sel])} | {probes} | "
                         f"{_cell([r['acc_missing'] for r in sel])} | {len(sel)} | {per_seed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="avdigits")
    parser.add_argument("--n", type=int, default=None, help="subsample size (reviews)")
    parser.add_argument("--fusions", default="late,gated,tensor,multihead_cross_attention")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--missing", default="audio", help="the modality removed at test time")
    parser.add_argument("--out", default=None, help="write OUT.jsonl and OUT.md (default: "
                        "benchmarks/results/balance_cpu2, with --quick ./balance_quick)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="only write <out>.md from <out>.jsonl")
    parser.add_argument("--quick", action="store_true",
                        help="synthetic data (n=200), late, every method, one seed, one epoch, written to "
                             "--out or ./balance_quick (a check that the script runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.n, args.fusions, args.seeds, args.epochs = "synthetic", 200, "late", "0", 1
        args.missing, args.out, args.resume = "x1", args.out or "balance_quick", False
    args.out = args.out or "benchmarks/results/balance_cpu2"

    options = {} if args.n is None else {"n": args.n}
    splits = load_dataset(args.dataset, **options)
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, progress=False)
    out = Path(args.out)
    log = out.with_suffix(".jsonl")
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if args.resume and log.exists() else []
    done = {(r["fusion"], r["method"], r["seed"]) for r in rows}
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.report_only:
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        seeds = []
    for seed in seeds:  # seed-major: every configuration gets its first seed first
        jobs = [(f"alone:{m}", "-") for m in splits.modalities]
        jobs += [(f, meth) for f in args.fusions.split(",") for meth in args.methods.split(",")]
        for fusion, meth in jobs:
            if (fusion, meth, seed) in done:
                continue
            if fusion.startswith("alone:"):
                row = run_unimodal(splits, fusion.split(":")[1], seed, cfg)
            else:
                row = run_one(splits, fusion, meth, seed, cfg, args.missing)
            row["dataset"] = args.dataset
            rows.append(row)
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    ran = sorted({r["seed"] for r in rows})
    header = (f"dataset {args.dataset}{'' if args.n is None else f' (n={args.n})'}, epochs<={args.epochs}, "
              f"patience {args.patience}, batch {args.batch_size}, hidden 64, seeds present {ran}; "
              f"fit seconds summed over runs {sum(r['fit_s'] for r in rows):.0f}")
    text = f"{header}\n\n{table(rows, list(splits.modalities), args.missing)}\n"
    atomic_write(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
