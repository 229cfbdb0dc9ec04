"""Test accuracy of the unimodal baselines and of early, late and gated fusion on the
real datasets, one seed, trained with mmfuse.training.fit (CPU, a few minutes).

    OMP_NUM_THREADS=1 python benchmarks/train_baselines.py [--seed 0] [--epochs 15]

Prints one markdown table; the best unimodal baseline is chosen on validation accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmfuse.data import load_dataset
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import TrainConfig, evaluate, fit

DATASETS = {"avdigits": {}, "mfeat": {}, "reviews": {"n": 6000}}
FUSIONS = ["early", "late", "gated"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    args = parser.parse_args()
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=64, seed=args.seed, progress=False)
    print("| dataset | model | val acc | test acc | test macro-F1 | epochs | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, options in DATASETS.items():
        splits = load_dataset(name, **options)
        rows = []
        for mod in splits.modalities:
            torch.manual_seed(args.seed)
            model = build_unimodal_model(splits.specs, splits.num_classes, mod, hidden_dim=64)
            rows.append((f"unimodal:{mod}", fit(model, splits, cfg)))
        for fusion in FUSIONS:
            torch.manual_seed(args.seed)
            model = build_model(splits.specs, splits.num_classes, fusion, hidden_dim=64)
            rows.append((fusion, fit(model, splits, cfg)))
        best_uni = max((r for r in rows if r[0].startswith("unimodal")), key=lambda r: r[1].val_metrics["accuracy"])
        for label, res in rows:
            test = evaluate(res.model, splits.test)
            mark = " (best unimodal)" if label == best_uni[0] else ""
            print(f"| {name} | {label}{mark} | {res.val_metrics['accuracy']:.4f} | {test['accuracy']:.4f} | "
                  f"{test['macro_f1']:.4f} | {res.epochs_run} | {res.train_time_s:.1f} |", flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
