"""Rows per second of one trained model: eager ``run.predict`` against ``mmfuse serve``.

The model: a ``gated`` fusion of a text and a tabular modality (a numeric and a
categorical column), trained for 2 epochs on a synthetic 300-row table (the test
suite's run; ``--run PATH`` takes another). The rows: 2,048 new ones of the same table.

- eager: ``run.predict(frame)`` in this process, on the whole table at once, 64 rows a
  call and 1 row a call;
- served: ``mmfuse serve RUN --port 0 --threads T`` in a subprocess (so the client does
  not share its interpreter), and one client (httpx, keep-alive) posting one row per
  request (batch 1) or 64 rows per request (batch 64), sequentially; then 8 client
  threads posting 1 row per request at once, where the server's batcher coalesces them.

Each case runs for at most ``--seconds`` (and at most the rows of the table a pass),
``--repeats`` times; the table reports the median rows/s. The server is stopped in a
``finally``. On a shared machine the load average (recorded) moves these numbers a
lot: compare cases of one run, not runs.

    python benchmarks/serve_speed.py --out benchmarks/results/serve_speed_cpu2
    python benchmarks/serve_speed.py --quick --out /tmp/serve   # 64 rows, 0.2 s a case, once: seconds

``--quick`` runs every case (the server on 127.0.0.1, a free port, stopped at the end)
on 64 rows for at most 0.2 s each, once, after a 1-epoch training: a check that the
script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

NOTES = """How to read it: rows/s is wall time on a machine shared with other jobs (the load
average is recorded), so it moves between runs; the CPU columns (user + system time per row
of this process and of the server process) move less. A served request costs the server
about the eager call for its rows plus a few ms (HTTP, JSON, the asyncio hop to the model
thread), so rows per request decide the rate: 1 row a request is bounded by the per-call
overhead of predict itself, 64 rows a request mostly by predict's own work. With 8 client threads in one
Python process on 2 cores the client (httpx under the GIL) is the bottleneck, not the
server: its CPU per request is the largest column; the server's falls as the batcher
coalesces requests (requests per model call)."""
WORDS = ["great", "lovely", "poor", "thin", "soft", "small", "fit", "colour", "fabric", "seams"]


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"review": [" ".join(rng.choice(WORDS, 5)) for _ in range(n)],
                       "age": rng.integers(18, 70, n).astype(float), "size": rng.choice(["S", "M", "L"], n)})
    df["y"] = (df["review"].str.contains("great|lovely") ^ (df["size"] == "L")).astype(int)
    return df


def _train(folder: Path, epochs: int = 2) -> Path:
    from mmfuse.cli import main

    _table(300, 0).to_csv(folder / "train.csv", index=False)
    out = folder / "run"
    code = main(["train", "--data", str(folder / "train.csv"), "--target", "y", "--fusion", "gated", "--out",
                 str(out), f"epochs={epochs}", "hidden_dim=16", "threads=1"])
    if code != 0:
        raise SystemExit(f"training failed ({code})")
    return out


def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of this process (None) or of process ``pid`` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rate(step: Callable[[int], int], total: int, seconds: float, repeats: int, server: int | None = None) -> dict:
    """Rows/s of ``step(i) -> rows done`` called for i = 0, 1, ... until ``total`` rows or ``seconds``;
    and CPU ms per row, of this process and of the ``server`` process: less moved by the load of
    other jobs than the wall time."""
    rates, cpu, cpu_server = [], [], []
    for _ in range(repeats):
        done, i, t0 = 0, 0, time.perf_counter()
        c0, s0 = _cpu_seconds(None), _cpu_seconds(server) if server else 0.0
        while done < total and time.perf_counter() - t0 < seconds:
            done += step(i)
            i += 1
        rates.append(done / (time.perf_counter() - t0))
        cpu.append(1000 * (_cpu_seconds(None) - c0) / max(done, 1))
        if server:
            cpu_server.append(1000 * (_cpu_seconds(server) - s0) / max(done, 1))
    out = {"rows_per_s": statistics.median(rates), "runs": [round(r, 1) for r in rates],
           "cpu_ms_per_row_here": round(statistics.median(cpu), 3)}
    if server:
        out["cpu_ms_per_row_server"] = round(statistics.median(cpu_server), 3)
    return out


def _start_server(run: Path, threads: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse.cli", "serve", str(run), "--host", "127.0.0.1", "--port",
                             "0", "--threads", str(threads), "--max-wait-ms", str(max_wait_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(s) for s in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("listening on "):
            return proc, line.split()[2]
    proc.kill()
    raise SystemExit(f"mmfuse serve did not start: {''.join(seen)}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a run bundle (default: train the small one)")
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1, help="torch threads, eager and served (default 1)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="the server's --max-wait-ms (default 2)")
    p.add_argument("--seconds", type=float, default=8.0, help="most seconds per repeat of a case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true",
                   help="1-epoch training, 64 rows, at most 0.2 s a case, once (a check that the script runs)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.seconds, args.repeats = 64, 0.2, 1

    import httpx
    import torch

    import mmfuse

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="serve-speed-")
    run_path = args.run or _train(Path(tmp.name), epochs=1 if args.quick else 2)
    run = mmfuse.load_run(run_path, threads=args.threads)
    frame = _table(args.rows, 1).drop(columns=["y"])
    rows = json.loads(frame.to_json(orient="records"))
    n = len(frame)
    results: dict[str, dict] = {}

    run.predict(frame.iloc[:64])  # warm-up
    results["eager run.predict, all rows in one call"] = _rate(lambda i: len(run.predict(frame)), n,
                                                                args.seconds, args.repeats)
    results["eager run.predict, 64 rows a call"] = _rate(
        lambda i: len(run.predict(frame.iloc[(i * 64) % n:(i * 64) % n + 64])), n, args.seconds, args.repeats)
    results["eager run.predict, 1 row a call"] = _rate(
        lambda i: len(run.predict(frame.iloc[i % n:i % n + 1])), n, args.seconds, args.repeats)

    proc, url = _start_server(run_path, args.threads, args.max_wait_ms)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            def post(chunk: list[dict]) -> int:
                r = client.post("/predict", json={"rows": chunk})
                r.raise_for_status()
                return len(r.json()["predictions"])

            post(rows[:64])  # warm-up
            results["served, batch 1 (1 row a request, sequential)"] = _rate(
                lambda i: post(rows[i % n:i % n + 1]), n, args.seconds, args.repeats, proc.pid)
            results["served, batch 64 (64 rows a request, sequential)"] = _rate(
                lambda i: post(rows[(i * 64) % n:(i * 64) % n + 64]), n, args.seconds, args.repeats, proc.pid)
            before = client.get("/health").json()["served"]

        def concurrent(_: int) -> int:
            """8 client threads, 1 row a request, for 1/4 of --seconds: rows done."""
            counts = [0] * 8
            stop = time.perf_counter() + args.seconds / 4

            def worker(k: int) -> None:
                with httpx.Client(base_url=url, timeout=60) as c:
                    j = k
                    # at least one request each: a client slower to connect than the deadline still counts
                    while counts[k] == 0 or (time.perf_counter() < stop and counts[k] < n // 8):
                        c.post("/predict", json={"rows": rows[j % n:j % n + 1]}).raise_for_status()
                        counts[k] += 1
                        j += 8

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 60)
            return sum(counts)

        results["served, batch 1 from 8 concurrent clients"] = _rate(concurrent, 1, args.seconds, args.repeats,
                                                                         proc.pid)
        with httpx.Client(base_url=url, timeout=60) as client:
            after = client.get("/health").json()["served"]
        calls, reqs = after["model_calls"] - before["model_calls"], after["requests"] - before["requests"]
        results["served, batch 1 from 8 concurrent clients"]["requests_per_model_call"] = round(reqs / max(calls, 1), 2)
    finally:
        _stop(proc)
        tmp.cleanup()

    head = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": args.threads, "server_max_wait_ms": args.max_wait_ms, "server_max_batch_rows": 256,
            "rows": n, "seconds": args.seconds, "repeats": args.repeats, "model": run.label,
            "modalities": list(run.modalities), "load_1min_at_start": round(load_start, 2),
            "load_1min_at_end": round(os.getloadavg()[0], 2)}
    def cell(r: dict, key: str) -> str:
        return f"{r[key]}" if key in r else ""

    lines = [f"| {name} | {r['rows_per_s']:.0f} | {', '.join(map(str, r['runs']))} | "
             f"{cell(r, 'cpu_ms_per_row_here')} | {cell(r, 'cpu_ms_per_row_server')} | "
             f"{cell(r, 'requests_per_model_call')} |" for name, r in results.items()]
    md = "\n".join(["# Eager predict against `mmfuse serve` (`benchmarks/serve_speed.py`)", "",
                    json.dumps(head), "",
                    "| case | median rows/s | each repeat | CPU ms/row, this process (client) | "
                    "CPU ms/row, server | requests per model call |", "|---|---:|---|---:|---:|---:|",
                    *lines, "", NOTES])
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": head, "results": results}, indent=1))
        args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
