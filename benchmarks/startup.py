"""Start-up times: ``import torch`` against mmfuse's entry points, alternated, in fresh processes.

Each repetition runs every command once, in the same order, each in a new interpreter;
the table reports medians and the difference to ``import torch`` (what mmfuse adds).

    python benchmarks/startup.py --repeats 9 --out benchmarks/results/startup_cpu2
    python benchmarks/startup.py --quick --out /tmp/startup   # `import torch` and `mmfuse --help`, once

``--quick`` starts two fresh interpreters (the base, ``import torch``, and ``mmfuse --help``),
once: a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# the console script installed beside this interpreter (`pip install -e .`)
_MMFUSE = str(Path(sys.executable).with_name("mmfuse"))

CASES = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import mmfuse": [sys.executable, "-c", "import mmfuse"],
    "import mmfuse; build_model, create_fusion": [
        sys.executable, "-c", "import mmfuse; mmfuse.build_model; mmfuse.create_fusion"],
    "mmfuse --help": [_MMFUSE, "--help"],
    "mmfuse list": [_MMFUSE, "list"],
    "mmfuse list --options": [_MMFUSE, "list", "--options"],
}


#: the cases of --quick: the base of the difference column, and one of mmfuse's (without torch)
QUICK_CASES = ("import torch", "mmfuse --help")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true",
                   help=f"one repeat of {' and '.join(QUICK_CASES)} (a check that the script runs)")
    args = p.parse_args(argv)
    cases = CASES
    if args.quick:
        args.repeats, cases = 1, {name: CASES[name] for name in QUICK_CASES}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, cmd in cases.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["import torch"]
    rows = [f"| `{name}` | {m:.3f} | {m - base:+.3f} |" for name, m in med.items()]
    load = os.getloadavg()[0]
    head = {"python": platform.python_version(), "machine": platform.machine(), "repeats": args.repeats,
            "load_1min_at_end": round(load, 2)}
    md = "\n".join([
        "# mmfuse start-up (`benchmarks/startup.py`)", "", json.dumps(head), "",
        "| command | median s | minus `import torch` |", "|---|---:|---:|", *rows, ""])
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": head, "seconds": times}, indent=1))
        args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
