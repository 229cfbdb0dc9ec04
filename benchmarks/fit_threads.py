"""Where more torch intra-op threads start to pay off when training on a CPU, and
what ``TrainConfig(threads="auto")`` saves on a default-sized fit.

    python benchmarks/fit_threads.py [--threads 2] [--repeats 5] [--json out.json]

1. Sweep: one training step (forward, backward, AdamW) of ``gated`` models of growing
   width on the synthetic task at batch 128, timed with 1 thread and with N threads,
   alternated in every repetition (medians of 10 steps each). The work of a step is
   reported as parameters x batch, the quantity ``mmfuse.training.threads.auto_threads``
   reads; the ratio t(N) / t(1) < 1 where the extra threads pay off.
2. fit: the bench's default run (synthetic n=2000, gated, hidden 64, 15 epochs,
   batch 128) with torch's default thread count (all CPUs) against ``threads="auto"``,
   alternated, medians.

Run it without OMP_NUM_THREADS set (the script sets the counts itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from mmfuse.data import load_dataset
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, fit
from mmfuse.training.metrics import take
from mmfuse.training.module import FusionModule
from mmfuse.training.threads import auto_threads, available_cpus


def step_time(model, splits, threads: int, steps: int = 10, batch: int = 128) -> float:
    torch.set_num_threads(threads)
    loss_of = FusionModule(model, TrainConfig(), splits.task).loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 2):
        idx = torch.randint(0, len(splits.train), (batch,), generator=g)
        b = take(splits.train, idx)
        t = time.perf_counter()
        loss = loss_of(model(b["inputs"], b["masks"]), b["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # the first steps allocate
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cpus(), help="N, compared with 1")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per sweep measurement")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true",
                        help="one width, one repeat of 2 steps, 200 samples, 1-epoch fits (a check that the script runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.repeats, args.fit_repeats, args.steps = [16], 1, 1, 2
    default_threads = torch.get_num_threads()
    splits = load_dataset("synthetic", n=200 if args.quick else 2000)

    rows = []
    for width in args.widths:
        torch.manual_seed(0)
        model = build_model(splits, fusion="gated", hidden_dim=width)
        params = sum(p.numel() for p in model.parameters())
        one, many = [], []
        for _ in range(args.repeats):
            one.append(step_time(model, splits, 1, args.steps))
            many.append(step_time(model, splits, args.threads, args.steps))
        t1, tn = statistics.median(one), statistics.median(many)
        rows.append({"hidden_dim": width, "params": params, "work": params * 128, "t1_ms": round(t1 * 1e3, 3),
                     f"t{args.threads}_ms": round(tn * 1e3, 3), "ratio": round(tn / t1, 3),
                     "auto_threads_if_idle": auto_threads(model, 128, cpus=args.threads),
                     "auto_threads_now": auto_threads(model, 128)})
        print(f"d={width:5d} params={params:9d} work={params * 128:.2e}: 1 thread {t1 * 1e3:8.2f} ms, "
              f"{args.threads} threads {tn * 1e3:8.2f} ms, ratio {tn / t1:.2f}, auto -> "
              f"{rows[-1]['auto_threads_if_idle']} on {args.threads} idle CPUs, {rows[-1]['auto_threads_now']} now")

    torch.set_num_threads(default_threads)
    cfg = TrainConfig(epochs=1 if args.quick else 15, batch_size=128, progress=False, patience=10**6)

    def one_fit(threads):
        torch.manual_seed(0)
        model = build_model(splits, fusion="gated", hidden_dim=64)
        t = time.perf_counter()
        result = fit(model, splits, cfg.replace(threads=threads))
        return time.perf_counter() - t, result.threads

    one_fit("auto")  # warm-up
    default_s, auto_s, chosen = [], [], None
    for _ in range(args.fit_repeats):
        default_s.append(one_fit(default_threads)[0])
        t, chosen = one_fit("auto")
        auto_s.append(t)
    d, a = statistics.median(default_s), statistics.median(auto_s)
    print(f"default fit (gated d=64, 15 epochs): torch default {default_threads} threads {d:.2f} s, "
          f"auto ({chosen} thread(s)) {a:.2f} s: default / auto = {d / a:.2f}")
    result = {
        "cpus": available_cpus(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "torch_default_threads": default_threads,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "compared_threads": args.threads,
        "sweep": rows,
        "fit": {"default_threads_s": [round(v, 3) for v in default_s], "auto_s": [round(v, 3) for v in auto_s],
                "auto_threads": chosen, "default_over_auto": round(d / a, 3)},
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
