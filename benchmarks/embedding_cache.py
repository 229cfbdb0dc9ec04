"""Frozen pretrained encoders, cache on vs off: what repeated fits cost, and what the
cache costs on disk.

Usage::

    python benchmarks/embedding_cache.py                      # reviews n=1000, 4 fits a side
    python benchmarks/embedding_cache.py --quick              # tiny model, n=200, 1 fit, no size: seconds
    python benchmarks/embedding_cache.py --out benchmarks/results/embedding_cache_cpu2

What it does, on the ``reviews`` dataset (text + tabular) with a text model built from
a config (no download; random weights cost the same as trained ones):

- **cache on**: :func:`mmfuse.encoders.encode_dataset` encodes the text once into a
  fresh cache folder (the first run pays this), then every fit trains a fusion on the
  cached vectors. A second ``encode_dataset`` call times reading the warm cache (what
  every later run pays instead of encoding).
- **cache off**: the same frozen backbone sits inside the model
  (``build_model(..., encoder_options={"text": {"pretrained": ...}})``) and runs on
  every batch of every epoch of every fit.

The fits of the two sides alternate (on, off, on, off, ...) in one process, so load on
the machine hits both alike; the ratios are the result, the seconds are context.
Each fit: ``gated`` fusion, the seed of its run, ``--epochs`` epochs, no early stop.

Cache size: the whole reviews dataset (23,486 reviews) is encoded with the tiny
model, pooled (one vector per review) and as tokens (``max_length`` vectors and a
mask per review); the bytes of the cache entries on disk divided by the reviews.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse.data import load_dataset
from mmfuse.encoders import encode_dataset
from mmfuse.models import build_model
from mmfuse.training import TrainConfig, fit

MODELS = {
    # name: (layers, width, heads)
    "tiny": (2, 32, 2),
    "small": (4, 256, 4),
}


def save_bert(folder: Path, words: list[str], layers: int, width: int, heads: int) -> Path:
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=2 * width,
                                  max_position_embeddings=128)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_model(name: str, splits: Any, words: list[str], tmp: Path, fits: int, epochs: int) -> dict[str, Any]:
    layers, width, heads = MODELS[name]
    bert = save_bert(tmp / f"bert-{name}", words, layers, width, heads)
    spec = f"hf:{bert}"
    cache = tmp / f"cache-{name}"
    cfg = {"epochs": epochs, "batch_size": 64, "lr": 3e-3, "patience": epochs + 1, "progress": False}
    _, cold = timed(lambda: encode_dataset(splits, {"text": spec}, cache_dir=cache, progress=False))
    on_fits: list[float] = []
    off_fits: list[float] = []
    warm: list[float] = []
    vocab = splits.info["vocab"]
    for seed in range(fits):
        # cache on: read the (warm) cache, then train on vectors
        enc, t_read = timed(lambda: encode_dataset(splits, {"text": spec}, cache_dir=cache, progress=False))
        model = build_model(enc, fusion="gated", hidden_dim=32)
        _, t_fit = timed(lambda: fit(model, enc, TrainConfig(seed=seed, **cfg)))  # noqa: B023
        warm.append(t_read)
        on_fits.append(t_fit)
        # cache off: the frozen backbone runs inside the model on every batch
        model = build_model(splits, fusion="gated", hidden_dim=32,
                            encoder_options={"text": {"pretrained": spec, "vocab": vocab}})
        _, t_off = timed(lambda: fit(model, splits, TrainConfig(seed=seed, **cfg)))  # noqa: B023
        off_fits.append(t_off)
    on_runs = [r + f for r, f in zip(warm, on_fits, strict=True)]
    total_on = cold + sum(on_fits) + sum(warm[1:])  # run 1 encodes; later runs read the cache
    total_off = sum(off_fits)
    return {
        "model": name, "layers": layers, "width": width,
        "encode_cold_s": cold, "cache_read_s": statistics.median(warm),
        "fit_on_cached_s": statistics.median(on_fits), "run_after_first_on_s": statistics.median(on_runs),
        "fit_cache_off_s": statistics.median(off_fits),
        "total_on_s": total_on, "total_off_s": total_off,
        "ratio_total_off_over_on": total_off / total_on,
        "ratio_per_run_off_over_on": statistics.median(off_fits) / statistics.median(on_runs),
    }


def cache_size(words: list[str], tmp: Path, max_length: int) -> list[dict[str, Any]]:
    full = load_dataset("reviews", max_tokens=max_length)
    n = len(full.train) + len(full.val) + len(full.test)
    bert = save_bert(tmp / "bert-size", words, *MODELS["tiny"])
    rows = []
    for output in ("pooled", "tokens"):
        cache = tmp / f"size-{output}"
        spec = f"hf:{bert},max_length={max_length}" + (",tokens" if output == "tokens" else "")
        _, t = timed(lambda: encode_dataset(full, {"text": spec}, cache_dir=cache, progress=False))  # noqa: B023
        size = folder_bytes(cache)
        rows.append({"output": output, "reviews": n, "bytes": size, "bytes_per_review": size / n,
                     "encode_s": t, "width": MODELS["tiny"][1], "max_length": max_length})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="the tiny model, n=200, one fit a side of 1 epoch, no size (a check that the script runs)")
    ap.add_argument("--n", type=int, default=None, help="reviews drawn for the fits")
    ap.add_argument("--fits", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--no-size", action="store_true", help="skip the whole-dataset cache size")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.quick:  # the whole-dataset size encodes 23,486 reviews: not quick
        args.no_size, args.models, args.epochs = True, "tiny", 1
    n = args.n or (200 if args.quick else 1000)
    fits = args.fits or (1 if args.quick else 4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    splits = load_dataset("reviews", n=n, max_tokens=64)
    words = [w for w in load_dataset("reviews", n=2000).info["vocab"][2:2000] if w.isalnum()]
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "load_avg_start": os.getloadavg()},
        "settings": {"n": n, "fits": fits, "epochs": args.epochs, "fusion": "gated", "max_tokens": 64},
        "runs": [], "size": [],
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            row = bench_model(name, splits, words, tmp, fits, args.epochs)
            results["runs"].append(row)
            print(json.dumps(row), file=sys.stderr)
        if not args.no_size:
            results["size"] = cache_size(words, tmp, 64)
    results["machine"]["load_avg_end"] = os.getloadavg()
    md = render(results)
    print(md)
    if args.out:
        from mmfuse.io import atomic_write

        atomic_write(f"{args.out}.json", json.dumps(results, indent=1))
        atomic_write(f"{args.out}.md", md)
    return 0


def render(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        "# Embedding cache: frozen text encoder, cache on vs off",
        "",
        f"reviews, n={s['n']} ({s['fits']} fits a side, alternating; {s['epochs']} epochs each, "
        f"fusion {s['fusion']}, {s['max_tokens']} tokens). Machine: {res['machine']}.",
        "",
        "| model | encode once (s) | read warm cache (s) | fit on cache (s) | run after first, on (s) "
        "| fit, cache off (s) | per-run ratio off/on | total on (s) | total off (s) | total ratio off/on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['model']} ({r['layers']}x{r['width']}) | {r['encode_cold_s']:.2f} | {r['cache_read_s']:.3f} "
            f"| {r['fit_on_cached_s']:.2f} | {r['run_after_first_on_s']:.2f} | {r['fit_cache_off_s']:.2f} "
            f"| **{r['ratio_per_run_off_over_on']:.1f}x** | {r['total_on_s']:.1f} | {r['total_off_s']:.1f} "
            f"| **{r['ratio_total_off_over_on']:.1f}x** |"
        )
    if res["size"]:
        lines += ["", "Cache size on disk, whole reviews dataset, tiny model:", "",
                  "| output | reviews | bytes | bytes per review | encode (s) |", "|---|---|---|---|---|"]
        for r in res["size"]:
            lines.append(f"| {r['output']} (width {r['width']}, {r['max_length']} tokens) | {r['reviews']} "
                         f"| {r['bytes']} | {r['bytes_per_review']:.0f} | {r['encode_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
