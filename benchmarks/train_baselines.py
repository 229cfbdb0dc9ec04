"""Test accuracy of the unimodal baselines and of early, late and gated fusion on the
real datasets, one seed, trained with mmfuse.training.fit (CPU, a few minutes).

    OMP_NUM_THREADS=1 python benchmarks/train_baselines.py [--seed 0] [--epochs 15] [--out OUT]
    python benchmarks/train_baselines.py --quick --out /tmp/baselines   # synthetic n=200, 1 epoch, seconds

Prints one markdown table (and writes OUT.md and the rows as OUT.json with ``--out``);
the best unimodal baseline is chosen on validation accuracy. ``--quick`` runs the same
loop on the synthetic dataset (200 rows, one unimodal model, early and late fusion, one
epoch): a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mmfuse.data import load_dataset
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, evaluate, fit

DATASETS = {"avdigits": {}, "mfeat": {}, "reviews": {"n": 6000}}
FUSIONS = ["early", "late", "gated"]
QUICK_DATASETS = {"synthetic": {"n": 200}}
COLUMNS = ("dataset", "model", "best_unimodal", "val_acc", "test_acc", "test_macro_f1", "epochs", "fit_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    parser.add_argument("--quick", action="store_true",
                        help="synthetic n=200, one unimodal model, early and late, 1 epoch (a check that the script runs)")
    args = parser.parse_args(argv)
    datasets, fusions, unimodal_max = DATASETS, FUSIONS, None
    if args.quick:
        datasets, fusions, unimodal_max, args.epochs = QUICK_DATASETS, FUSIONS[:2], 1, 1
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=64, seed=args.seed, progress=False)
    lines = ["| dataset | model | val acc | test acc | test macro-F1 | epochs | fit s |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines))
    table: list[dict] = []
    for name, options in datasets.items():
        splits = load_dataset(name, **options)
        rows = []
        for mod in list(splits.modalities)[:unimodal_max]:
            torch.manual_seed(args.seed)
            model = build_unimodal_model(splits.specs, splits.num_classes, mod, hidden_dim=64)
            rows.append((f"unimodal:{mod}", fit(model, splits, cfg)))
        for fusion in fusions:
            torch.manual_seed(args.seed)
            model = build_model(splits.specs, splits.num_classes, fusion, hidden_dim=64)
            rows.append((fusion, fit(model, splits, cfg)))
        best_uni = max((r for r in rows if r[0].startswith("unimodal")), key=lambda r: r[1].val_metrics["accuracy"])
        for label, res in rows:
            test = evaluate(res.model, splits.test)
            row = {"dataset": name, "model": label, "best_unimodal": label == best_uni[0],
                   "val_acc": float(res.val_metrics["accuracy"]), "test_acc": float(test["accuracy"]),
                   "test_macro_f1": float(test["macro_f1"]), "epochs": res.epochs_run,
                   "fit_s": round(res.train_time_s, 2)}
            table.append(row)
            mark = " (best unimodal)" if row["best_unimodal"] else ""
            lines.append(f"| {name} | {label}{mark} | {row['val_acc']:.4f} | {row['test_acc']:.4f} | "
                         f"{row['test_macro_f1']:.4f} | {row['epochs']} | {row['fit_s']:.1f} |")
            print(lines[-1], flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        from mmfuse.io import atomic_write

        atomic_write(f"{args.out}.md", "\n".join(lines) + "\n")
        atomic_write(f"{args.out}.json", json.dumps({"seed": args.seed, "epochs": args.epochs, "rows": table},
                                                    indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
