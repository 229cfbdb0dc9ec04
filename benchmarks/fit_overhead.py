"""Per-fit overhead of mmfuse.training.fit (Lightning Trainer) against a bare PyTorch
loop doing the same epochs on a tiny dataset.

    OMP_NUM_THREADS=1 python benchmarks/fit_overhead.py [--repeats 5]

The bench runs hundreds of short fits, so what matters is the fixed cost per fit:
(fit wall time) - (bare loop wall time), with progress=False and no out_dir.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmfuse.data import load_dataset
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, fit
from mmfuse.training.metrics import iter_batches


def bare_loop(model, splits, cfg: TrainConfig) -> float:
    start = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = splits.train
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(train))
        for i in range(0, len(train), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            logits = model({m: x[idx] for m, x in train.inputs.items()}, {m: k[idx] for m, k in train.masks.items()})
            loss = F.cross_entropy(logits, train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for b in iter_batches(splits.val, 512):
                F.cross_entropy(model(b["inputs"], b["masks"]), b["label"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    splits = load_dataset("synthetic", task="redundancy", n=300, dim=8)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, progress=False, patience=100)
    fit(build_model(splits.specs, splits.num_classes, "gated", hidden_dim=16), splits, cfg)  # warm-up
    fits, bares = [], []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        t = time.perf_counter()
        fit(build_model(splits.specs, splits.num_classes, "gated", hidden_dim=16), splits, cfg)
        fits.append(time.perf_counter() - t)
        torch.manual_seed(0)
        bares.append(bare_loop(build_model(splits.specs, splits.num_classes, "gated", hidden_dim=16), splits, cfg))
    f, b = statistics.median(fits), statistics.median(bares)
    print(f"{len(splits.train)} train rows, {args.epochs} epochs, batch 64: fit() {f * 1000:.0f} ms, "
          f"bare loop {b * 1000:.0f} ms, overhead {(f - b) * 1000:.0f} ms per fit "
          f"({(f - b) / args.epochs * 1000:.0f} ms per epoch incl. Trainer set-up)")


if __name__ == "__main__":
    main()
