"""Prediction speed and memory of a trained run (`mmfuse predict`) on the reviews table.

Usage::

    python benchmarks/predict_speed.py                    # defaults: ~7 minutes on 2 CPUs
    python benchmarks/predict_speed.py --rows 5000 --rounds 2 --stream-rows 100000   # quick
    python benchmarks/predict_speed.py --out benchmarks/results/predict_speed_cpu2.json  # + .md beside it
    python benchmarks/predict_speed.py --quick --out /tmp/predict.json   # a check that it runs: seconds

What it does:

1. Trains one ``gated`` model on a Parquet copy of the reviews table
   (``mmfuse train --target "Recommended IND" --exclude Rating --epochs 2``) in a child
   process, into a temporary folder (``--run RUN`` reuses a bundle instead).
2. In this one process, ``--rounds`` rounds; in each, every measurement once, for each
   thread count (1, as training uses, and torch's default), the order reversed every
   other round so that load on the machine hits all alike. Medians are reported.
   The input is the table without its two target columns (new rows to predict), cut or
   repeated to ``--rows`` rows (default: all 23,486).

   (a) end to end: ``run.predict_file(table.parquet, out.parquet)`` (what ``mmfuse predict
       --data table.parquet --out preds.parquet`` runs: read in batches of 4096 rows,
       preprocess, model, write), and ``run.predict(df)`` on the frame in memory;
   (b) the bare forward: ``run.outputs(t)`` on ``t = run.transform(df)``, encoded once
       (the model in batches of 512 under inference mode, nothing else);

   the ratio (a)/(b) of rows/s, and where the time of ``predict_file`` goes: the
   functions it calls are wrapped with timers for the measured calls (read: the Parquet
   batches; the preprocessing of each modality, ``read`` and ``apply`` of its block; the
   forward; the prediction frame; the writer). One further ``predict_file`` at one thread
   runs under cProfile; the top functions by own time are listed.
3. (c) Peak memory of a streamed prediction: the input rows repeated to
   ``--stream-rows`` rows (default 1,000,000) across Parquet files of 5 copies of the
   table (117,430 rows each, row groups of 16,384 rows, a ``row_id`` column), then, in a
   child process, ``mmfuse predict RUN --data FOLDER --out preds.parquet --batch-rows
   4096 --id row_id`` (``mmfuse.cli.main``, the console script's function). The child
   reports its own peak resident set (``VmHWM`` of ``/proc/self/status``) before and
   after; it is compared with the in-memory size of the folder as one DataFrame
   (``memory_usage(deep=True)`` of one file as ``pd.read_parquet`` gives it, times the
   files). The child runs ``--stream-threads`` torch threads (default 1). For scale, a
   second child predicts one file at once (``run.predict`` on the whole frame) and
   reports its peak the same way. ``--with-scanner`` also runs the child with
   ``mmfuse.data.table.iter_parquet`` replaced by a pyarrow dataset scanner (default
   read-ahead), to show what that costs.

Thread counts: torch's (``torch.set_num_threads``) and, where the ``Run`` sets its own
for the forward (``Run.threads``), that one too.

``--quick`` runs every step on 400 rows: training on them for one epoch (in this process,
through the same ``mmfuse.cli.main``), one round at one thread, a streamed folder of
4,000 rows: a check that the script runs, not a measurement.

Linux only (``/proc``). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mmfuse
import mmfuse.runs.predictor as predictor
from mmfuse.data._files import SOURCES, require

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("Rating", "Recommended IND")
DEFAULT_THREADS = torch.get_num_threads()  # before anything here sets it
COPIES_PER_FILE = 5
ROW_GROUP = 16_384
BATCH_ROWS = 4096
MiB = 2**20


# ---------------------------------------------------------------- data and model
def reviews_path(data_root: str | None) -> Path:
    root = require("reviews", data_root)
    return root / SOURCES["clothing_reviews"].files[0].path


def input_frame(reviews: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The reviews without their targets, cut or repeated to ``rows`` rows."""
    frame = reviews.drop(columns=list(TARGETS))
    reps = -(-rows // len(frame))
    return pd.concat([frame] * reps, ignore_index=True).iloc[:rows].reset_index(drop=True)


def train_run(table: Path, out: Path, *, epochs: int = 2, child: bool = True) -> float:
    """A ``gated`` run bundle in ``out`` from ``mmfuse train`` (in a child process unless ``child``
    is False: then in this one, e.g. ``--quick``); its wall time."""
    argv = ["train", "--data", str(table), "--target", "Recommended IND", "--exclude", "Rating", "--fusion", "gated",
            "--epochs", str(epochs), "--out", str(out)]
    t0 = time.perf_counter()
    if not child:
        from mmfuse.cli import main

        if main(argv):
            raise SystemExit("mmfuse train failed")
        return time.perf_counter() - t0
    code = "import sys; from mmfuse.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"mmfuse train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- timers
class Timers:
    """Named sums of seconds, wall-clock and CPU (this process, all its threads)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def add(self, name: str, w0: float, c0: float) -> None:
        self.seconds[name] += time.perf_counter() - w0
        self.cpu[name] += time.process_time() - c0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, w0, c0)
        return timed

    def wrap_iter(self, name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            while True:
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    item = next(it)
                except StopIteration:
                    self.add(name, w0, c0)
                    return
                self.add(name, w0, c0)
                yield item
        return timed


@contextlib.contextmanager
def instrumented(run: Any, timers: Timers) -> Iterator[None]:
    """Time the steps of ``run.predict_file`` (the real code path: its callees are wrapped, then restored)."""
    saved_batches, saved_write, saved_close = predictor._batches, predictor._Writer.write, predictor._Writer.close
    predictor._batches = timers.wrap_iter("read", saved_batches)
    predictor._Writer.write = timers.wrap("write", saved_write)
    predictor._Writer.close = timers.wrap("write", saved_close)
    patched: list[tuple[Any, str]] = []

    def patch(obj: Any, attr: str, name: str) -> None:
        setattr(obj, attr, timers.wrap(name, getattr(obj, attr)))
        patched.append((obj, attr))

    patch(run, "transform", "transform")
    patch(run, "outputs", "forward")
    patch(run, "prediction_frame", "prediction frame")
    for m, block in run.preprocessor.blocks.items():
        patch(block, "read", f"transform: {m} read")
        patch(block, "apply", f"transform: {m} apply")
    try:
        yield
    finally:
        predictor._batches, predictor._Writer.write, predictor._Writer.close = saved_batches, saved_write, saved_close
        for obj, attr in patched:
            delattr(obj, attr)  # the instance attribute; the class's method shows through again


def breakdown(seconds: dict[str, float], total: float) -> dict[str, float]:
    """The steps of one ``predict_file`` call, each once (transform's own rest apart from its blocks)."""
    out = {"read": seconds.get("read", 0.0)}
    blocks = {k: v for k, v in seconds.items() if k.startswith("transform: ")}
    out.update(blocks)
    out["transform: rest (frame checks, target, context)"] = seconds.get("transform", 0.0) - sum(blocks.values())
    out["forward"] = seconds.get("forward", 0.0)
    out["prediction frame"] = seconds.get("prediction frame", 0.0)
    out["write"] = seconds.get("write", 0.0)
    out["other (loop, summary, id column)"] = total - sum(out.values())
    return out


# ---------------------------------------------------------------- (a), (b)
def set_threads(run: Any, n: int) -> None:
    """``n`` torch threads for everything, the run's forward included (a ``Run`` that sets its
    own threads for the forward has a ``threads`` attribute)."""
    torch.set_num_threads(n)
    if hasattr(run, "threads"):
        run.threads = n


def speed_rounds(run: Any, table: Path, frame: pd.DataFrame, rounds: int, threads: list[int],
                 scratch: Path) -> dict[str, Any]:
    t_encoded = run.transform(frame)  # (b)'s inputs, encoded once
    out_file = scratch / "preds.parquet"
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    parts: dict[str, list[dict[str, float]]] = defaultdict(list)
    parts_cpu: dict[str, list[dict[str, float]]] = defaultdict(list)

    def predict_file(n: int) -> None:
        timers = Timers()
        with instrumented(run, timers):
            w0, c0 = time.perf_counter(), time.process_time()
            summary = run.predict_file(table, out_file, batch_rows=BATCH_ROWS)
            w, c = time.perf_counter() - w0, time.process_time() - c0
        if summary.rows != len(frame):
            raise RuntimeError(f"predict_file read {summary.rows} rows, expected {len(frame)}")
        wall[f"predict_file/{n}"].append(w)
        cpu[f"predict_file/{n}"].append(c)
        parts[f"predict_file/{n}"].append(breakdown(timers.seconds, w))
        parts_cpu[f"predict_file/{n}"].append(breakdown(timers.cpu, c))

    def timed(key: str, fn: Callable[[], Any]) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall[key].append(time.perf_counter() - w0)
        cpu[key].append(time.process_time() - c0)

    steps: list[tuple[int, Callable[[], None]]] = []
    for n in threads:
        steps += [
            (n, lambda n=n: predict_file(n)),
            (n, lambda n=n: timed(f"predict/{n}", lambda: run.predict(frame))),
            (n, lambda n=n: timed(f"transform/{n}", lambda: run.transform(frame))),
            (n, lambda n=n: timed(f"forward/{n}", lambda: run.outputs(t_encoded))),
        ]
    for n in threads:  # warm-up: first calls allocate, import, fill caches
        set_threads(run, n)
        run.predict_file(table, out_file, batch_rows=BATCH_ROWS)
        run.outputs(t_encoded)
    for r in range(rounds):
        for n, step in (steps if r % 2 == 0 else steps[::-1]):
            set_threads(run, n)
            step()
        print(f"round {r + 1}/{rounds} (wall/cpu s): "
              + ", ".join(f"{k} {v[-1]:.3f}/{cpu[k][-1]:.3f}" for k, v in wall.items()), flush=True)
    set_threads(run, 1)
    rows = len(frame)
    result: dict[str, Any] = {"rows": rows, "wall_seconds": dict(wall), "cpu_seconds": dict(cpu), "by_threads": {}}
    kinds = ("predict_file", "predict", "transform", "forward")
    for n in threads:
        med = {k: statistics.median(wall[f"{k}/{n}"]) for k in kinds}
        med_cpu = {k: statistics.median(cpu[f"{k}/{n}"]) for k in kinds}
        rps = {k: rows / v for k, v in med.items()}
        rps_cpu = {k: rows / v for k, v in med_cpu.items()}
        key = f"predict_file/{n}"
        steps_med = {k: statistics.median(p[k] for p in parts[key]) for k in parts[key][0]}
        steps_cpu = {k: statistics.median(p[k] for p in parts_cpu[key]) for k in parts_cpu[key][0]}
        result["by_threads"][str(n)] = {
            "median_wall_seconds": med,
            "median_cpu_seconds": med_cpu,
            "rows_per_s": rps,
            "rows_per_cpu_s": rps_cpu,
            "ratio_predict_file_to_forward": rps["predict_file"] / rps["forward"],
            "ratio_predict_to_forward": rps["predict"] / rps["forward"],
            "ratio_predict_file_to_forward_cpu": rps_cpu["predict_file"] / rps_cpu["forward"],
            "ratio_predict_to_forward_cpu": rps_cpu["predict"] / rps_cpu["forward"],
            "predict_file_breakdown_wall_seconds": steps_med,
            "predict_file_breakdown_cpu_seconds": steps_cpu,
            "predict_file_breakdown_share_wall": {k: v / med["predict_file"] for k, v in steps_med.items()},
        }
    return result


def profile_predict_file(run: Any, table: Path, scratch: Path, top: int = 15) -> list[dict[str, Any]]:
    """The top functions by own time of one ``predict_file`` call at one thread."""
    set_threads(run, 1)
    prof = cProfile.Profile()
    prof.enable()
    run.predict_file(table, scratch / "preds.parquet", batch_rows=BATCH_ROWS)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    entries = stats.stats.items()  # type: ignore[attr-defined]
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries:
        where = file
        for base in (str(ROOT / "src") + os.sep, str(Path(torch.__file__).parents[1]) + os.sep):
            where = where.replace(base, "")
        rows.append({"function": f"{where}:{line}({func})", "ncalls": ncalls, "tottime_s": round(tottime, 4),
                     "cumtime_s": round(cumtime, 4)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


# ---------------------------------------------------------------- (c)
def write_stream_folder(frame: pd.DataFrame, folder: Path, rows: int) -> dict[str, Any]:
    """``rows`` rows (the frame repeated, a ``row_id`` column first) in files of
    ``COPIES_PER_FILE`` copies, written one file at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    per_file = COPIES_PER_FILE * len(frame)
    files = -(-rows // per_file)
    block = pd.concat([frame] * COPIES_PER_FILE, ignore_index=True)
    for f in range(files):
        part = block.copy()
        part.insert(0, "row_id", np.arange(f * per_file, (f + 1) * per_file, dtype=np.int64))
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{f:04d}.parquet",
                       row_group_size=ROW_GROUP)
        del part
    one = pd.read_parquet(folder / "part-0000.parquet")  # as read_table would hold it
    per_file_bytes = int(one.memory_usage(deep=True).sum())
    return {"files": files, "rows": files * per_file, "rows_per_file": per_file, "row_group_rows": ROW_GROUP,
            "disk_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "frame_bytes_per_file": per_file_bytes, "frame_bytes_estimate": per_file_bytes * files,
            "string_dtype": str(one["Review Text"].dtype)}


_CHILD_PRELUDE = """
import json, sys, time
def status(key):  # this process's own value (ru_maxrss would carry the parent's across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024
import torch, pandas, pyarrow, pyarrow.parquet, pyarrow.dataset  # noqa: F401  (imports before 'before')
import mmfuse, mmfuse.cli, mmfuse.runs.predictor, mmfuse.data.table, mmfuse.training.checkpoint  # noqa: F401
"""

_STREAM_CHILD = _CHILD_PRELUDE + """
run_dir, folder, out, batch_rows, threads, reader = sys.argv[1:7]
torch.set_num_threads(int(threads))
if reader == "scanner":  # a pyarrow dataset scanner (its default read-ahead), in this child only
    import pyarrow.dataset as pads

    def iter_parquet(path, *, batch_rows=4096, columns=None):
        for batch in pads.dataset(str(path), format="parquet").scanner(batch_size=batch_rows).to_batches():
            if batch.num_rows:
                yield batch.to_pandas()

    mmfuse.data.table.iter_parquet = iter_parquet
before, rss = status("VmHWM"), status("VmRSS")
t0 = time.perf_counter()
rc = mmfuse.cli.main(["predict", run_dir, "--data", folder, "--out", out, "--batch-rows", batch_rows,
                      "--id", "row_id", "--no-progress"])
wall = time.perf_counter() - t0
print(json.dumps({"rc": rc, "before": before, "rss_before": rss, "peak": status("VmHWM"), "wall_s": wall,
                  "threads": torch.get_num_threads()}))
"""

_WHOLE_CHILD = _CHILD_PRELUDE + """
run_dir, file = sys.argv[1:3]
run = mmfuse.load_run(run_dir)
before = status("VmHWM")
frame = pandas.read_parquet(file)
after_read = status("VmHWM")
t0 = time.perf_counter()
pred = run.predict(frame)
wall = time.perf_counter() - t0
print(json.dumps({"rows": len(pred), "before": before, "after_read": after_read, "peak": status("VmHWM"),
                  "wall_s": wall}))
"""


def child(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stream_peak(run_dir: Path, folder: Path, info: dict[str, Any], scratch: Path, threads: int,
                reader: str = "current") -> dict[str, Any]:
    """``mmfuse predict`` on the folder in a child; its peak RSS, and the output checked."""
    import pyarrow.parquet as pq

    out = scratch / "stream_preds.parquet"
    got = child(_STREAM_CHILD, str(run_dir), str(folder), str(out), str(BATCH_ROWS), str(threads), reader)
    got["reader"] = reader
    ids = pq.read_table(out, columns=["row_id"]).column("row_id").to_numpy()
    got["reader"] = reader
    got["output_rows"] = int(len(ids))
    got["output_in_input_order"] = bool(np.array_equal(ids, np.arange(info["rows"])))
    got["growth"] = got["peak"] - got["before"]
    got["rows_per_s"] = info["rows"] / got["wall_s"]
    got["growth_over_frame_estimate"] = got["growth"] / info["frame_bytes_estimate"]
    out.unlink()
    print(f"stream ({reader}): {json.dumps(got)}", flush=True)
    return got


def whole_peak(run_dir: Path, folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """``run.predict`` on one whole file of the folder in a child; its peak RSS."""
    whole = child(_WHOLE_CHILD, str(run_dir), str(folder / "part-0000.parquet"))
    whole["growth"] = whole["peak"] - whole["before"]
    whole["growth_per_row"] = whole["growth"] / info["rows_per_file"]
    return whole


# ---------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = ["# Prediction speed and memory (`benchmarks/predict_speed.py`)", "",
             f"Machine: {meta['cpus']} CPUs {meta['machine']}, torch {meta['torch']} (default threads "
             f"{meta['default_threads']}), python {meta['python']}, pyarrow {meta['pyarrow']}, pandas "
             f"{meta['pandas']}; load average (1, 5, 15 min) {meta['load_before']} before, {meta['load_after']} "
             f"after. Model: `gated` on reviews (`Recommended IND`, Rating excluded, {meta.get('epochs', 2)} epochs"
             + (f", {meta['train_rows']} rows" if meta.get("train_rows") else "") + "). "
             f"{res['speed']['rows']} rows, {meta['rounds']} rounds, medians. Code: commit "
             f"{meta.get('git', {}).get('head', '?')}"
             + (f" with uncommitted changes to {', '.join(meta['git']['src_uncommitted'])}"
                if meta.get("git", {}).get("src_uncommitted") else "") + ".", "",
             "## Speed: end to end against the bare forward", "",
             "Rows per second of wall-clock time, and (after the slash) per second of this process's CPU time "
             "(all its threads), which other jobs on the machine disturb less.", "",
             "| threads | `predict_file` rows/s | `predict(df)` rows/s | `transform(df)` rows/s | forward rows/s "
             "| predict_file / forward | predict / forward |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in res["speed"]["by_threads"].items():
        rps, cps = r["rows_per_s"], r["rows_per_cpu_s"]
        cells = [f"{rps[k]:,.0f} / {cps[k]:,.0f}" for k in ("predict_file", "predict", "transform", "forward")]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {r['ratio_predict_file_to_forward']:.2f} / "
                     f"{r['ratio_predict_file_to_forward_cpu']:.2f} | {r['ratio_predict_to_forward']:.2f} / "
                     f"{r['ratio_predict_to_forward_cpu']:.2f} |")
    by = res["speed"]["by_threads"]
    lines += ["", "Where the time of one `predict_file` call goes (median per step: wall seconds, share of the "
              "call's wall time, CPU seconds):", "",
              "| step | " + " | ".join(f"{n} thread(s)" for n in by) + " |", "|---|" + "---:|" * len(by)]
    for step in next(iter(by.values()))["predict_file_breakdown_wall_seconds"]:
        cells = [f"{r['predict_file_breakdown_wall_seconds'][step]:.3f} s "
                 f"({r['predict_file_breakdown_share_wall'][step]:.0%}), "
                 f"cpu {r['predict_file_breakdown_cpu_seconds'][step]:.3f} s" for r in by.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    if res.get("profile"):
        lines += ["", "cProfile of one `predict_file` call, one thread (top by own time; cProfile slows "
                  "Python-level code more than C calls):", "",
                  "| function | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
        lines += [f"| `{p['function']}` | {p['ncalls']} | {p['tottime_s']:.3f} | {p['cumtime_s']:.3f} |"
                  for p in res["profile"]]
    if res.get("memory"):
        info, mem = res["stream_data"], res["memory"]
        lines += ["", "## Memory of a streamed prediction", "",
                  f"Folder: {info['rows']:,} rows in {info['files']} files ({info['rows_per_file']:,} rows, row "
                  f"groups of {info['row_group_rows']:,}), {info['disk_bytes'] / MiB:.0f} MiB on disk; as one "
                  f"DataFrame (`memory_usage(deep=True)`, strings as `{info['string_dtype']}`) "
                  f"{info['frame_bytes_estimate'] / MiB:.0f} MiB.", ""]
        for key, what in (("stream", "with `mmfuse.data.table.iter_parquet` as it is"),
                          ("stream_scanner", "with `iter_parquet` replaced by a pyarrow dataset scanner "
                           "(default read-ahead)")):
            if key not in mem:
                continue
            s = mem[key]
            lines.append(
                f"- `mmfuse predict --batch-rows {BATCH_ROWS} --out preds.parquet --id row_id`, {what}, "
                f"{s['threads']} thread(s): peak RSS {s['peak'] / MiB:.0f} MiB, {s['before'] / MiB:.0f} MiB "
                f"after the imports, so growth {s['growth'] / MiB:.0f} MiB = "
                f"{s['growth_over_frame_estimate']:.0%} of the frame; {s['rows_per_s']:,.0f} rows/s; "
                f"output {s['output_rows']:,} rows, in input order: {s['output_in_input_order']}.")
        w = mem["one_file_at_once"]
        lines.append(
            f"- For scale, one file ({info['rows_per_file']:,} rows) predicted at once with `run.predict(df)`: "
            f"peak growth {w['growth'] / MiB:.0f} MiB ({w['growth_per_row']:.0f} bytes per row; the frame "
            f"itself {info['frame_bytes_per_file'] / MiB:.0f} MiB), i.e. about "
            f"{w['growth_per_row'] * info['rows'] / 2**30:.1f} GiB for the whole folder at once.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main
def git_state() -> dict[str, Any]:
    """The commit measured, and the files of src/ that differ from it (uncommitted work)."""
    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "src_uncommitted": [f for f in git("diff", "--name-only", "HEAD", "--", "src").splitlines() if f]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None, help="rows of the speed measurements (default: the table's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default=None,
                   help=f"comma-separated torch thread counts (default: 1 and torch's default, {DEFAULT_THREADS})")
    p.add_argument("--stream-rows", type=int, default=1_000_000, help="rows of the streamed folder (0: skip (c))")
    p.add_argument("--stream-threads", type=int, default=1,
                   help="torch threads of the streamed child (default 1: on a loaded 2-CPU machine more are slower)")
    p.add_argument("--with-scanner", action="store_true",
                   help="(c) also with iter_parquet replaced, in the child, by a pyarrow dataset scanner")
    p.add_argument("--run", type=Path, help="an existing run bundle trained on the reviews (skips training)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--data-root", default=os.environ.get("MMFUSE_DATA") or (
        str(ROOT.parent / "shared" / "data") if (ROOT.parent / "shared" / "data").is_dir() else None))
    p.add_argument("--out", type=Path, help="write OUT (.json) and OUT with .md")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the model trained (default 2)")
    p.add_argument("--train-rows", type=int, default=None, help="train on the first N rows (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="400 rows: trained on them for 1 epoch in this process, one round at one thread, a "
                        "streamed folder of 4,000 rows (a check that the script runs)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.threads, args.stream_rows = 400, 1, "1", 4000
        args.epochs, args.train_rows = 1, 400
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, DEFAULT_THREADS})
    load_before = [round(v, 2) for v in os.getloadavg()]
    import pyarrow

    meta: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "pyarrow": pyarrow.__version__, "pandas": pd.__version__,
        "mmfuse": mmfuse.__version__, "default_threads": DEFAULT_THREADS, "threads": threads,
        "rounds": args.rounds, "batch_rows": BATCH_ROWS, "load_before": load_before,
        "epochs": args.epochs, "train_rows": args.train_rows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    meta["git"] = git_state()
    reviews = pd.read_parquet(reviews_path(args.data_root))
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as tmp:
        scratch = Path(tmp)
        run_dir = args.run
        if run_dir is None:
            train_table = scratch / "reviews.parquet"
            reviews.iloc[:args.train_rows].to_parquet(train_table, index=False)
            run_dir = scratch / "run"
            meta["train_seconds"] = round(train_run(train_table, run_dir, epochs=args.epochs, child=not args.quick), 2)
        torch.set_num_threads(1)
        run = mmfuse.load_run(run_dir)
        meta["model"] = repr(run)
        frame = input_frame(reviews, args.rows or len(reviews))
        table = scratch / "input.parquet"
        frame.to_parquet(table, index=False)
        frame = pd.read_parquet(table)  # the dtypes predict_file's reader gives
        res: dict[str, Any] = {"meta": meta}
        res["speed"] = speed_rounds(run, table, frame, args.rounds, threads, scratch)
        if not args.no_profile:
            res["profile"] = profile_predict_file(run, table, scratch)
        if args.stream_rows > 0:
            folder = scratch / "stream"
            source = frame if args.quick else input_frame(reviews, len(reviews))  # quick: 5 x 400 rows a file
            res["stream_data"] = write_stream_folder(source, folder, args.stream_rows)
            print(f"stream folder: {res['stream_data']}", flush=True)
            res["memory"] = {"stream": stream_peak(run_dir, folder, res["stream_data"], scratch, args.stream_threads)}
            if args.with_scanner:
                res["memory"]["stream_scanner"] = stream_peak(run_dir, folder, res["stream_data"], scratch,
                                                              args.stream_threads, "scanner")
            res["memory"]["one_file_at_once"] = whole_peak(run_dir, folder, res["stream_data"])
    meta["load_after"] = [round(v, 2) for v in os.getloadavg()]
    md = markdown(res)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
