"""Accuracy with one modality missing at test time, on the real datasets.

For each dataset, strategy, training variant (standard, or modality dropout 0.3) and
seed, trains a model with the bench's default settings through
:func:`mmfuse.experiment.train_one` and measures the test accuracy with every
modality present and with each listed modality missing (through the contract's
presence masks, :class:`mmfuse.data.MissingModality`), plus the unimodal model of each
modality left. Writes a markdown table (and the raw rows as JSON) so that a fallback
that lands below chance shows up.

    MMFUSE_DATA=/work/shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/missing_fallback.py --out benchmarks/results/missing_fallback_cpu2
    python benchmarks/missing_fallback.py --datasets avdigits --fusions film --seeds 0
    python benchmarks/missing_fallback.py --quick --out /tmp/missing   # mfeat, late, 1 epoch: seconds

Each run is one process-local fit on one thread; the whole default grid takes a few
tens of minutes on a 2-core machine. ``--quick`` runs the same loop on mfeat with one
strategy (``late``, modality dropout 0.3), one seed, one epoch and one unimodal model: a
check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# (dataset, loader options, modalities to drop in turn, chance accuracy)
DATASETS = {
    "avdigits": ({}, ("audio", "image"), 0.10),
    "mfeat": ({}, ("fac",), 0.10),
}
FUSIONS = ("multihead_cross_attention", "cross_attention", "film", "late", "tensor")


def _spec(dataset: str, *, fusion: str | None, unimodal: str | None, seed: int, dropout: float, epochs: int = 15):
    from mmfuse.bench.config import DEFAULT_FUSION_OPTIONS, DEFAULT_TRAIN
    from mmfuse.experiment.specs import DataSpec, ExperimentSpec, ModelSpec

    options, _, _ = DATASETS[dataset]
    fusion_options = DEFAULT_FUSION_OPTIONS.get(fusion, {}) if fusion else {}
    model = ModelSpec(fusion=fusion, unimodal=unimodal, hidden_dim=64, fusion_options=fusion_options)
    train = DEFAULT_TRAIN.replace(seed=seed, modality_dropout=dropout, epochs=epochs)
    data = DataSpec(name=dataset, options=options, root=os.environ.get("MMFUSE_DATA"))
    return ExperimentSpec(data=data, model=model, train=train)


def run_one(dataset: str, *, fusion: str | None, unimodal: str | None, seed: int, dropout: float,
            epochs: int = 15) -> dict:
    import torch

    from mmfuse.data import MissingModality
    from mmfuse.experiment import train_one
    from mmfuse.experiment.run import load_data
    from mmfuse.training import evaluate

    spec = _spec(dataset, fusion=fusion, unimodal=unimodal, seed=seed, dropout=dropout, epochs=epochs)
    splits = load_data(spec.data)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    trained = train_one(spec, splits=splits)
    row = {
        "dataset": dataset, "model": spec.model.label, "seed": seed, "modality_dropout": dropout,
        "train_s": round(time.perf_counter() - t0, 1), "epochs": trained.facts.epochs_run,
        "full": float(evaluate(trained.model, splits.test)["accuracy"]),
    }
    if fusion is not None:
        for mod in DATASETS[dataset][1]:
            acc = evaluate(trained.model, splits.test, corruption=MissingModality(mod))["accuracy"]
            row[f"without:{mod}"] = float(acc)
    return row


def _table(rows: list[dict]) -> str:
    lines = []
    for dataset, (_, dropped, chance) in DATASETS.items():
        rs = [r for r in rows if r["dataset"] == dataset]
        if not rs:
            continue
        seeds = sorted({r["seed"] for r in rs})
        lines += [f"## {dataset} (chance {chance:.2f}; seeds {seeds})", ""]
        uni = {r["model"]: r for r in rs if r["model"].startswith("uni:")}
        if uni:
            lines.append("Unimodal models (accuracy, per seed): " + "; ".join(
                f"{m} " + " / ".join(f"{r['full']:.3f}" for r in rs if r["model"] == m) for m in sorted(uni)))
            lines.append("")
        cols = ["full"] + [f"without:{m}" for m in dropped]
        lines.append("| strategy | modality dropout | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        keys = sorted({(r["model"], r["modality_dropout"]) for r in rs if not r["model"].startswith("uni:")})
        for model, drop in keys:
            sub = [r for r in rs if r["model"] == model and r["modality_dropout"] == drop]
            cells = []
            for c in cols:
                vals = [r[c] for r in sub]
                flag = " **below chance**" if c != "full" and min(vals) < chance else ""
                cells.append(" / ".join(f"{v:.3f}" for v in vals) + flag)
            lines.append(f"| {model} | {drop:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def compare_table(before: list[dict], after: list[dict]) -> str:
    """Cells ``before -> after`` (per seed) for every model measured in both runs; the
    other rows (references) as measured before."""
    def key(r: dict) -> tuple:
        return (r["dataset"], r["model"], r["modality_dropout"], r["seed"])

    new = {key(r): r for r in after}
    rows = []
    for r in before:
        a = new.get(key(r))
        if a is None:
            rows.append(r)
            continue
        merged = dict(r)
        for c, v in r.items():
            if c == "full" or c.startswith("without:"):
                merged[c] = (v, a[c])
        rows.append(merged)
    lines = []
    for dataset, (_, dropped, chance) in DATASETS.items():
        rs = [r for r in rows if r["dataset"] == dataset]
        if not rs:
            continue
        lines += [f"## {dataset} (chance {chance:.2f}; seeds {sorted({r['seed'] for r in rs})})", ""]
        unis = sorted({r["model"] for r in rs if r["model"].startswith("uni:")})
        if unis:
            lines.append("Unimodal models (accuracy per seed): " + "; ".join(
                f"{m} " + " / ".join(f"{r['full']:.3f}" for r in rs if r["model"] == m) for m in unis))
            lines.append("")
        cols = ["full"] + [f"without:{m}" for m in dropped]
        lines.append("| strategy | modality dropout | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for model, drop in sorted({(r["model"], r["modality_dropout"]) for r in rs if not r["model"].startswith("uni:")}):
            sub = [r for r in rs if r["model"] == model and r["modality_dropout"] == drop]
            cells = []
            for c in cols:
                vals = [r[c] for r in sub]
                if isinstance(vals[0], tuple):
                    text = " / ".join(f"{b:.3f} -> **{a:.3f}**" for b, a in vals)
                    low = min(a for _, a in vals)
                else:
                    text = " / ".join(f"{v:.3f}" for v in vals)
                    low = min(vals)
                cells.append(text + (" (below chance)" if c != "full" and low < chance else ""))
            lines.append(f"| {model} | {drop:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--fusions", nargs="+", default=list(FUSIONS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--dropout", nargs="+", type=float, default=[0.0, 0.3], help="modality dropout rates")
    p.add_argument("--epochs", type=int, default=15, help="most epochs (the bench's default: 15)")
    p.add_argument("--no-unimodal", action="store_true", help="skip the unimodal reference models")
    p.add_argument("--title", default="Accuracy with a modality missing at test time")
    p.add_argument("--out", help="write <out>.md and <out>.json")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                   help="train nothing: merge two runs' JSON rows into one table (before -> after)")
    p.add_argument("--intro", help="a markdown file whose text goes between the title and the tables")
    p.add_argument("--quick", action="store_true",
                   help="mfeat, late with modality dropout 0.3, seed 0, 1 epoch, one unimodal model "
                        "(a check that the script runs)")
    args = p.parse_args(argv)
    unimodal_max = None
    if args.quick:
        args.datasets, args.fusions, args.seeds, args.dropout, args.epochs = ["mfeat"], ["late"], [0], [0.3], 1
        unimodal_max = 1
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        intro = Path(args.intro).read_text().strip() + "\n\n" if args.intro else ""
        text = f"# {args.title}\n\n{intro}" + compare_table(before, after)
        print(text)
        if args.out:
            from mmfuse.io import atomic_write

            atomic_write(f"{args.out}.md", text + "\n")
        return

    import torch

    torch.set_num_threads(1)
    rows: list[dict] = []
    for dataset in args.datasets:
        for seed in args.seeds:
            if not args.no_unimodal:  # every modality left when one of the dropped ones is missing
                dropped = DATASETS[dataset][1]
                left = [m for m in _modalities(dataset) if any(m != d for d in dropped)]
                for keep in left[:unimodal_max]:
                    rows.append(run_one(dataset, fusion=None, unimodal=keep, seed=seed, dropout=0.0,
                                        epochs=args.epochs))
                    print(json.dumps(rows[-1]), flush=True)
            for fusion in args.fusions:
                for drop in args.dropout:
                    rows.append(run_one(dataset, fusion=fusion, unimodal=None, seed=seed, dropout=drop,
                                        epochs=args.epochs))
                    print(json.dumps(rows[-1]), flush=True)
    text = "\n".join([
        f"# {args.title}", "",
        f"`python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}`, "
        f"torch {torch.__version__}, {platform.machine()}, one thread per run; bench defaults "
        f"(at most {args.epochs} epochs, patience 4, lr 3e-3, batch 128, hidden 64). Cells: accuracy per seed.", "",
        _table(rows),
    ])
    print(text)
    if args.out:
        from mmfuse.io import atomic_write

        atomic_write(f"{args.out}.md", text + "\n")
        atomic_write(f"{args.out}.json", json.dumps(rows, indent=1) + "\n")


def _modalities(dataset: str) -> tuple[str, ...]:
    from mmfuse.experiment.run import load_data

    return tuple(load_data(_spec(dataset, fusion="late", unimodal=None, seed=0, dropout=0.0).data).modalities)


if __name__ == "__main__":
    main()
