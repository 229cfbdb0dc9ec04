"""Throughput of mmfuse.training.fit (Lightning) against a bare PyTorch loop doing the
same work on the same model and data, on a default-sized bench run.

    OMP_NUM_THREADS=1 python benchmarks/fit_overhead.py [--repeats 5] [--compile] [--deterministic false]

Both sides train the same architecture (fresh weights, same seed) for the same
epochs at the same batch size, with the same AdamW, the same task loss and one
validation-loss pass per epoch; the bare loop indexes the tensors directly and has
no Trainer, callbacks, early-stopping state or checkpoint logic. It runs under the
same torch settings as ``fit`` (determinism, thread count; before this, the bare loop
ran without ``deterministic``, which alone made ``fit`` look about 6 % slower). The two are
alternated in every repetition and the medians compared, so a busy machine slows
both alike. ``fit`` is timed as its caller sees it (wall time of the call, Trainer
set-up and the final validation evaluation included).

Reported: samples/s of each (training samples x epochs / wall seconds), the
overhead ``(fit - bare) / fit`` (the share of a run that is not training), and
``--compile``: the same with ``TrainConfig(compile=True)`` on the fit side, plus an
eager fit in the same rotation for the compiled / eager ratio (compilation is paid
once per process; the first, warm-up fit absorbs it and is reported separately).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from mmfuse.data import load_dataset
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, fit
from mmfuse.training.metrics import iter_batches
from mmfuse.training.module import FusionModule
from mmfuse.training.threads import auto_threads


@contextlib.contextmanager
def same_settings(model, cfg: TrainConfig) -> Iterator[None]:
    """The process-wide torch settings ``fit`` trains under, for the bare loop: the same
    determinism (``cfg.deterministic``: Lightning calls
    ``torch.use_deterministic_algorithms``, which among other things fills every new
    tensor's memory, a few percent of a small model's step) and the same intra-op
    thread count (:func:`mmfuse.training.threads.auto_threads`); restored afterwards."""
    det_before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    threads_before = torch.get_num_threads()
    threads = cfg.threads if cfg.threads != "auto" else auto_threads(model, cfg.batch_size)
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=cfg.deterministic == "warn")
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det_before, warn_only=warn_before)
        torch.set_num_threads(threads_before)


def bare_loop(model, splits, cfg: TrainConfig) -> float:
    """The same epochs as fit, by hand: shuffle, step, one validation-loss pass per epoch,
    under the same torch settings (:func:`same_settings`)."""
    with same_settings(model, cfg):
        return _bare_loop(model, splits, cfg)


#: the clock of both sides: wall time (perf_counter) or, with --clock cpu, this
#: process's CPU time (process_time), which on a machine shared with other work leaves
#: out the time spent waiting for a core (a fit here runs in this process: no workers)
CLOCK = time.perf_counter


def _bare_loop(model, splits, cfg: TrainConfig) -> float:
    start = CLOCK()
    loss_of = FusionModule(model, cfg.replace(compile=False), splits.task).loss
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = splits.train
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(train))
        for i in range(0, len(train), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            out = model({m: x[idx] for m, x in train.inputs.items()}, {m: k[idx] for m, k in train.masks.items()})
            loss = loss_of(out, train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for b in iter_batches(splits.val, 512):
                loss_of(model(b["inputs"], b["masks"]), b["label"], reduction="sum")
    return CLOCK() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15, help="the bench's default")
    parser.add_argument("--batch-size", type=int, default=128, help="the bench's default")
    parser.add_argument("--hidden-dim", type=int, default=64, help="the bench's default")
    parser.add_argument("--n", type=int, default=2000, help="the bench's synthetic size")
    parser.add_argument("--fusion", default="gated")
    parser.add_argument("--compile", action="store_true", help="fit with TrainConfig(compile=True)")
    parser.add_argument("--deterministic", choices=("true", "false"), default="true",
                        help="TrainConfig.deterministic of both sides (the default, as the bench runs: true)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: the process's CPU time (less noise on a shared machine)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 1 epoch, 200 samples, width 16 (a check that the script runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.n, args.hidden_dim = 1, 1, 200, 16
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    splits = load_dataset("synthetic", n=args.n)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, progress=False, patience=10**6,
                      compile=args.compile, deterministic=args.deterministic == "true")
    load_before = os.getloadavg()

    def new_model():
        torch.manual_seed(0)
        return build_model(splits, fusion=args.fusion, hidden_dim=args.hidden_dim)

    t = time.perf_counter()
    fit(new_model(), splits, cfg)  # warm-up: imports, first-call costs, compilation
    warm = time.perf_counter() - t
    bare_loop(new_model(), splits, cfg)
    if args.compile:
        fit(new_model(), splits, cfg.replace(compile=False))
    fits, bares, eagers = [], [], []
    for i in range(args.repeats):
        if i % 2:  # alternate which side goes first
            bares.append(bare_loop(new_model(), splits, cfg))
        model = new_model()
        t = CLOCK()
        fit(model, splits, cfg)
        fits.append(CLOCK() - t)
        if not i % 2:
            bares.append(bare_loop(new_model(), splits, cfg))
        if args.compile:
            t = CLOCK()
            fit(new_model(), splits, cfg.replace(compile=False))
            eagers.append(CLOCK() - t)
    f, b = statistics.median(fits), statistics.median(bares)
    # each repetition's own overhead (its fit against the bare loop next to it)
    per_repeat = [(fv - bv) / fv for fv, bv in zip(fits, bares, strict=True)]
    samples = len(splits.train) * args.epochs
    result = {
        "dataset": f"synthetic n={args.n} ({len(splits.train)} train rows)",
        "fusion": args.fusion,
        "hidden_dim": args.hidden_dim,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "deterministic": cfg.deterministic,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "warmup_fit_s": round(warm, 3),
        "fit_s_median": round(f, 4),
        "bare_s_median": round(b, 4),
        "fit_samples_per_s": round(samples / f, 1),
        "bare_samples_per_s": round(samples / b, 1),
        "overhead_fraction": round((f - b) / f, 4),
        "overhead_per_repeat": [round(v, 4) for v in per_repeat],
        "overhead_per_repeat_median": round(statistics.median(per_repeat), 4),
        "clock": args.clock,
        "fit_s_all": [round(v, 4) for v in fits],
        "bare_s_all": [round(v, 4) for v in bares],
    }
    print(f"{result['dataset']}, {args.fusion} d={args.hidden_dim}, {args.epochs} epochs, batch {args.batch_size}"
          f"{', compile' if args.compile else ''}: fit() {f * 1000:.0f} ms ({samples / f:.0f} samples/s), "
          f"bare loop {b * 1000:.0f} ms ({samples / b:.0f} samples/s), overhead {(f - b) / f:.1%} of a run "
          f"(median per repetition {statistics.median(per_repeat):.1%}, {args.clock} clock) "
          f"(warm-up fit {warm:.1f} s)")
    if args.compile:
        e = statistics.median(eagers)
        result.update(eager_fit_s_median=round(e, 4), eager_fit_s_all=[round(v, 4) for v in eagers],
                      compiled_over_eager=round(f / e, 4))
        print(f"compiled fit / eager fit = {f / e:.2f} (eager fit {e * 1000:.0f} ms)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
