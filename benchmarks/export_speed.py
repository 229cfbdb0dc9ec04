"""Export time, parity and speed of exported models (``mmfuse export``), on 2 CPU cores.

Usage::

    python benchmarks/export_speed.py                        # every strategy: about 6 min on 2 shared CPUs
    python benchmarks/export_speed.py --cases early,gated --speed early   # quick
    python benchmarks/export_speed.py --out benchmarks/results/export_cpu2.json   # + .md beside it
    python benchmarks/export_speed.py --quick --out /tmp/export.json   # one model, 60 rows: a check that it runs

What it does, in one process with ``torch.set_num_threads(--threads)`` (default 2) and
onnxruntime's CPU provider on as many intra-op threads:

1. A table of ``--rows`` rows (default 600) with four modalities, read by the real
   preprocessing (``mmfuse.from_table``): ``note`` (text, 32 tokens), ``seq`` (a ragged
   sequence of 3-d vectors, up to 5 tokens, token mask), ``tabular`` (a numeric and a
   categorical column) and ``vec`` (a 16-d vector), each missing in about 20% of the
   rows. Models: every registered strategy, decision-level ``late``, and the unimodal
   baseline of each modality, built with ``hidden_dim=32`` (untrained weights, eval mode).
2. Export time per model: ``trace`` (``torch.export.export``, once), then ``pt2``
   (``torch.export.save``) and ``onnx`` (``torch.onnx.export(program, dynamo=True)`` and
   the serialisation) from that trace; the export time of a format is the trace plus its
   save, what ``mmfuse export`` spends (without loading the run). Also the load time of
   the pt2 program (``torch.export.load(...).module()``) and the files' sizes.
3. Parity: max |logits - PyTorch's| of the ONNX model in onnxruntime and of the loaded
   pt2 program, on a batch of 1 row and one of 37 (training rows, a quarter of each
   modality dropped at random, three rows with every modality missing: NaN expected
   there, and checked).
4. Speed, for ``--speed`` strategies (default early, gated, multihead_cross_attention,
   cross_modal_transformer), at 1 and 2 threads (``--speed-threads``; torch's threads for
   eager and pt2, onnxruntime's intra-op threads): rows/s at batch 1 and 64 of the eager module (the same
   computation as the exported graph: encoders, fusion, head, softmax, under
   ``torch.inference_mode``), the ONNX model in onnxruntime and the loaded pt2 program.
   Each is called for ``--seconds`` (default 1) after a warm-up call, ``--repeats`` times
   (default 3), in turn; the median is reported, and the best beside it. The eager module
   is the one the graph was traced from (``trace(model).module``), on the same tensors.

The machine's load average is recorded at the start and the end: on a shared machine,
times vary between runs. Nothing here asserts a time.
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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mmfuse
from mmfuse.runs.export import feeds, trace

DEFAULT_SPEED = ("early", "gated", "multihead_cross_attention", "cross_modal_transformer")


def table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(200)]
    df = pd.DataFrame({
        "note": [" ".join(rng.choice(words, rng.integers(3, 40))) for _ in range(n)],
        "age": rng.integers(18, 70, n).astype(float),
        "size": rng.choice(["S", "M", "L", "XL"], n),
        "vec": [list(rng.normal(size=16)) for _ in range(n)],
        "seq": [[list(rng.normal(size=3)) for _ in range(rng.integers(1, 6))] for _ in range(n)],
        "label": rng.choice(["a", "b", "c"], n),
    })
    gone = rng.random((n, 3)) < 0.2
    df.loc[gone[:, 0], "note"] = ""
    df.loc[gone[:, 1], "vec"] = None
    df.loc[gone[:, 2], "seq"] = None
    return df


def build(splits: Any, case: str, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if case.startswith("uni:"):
        return mmfuse.build_unimodal_model(splits, modality=case[4:], hidden_dim=hidden).eval()
    name, _, level = case.partition(":")
    return mmfuse.build_model(splits, fusion=name, hidden_dim=hidden,
                              fusion_options={"level": level} if level else {}).eval()


def present(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dim() == 1 else mask.any(dim=1)


def parity_batches(ds: Any) -> dict[str, tuple[dict, dict]]:
    g = torch.Generator().manual_seed(0)
    inputs = {m: x[:37] for m, x in ds.inputs.items()}
    masks = {}
    for m, k in ds.masks.items():
        drop = torch.rand(37, generator=g) < 0.25
        drop[:3] = True
        k = k[:37].clone()
        k[drop] = False
        masks[m] = k
    here = torch.stack([present(k) for k in masks.values()], 1)
    one = int(next(i for i in range(3, 37) if here[i].any() and not here[i].all()))
    return {"1": ({m: x[one:one + 1] for m, x in inputs.items()}, {m: k[one:one + 1] for m, k in masks.items()}),
            "37": (inputs, masks)}


def eager_logits(model: torch.nn.Module, inputs: dict, masks: dict) -> np.ndarray:
    ok = torch.stack([present(masks[m]) for m in model.modalities], 1).any(1)
    if not hasattr(model, "fusion"):
        ok[:] = True
    out = np.full((len(ok), model.config["num_classes"]), np.nan, dtype=np.float32)
    with torch.inference_mode():
        out[ok.numpy()] = model({m: x[ok] for m, x in inputs.items()}, {m: k[ok] for m, k in masks.items()}).numpy()
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rate(fn: Callable[[], Any], rows: int, seconds: float) -> float:
    fn()  # warm-up
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return rows * calls / dt


def measure_case(case: str, splits: Any, hidden: int, folder: Path, ort: Any, threads: int) -> dict[str, Any]:
    model = build(splits, case, hidden)
    traced, t_trace = timed(lambda: trace(model, class_names=splits.train.class_names))
    pt2_info, t_pt2 = timed(lambda: traced.save(folder / f"{case}.pt2"))
    onnx_info, t_onnx = timed(lambda: traced.save(folder / f"{case}.onnx"))
    program, t_load = timed(lambda: torch.export.load(str(folder / f"{case}.pt2")).module())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session, t_session = timed(lambda: ort.InferenceSession(str(folder / f"{case}.onnx"), opts,
                                                            providers=["CPUExecutionProvider"]))
    rec: dict[str, Any] = {
        "case": case, "params": sum(p.numel() for p in model.parameters()),
        "trace_s": t_trace, "pt2_save_s": t_pt2, "onnx_save_s": t_onnx,
        "pt2_export_s": t_trace + t_pt2, "onnx_export_s": t_trace + t_onnx,
        "pt2_load_s": t_load, "onnx_session_s": t_session,
        "pt2_bytes": (folder / f"{case}.pt2").stat().st_size, "onnx_bytes": (folder / f"{case}.onnx").stat().st_size,
        # None: no sequence or audio input (a text's length is fixed at max_tokens)
        "dynamic_seq": (any(isinstance(t.shape[1], str) for t in onnx_info.inputs if t.role == "tokens")
                        if any(t.role == "tokens" for t in onnx_info.inputs) else None),
        "parity": {},
    }
    for label, (x, k) in parity_batches(splits.train).items():
        want = eager_logits(model, x, k)
        got_onnx = session.run(None, feeds(onnx_info, x, k))[0]
        with torch.inference_mode():
            got_pt2 = program(*feeds(pt2_info, x, k, numpy=False).values())[0].numpy()
        for fmt, got in (("onnx", got_onnx), ("pt2", got_pt2)):
            same_nan = bool((np.isnan(got) == np.isnan(want)).all())
            diff = float(np.nanmax(np.abs(got - want))) if not np.isnan(want).all() else 0.0
            rec["parity"][f"{fmt} b={label}"] = {"max_abs_diff": diff, "nan_rows_match": same_nan}
    rec["_objects"] = (traced.module, session, program, onnx_info, pt2_info, folder / f"{case}.onnx")
    return rec


def measure_speed(rec: dict[str, Any], splits: Any, ort: Any, threads: list[int], seconds: float,
                  repeats: int) -> dict[str, Any]:
    """rows/s per thread count and batch size of the eager module, onnxruntime and the pt2 program."""
    eager_module, _, program, onnx_info, pt2_info, onnx_path = rec["_objects"]
    ds = splits.train
    out: dict[str, Any] = {}
    for n in threads:
        torch.set_num_threads(n)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = n, 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        for b in (1, 64):
            idx = torch.arange(b) % len(ds)
            x = {m: v[idx] for m, v in ds.inputs.items()}
            k = {m: v[idx] for m, v in ds.masks.items()}
            np_feed = feeds(onnx_info, x, k)
            pt_feed = list(feeds(pt2_info, x, k, numpy=False).values())

            def torch_call(module: Any, tensors: list[torch.Tensor] = pt_feed) -> Callable[[], Any]:
                def call() -> Any:
                    with torch.inference_mode():
                        return module(*tensors)
                return call

            def ort_call(sess: Any = session, feed: dict[str, np.ndarray] = np_feed) -> Any:
                return sess.run(None, feed)

            runs: dict[str, list[float]] = {"eager": [], "onnxruntime": [], "pt2": []}
            fns = {"eager": torch_call(eager_module), "onnxruntime": ort_call, "pt2": torch_call(program)}
            for _ in range(repeats):
                for name, fn in fns.items():
                    runs[name].append(rate(fn, b, seconds))
            out[f"{n} threads, b={b}"] = {name: {"median": statistics.median(v), "best": max(v)}
                                         for name, v in runs.items()}
    return out


SEQ = {True: "dynamic", False: "fixed", None: "-"}


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Export time, parity and speed ({doc['meta']['threads']} threads)", "",
             f"{doc['meta']['platform']}, torch {doc['meta']['torch']}, onnxruntime {doc['meta']['onnxruntime']}, "
             f"{doc['meta']['date']}; load average {doc['meta']['load_before']} before, "
             f"{doc['meta']['load_after']} after (a shared machine: times vary between runs).", "",
             f"Table of {doc['meta']['rows']} rows, modalities {', '.join(doc['meta']['modalities'])}, "
             f"hidden_dim={doc['meta']['hidden_dim']}; `python benchmarks/export_speed.py` "
             "(see its docstring).", "",
             "## Export time and parity", "",
             "Export s: the trace (`torch.export.export`) plus the save (pt2) or the ONNX conversion; seq "
             "length: the sequence's length axis in the exported model (-: no sequence input; the text is "
             "fixed at the preprocessor's max_tokens). Max abs diff: of the logits against PyTorch's, the "
             "NaN rows (every modality missing) excluded and checked apart.", "",
             "| model | params | trace s | pt2 export s | onnx export s | pt2 load s | onnx MB | seq length "
             "| max abs diff onnx b=1 / b=37 | pt2 b=1 / b=37 | NaN rows match |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["cases"]:
        p = r["parity"]
        nan_ok = all(v["nan_rows_match"] for v in p.values())
        lines.append(
            f"| {r['case']} | {r['params']:,} | {r['trace_s']:.1f} | {r['pt2_export_s']:.1f} | {r['onnx_export_s']:.1f} "
            f"| {r['pt2_load_s']:.1f} | {r['onnx_bytes'] / 2**20:.2f} | {SEQ[r['dynamic_seq']]} "
            f"| {p['onnx b=1']['max_abs_diff']:.1e} / {p['onnx b=37']['max_abs_diff']:.1e} "
            f"| {p['pt2 b=1']['max_abs_diff']:.1e} / {p['pt2 b=37']['max_abs_diff']:.1e} | {'yes' if nan_ok else 'NO'} |")
    for r in doc.get("failed", []):
        lines.append(f"| {r['case']} | failed: {r['error']} |")
    lines += ["", "## Rows per second (median of the repeats; best in brackets)", "",
              "Threads: torch's intra-op threads (eager, pt2) and onnxruntime's.", "",
              "| model | setting | eager | onnxruntime | pt2 program | onnxruntime / eager |",
              "|---|---|---|---|---|---|"]
    for case, speeds in doc["speed"].items():
        for b, s in speeds.items():
            ratio = s["onnxruntime"]["median"] / s["eager"]["median"]
            cells = " | ".join(f"{s[k]['median']:,.0f} ({s[k]['best']:,.0f})" for k in ("eager", "onnxruntime", "pt2"))
            lines.append(f"| {case} | {b} | {cells} | {ratio:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated models (fusion names, late:decision, uni:<modality>; "
                        "default: every strategy, late:decision and every modality's baseline)")
    parser.add_argument("--speed", default=",".join(DEFAULT_SPEED), help="strategies whose speed is measured")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--hidden-dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads while exporting "
                        "and checking parity (default 2)")
    parser.add_argument("--speed-threads", default="1,2", help="thread counts of the speed measurements")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here (and markdown beside it)")
    parser.add_argument("--quick", action="store_true",
                        help="early only, 60 rows, one thread, speed for 0.05 s once (a check that the script runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.speed, args.rows, args.threads = "early", "early", 60, 1
        args.speed_threads, args.seconds, args.repeats = "1", 0.05, 1
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    load_before = os.getloadavg()
    splits = mmfuse.from_table(table(args.rows), target="label", max_tokens=32)
    cases = (args.cases.split(",") if args.cases else
             [*mmfuse.list_fusions(), "late:decision", *(f"uni:{m}" for m in sorted(splits.specs))])
    speed = [s for s in args.speed.split(",") if s]
    doc: dict[str, Any] = {"cases": [], "failed": [], "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            try:
                rec = measure_case(case, splits, args.hidden_dim, Path(tmp), ort, args.threads)
            except Exception as e:  # noqa: BLE001  (recorded, the run goes on)
                doc["failed"].append({"case": case, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(f"{case}: failed: {e}", flush=True)
                continue
            if case in speed:
                doc["speed"][case] = measure_speed(rec, splits, ort, [int(v) for v in args.speed_threads.split(",")],
                                                   args.seconds, args.repeats)
                torch.set_num_threads(args.threads)
            rec.pop("_objects")
            doc["cases"].append(rec)
            p = rec["parity"]
            print(f"{case}: trace {rec['trace_s']:.1f}s pt2 {rec['pt2_export_s']:.1f}s onnx {rec['onnx_export_s']:.1f}s "
                  f"diff " + " ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in p.items())
                  + (f" speed {json.dumps(doc['speed'][case])}" if case in doc["speed"] else ""), flush=True)
    doc["meta"] = {
        "threads": args.threads, "rows": args.rows, "hidden_dim": args.hidden_dim,
        "modalities": sorted(splits.specs), "platform": platform.platform(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"),
        "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    text = markdown(doc)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
        args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
