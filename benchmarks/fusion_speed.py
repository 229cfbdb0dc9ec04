"""Speed and peak memory of every registered fusion, and of the attention kernels
against their naive forms.

Shape legend: ``b`` batch, ``t`` tokens per modality, ``d`` features per modality
and output, ``m`` modalities, ``h`` heads.

Usage::

    python benchmarks/fusion_speed.py                 # full shapes: b=64, t=50, d=256
    python benchmarks/fusion_speed.py --quick         # small shapes, seconds
    python benchmarks/fusion_speed.py --out results/fusion_speed   # + .json and .md

For every strategy of :func:`mmfuse.list_fusions` (default options, ``output_dim=d``)
and every setting (``m`` in 2 and 4; vector ``(b, d)`` or sequence ``(b, t, d)``
inputs, each sequence with a random valid length in ``[t/2, t]``) it times one
forward + backward pass in training mode (median over ``--repeats`` after a warm-up
step) and measures its peak memory. A strategy that fails to build or run at a
setting is reported as skipped with the reason; the run goes on.

Naive forms, timed in the same run on the same weights (attention cores only: the
projections and pooling around them are identical, so only the core is compared):

- additive (``cross_attention``): the split score MLP (one broadcast add) against the
  guide's per-position loop (``for i, for j: e_ij = mlp([h_i, h_j])``) and against the
  concatenated-pair MLP on a ``(b, t_q, t_k, 2d)`` tensor;
- multi-head (``multihead_cross_attention``): the fused
  :func:`~torch.nn.functional.scaled_dot_product_attention` kernel against the
  explicit einsum + masked softmax form (the path used when weights are asked for).

Peak memory. On CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the
memory allocated before it (exact for tensors). On CPU torch has no allocator
statistics (and ``tracemalloc`` does not see torch's allocations), so every
measurement runs in a forked child process and reports how far the resident set
grows during one step after a warm-up step: the kernel's peak-RSS mark ``VmHWM`` is
reset (``/proc/self/clear_refs``), the step runs, and the result is ``VmHWM`` minus
the RSS just before it (model, inputs and one-time set-up already resident). It
counts what the step touched, including allocator slack, and is an estimate to
within a few MiB (freed memory the allocator kept from the warm-up is reused without
growing the RSS, so small steps can read near 0). The child also isolates the run:
a strategy that runs out of memory or time is skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mmfuse
from mmfuse.fusions import masked_softmax
from mmfuse.fusions.attention import (
    DEFAULT_ADDITIVE_HIDDEN,
    AdditiveScore,
    MultiheadCrossAttention,
    additive_attend,
)

MODALITIES = ("audio", "image", "text", "video")


@dataclass(frozen=True)
class Shapes:
    batch: int
    tokens: int
    dim: int
    modalities: tuple[int, ...] = (2, 4)
    forms: tuple[str, ...] = ("vector", "sequence")


FULL = Shapes(batch=64, tokens=50, dim=256)
QUICK = Shapes(batch=8, tokens=12, dim=32, modalities=(2,))


@dataclass
class Result:
    """One measurement; ``ms`` is the median forward+backward time."""

    group: str  # "strategy" or "naive"
    name: str
    setting: str
    status: str = "ok"
    reason: str = ""
    ms: float | None = None
    ms_min: float | None = None
    peak_mib: float | None = None
    repeats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ measuring
def _status_bytes(key: str) -> int:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``: its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(step: Callable[[], None], *, device: torch.device, repeats: int, warmup: int) -> tuple[list[float], float]:
    """Run ``step`` ``warmup`` times untimed, then ``repeats`` timed times; the first timed
    step also gives the peak memory (read outside the timed region).

    The first step pays one-time costs (lazy kernel and thread-pool set-up), so with
    ``warmup >= 1`` time and memory come from later steps. Returns the times in ms and the step's peak memory in MiB
    above what was allocated before it.
    """
    for _ in range(warmup):
        step()
    times: list[float] = []
    peak = 0
    for i in range(max(repeats, 1)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if i == 0:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
        elif i == 0:
            _reset_peak_rss()
            before = _status_bytes("VmRSS")
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        if i == 0:
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - before
            else:
                peak = _status_bytes("VmHWM") - before
    return times, max(peak, 0) / 2**20


def train_step(module: nn.Module, forward: Callable[[], Tensor]) -> Callable[[], None]:
    """A step: forward, a scalar loss (mean square of the output), backward, grads cleared."""

    def step() -> None:
        out = forward()
        out.float().square().mean().backward()
        module.zero_grad(set_to_none=True)

    return step


# ---------------------------------------------------------------------- inputs
def make_inputs(shapes: Shapes, m: int, form: str, device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    b, t, d = shapes.batch, shapes.tokens, shapes.dim
    inputs, masks = {}, {}
    for name in MODALITIES[:m]:
        if form == "vector":
            inputs[name] = torch.randn(b, d, generator=g).to(device)
        else:
            inputs[name] = torch.randn(b, t, d, generator=g).to(device)
            lengths = torch.randint(max(1, t // 2), t + 1, (b,), generator=g)
            masks[name] = (torch.arange(t)[None, :] < lengths[:, None]).to(device)
    return inputs, masks


# ------------------------------------------------------------------------ jobs
def strategy_job(name: str, shapes: Shapes, m: int, form: str, device: torch.device, repeats: int) -> Result:
    setting = f"M={m} {form}"
    try:
        torch.manual_seed(0)
        dims = dict.fromkeys(MODALITIES[:m], shapes.dim)
        fusion = mmfuse.create_fusion(name, input_dims=dims, output_dim=shapes.dim).to(device).train()
    except Exception as err:  # a strategy that cannot be built here is skipped, not fatal
        return Result("strategy", name, setting, status="skipped", reason=f"build: {type(err).__name__}: {err}")
    inputs, masks = make_inputs(shapes, m, form, device)
    step = train_step(fusion, lambda: fusion(inputs, masks))
    try:
        times, peak = measure(step, device=device, repeats=repeats, warmup=1)
    except Exception as err:
        return Result("strategy", name, setting, status="skipped", reason=f"run: {type(err).__name__}: {err}")
    params = sum(p.numel() for p in fusion.parameters())
    return Result(
        "strategy", name, setting, ms=statistics.median(times), ms_min=min(times), peak_mib=peak,
        repeats=len(times), extra={"params": params},
    )


def _pair_mlp(scorer: AdditiveScore) -> nn.Sequential:
    """The score MLP as the guide writes it, ``Linear(2d -> d_a) -> tanh -> Linear(d_a -> 1)``,
    with the split layers' weights (``W = [W_a, W_b]``)."""
    hidden, dim = scorer.query.weight.shape
    first = nn.Linear(2 * dim, hidden)
    last = nn.Linear(hidden, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.cat([scorer.query.weight, scorer.key.weight], dim=1))
        first.bias.copy_(scorer.query.bias)
        last.weight.copy_(scorer.score.weight)
    return nn.Sequential(first, nn.Tanh(), last).to(scorer.query.weight.device)


def additive_naive_pairs(mlp: nn.Module, q: Tensor, k: Tensor, k_mask: Tensor) -> Tensor:
    """Scores by the MLP on every concatenated pair: ``(b, t_q, t_k, 2d)`` materialised."""
    t_q, t_k = q.shape[1], k.shape[1]
    pairs = torch.cat(
        [q.unsqueeze(2).expand(-1, -1, t_k, -1), k.unsqueeze(1).expand(-1, t_q, -1, -1)], dim=-1
    )
    weights = masked_softmax(mlp(pairs).squeeze(-1), k_mask.unsqueeze(1))
    return q + weights @ k


def additive_naive_loop(mlp: nn.Module, q: Tensor, k: Tensor, k_mask: Tensor) -> Tensor:
    """The guide's loop: for i, for j: ``e_ij = mlp(cat(h_i, h_j))`` (batch vectorised)."""
    rows = []
    for i in range(q.shape[1]):
        rows.append(torch.cat([mlp(torch.cat([q[:, i], k[:, j]], dim=-1)) for j in range(k.shape[1])], dim=-1))
    weights = masked_softmax(torch.stack(rows, dim=1), k_mask.unsqueeze(1))
    return q + weights @ k


def naive_job(kind: str, shapes: Shapes, m: int, device: torch.device, repeats: int) -> Result:
    """One attention core at ``m`` sequence modalities: queries from one, keys from the rest."""
    setting = f"M={m} sequence"
    torch.manual_seed(0)
    b, t, d = shapes.batch, shapes.tokens, shapes.dim
    t_k = t * (m - 1)
    q = nn.Parameter(torch.randn(b, t, d, device=device))
    k = nn.Parameter(torch.randn(b, t_k, d, device=device))
    lengths = torch.randint(max(1, t // 2), t + 1, (b, m - 1))
    k_mask = (torch.arange(t)[None, None, :] < lengths[..., None]).reshape(b, t_k).to(device)
    leaves = nn.ParameterList([q, k])
    module: nn.Module
    if kind.startswith("additive"):
        scorer = AdditiveScore(d, min(d, DEFAULT_ADDITIVE_HIDDEN)).to(device)  # the strategy's default d_a
        module = nn.ModuleList([scorer, leaves])
        if kind == "additive/split (mmfuse)":
            fn = lambda: additive_attend(scorer, leaves[0], leaves[1], k_mask, add_zero_attn=False)[0]  # noqa: E731
        elif kind == "additive/pair-MLP":
            mlp = _pair_mlp(scorer)
            module = nn.ModuleList([mlp, leaves])
            fn = lambda: additive_naive_pairs(mlp, leaves[0], leaves[1], k_mask)  # noqa: E731
        else:
            mlp = _pair_mlp(scorer)
            module = nn.ModuleList([mlp, leaves])
            fn = lambda: additive_naive_loop(mlp, leaves[0], leaves[1], k_mask)  # noqa: E731
    else:
        core = MultiheadCrossAttention(d, 4).to(device).train()
        module = nn.ModuleList([core, leaves])
        need = kind == "multihead/einsum softmax"
        fn = lambda: core(leaves[0], leaves[1], k_mask, need_weights=need)[0]  # noqa: E731
    step = train_step(module, fn)
    slow = kind == "additive/per-position loop"
    try:
        # the loop takes seconds per step: one step, its one-time set-up costs are negligible
        times, peak = measure(step, device=device, repeats=1 if slow else repeats, warmup=0 if slow else 1)
    except Exception as err:
        return Result("naive", kind, setting, status="skipped", reason=f"run: {type(err).__name__}: {err}")
    return Result("naive", kind, setting, ms=statistics.median(times), ms_min=min(times), peak_mib=peak, repeats=len(times))


def run_isolated(job: Callable[[], Result], *, fork: bool, timeout_s: float, label: tuple[str, str, str]) -> Result:
    """Run ``job`` in a forked child (CPU: separate peak RSS, survives OOM) or in-process."""
    if not fork:
        try:
            return job()
        except Exception as err:
            return Result(*label, status="skipped", reason=f"{type(err).__name__}: {err}")
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(asdict(job()))
        except BaseException as err:  # report anything, including MemoryError
            send.send(asdict(Result(*label, status="skipped", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=2)}")))

    proc = ctx.Process(target=child)
    proc.start()
    if recv.poll(timeout_s):
        out = Result(**recv.recv())
        proc.join()
        return out
    proc.kill()
    proc.join()
    why = f"timed out after {timeout_s:.0f} s" if proc.exitcode in (-9, None) else f"child died (exit code {proc.exitcode})"
    return Result(*label, status="skipped", reason=why)


# ---------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(results: list[Result]) -> str:
    """A markdown table of all results, and the naive/fast ratios (of the best times: the
    least disturbed by other load on the machine)."""
    lines = [
        "| group | name | setting | fwd+bwd ms (median) | best ms | peak MiB | notes |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        note = r.reason.splitlines()[0][:120] if r.status != "ok" else (f"{r.extra['params']:,} params" if "params" in r.extra else "")
        lines.append(
            f"| {r.group} | {r.name} | {r.setting} | {_fmt(r.ms, '.1f')} | {_fmt(r.ms_min, '.1f')} | "
            f"{_fmt(r.peak_mib, '.1f')} | {r.status}{': ' + note if note else ''} |"
        )
    ratios = speedups(results)
    if ratios:
        lines += ["", "| setting | fast form | naive form | naive / fast (best time) | naive / fast (peak memory) |", "|---|---|---|---:|---:|"]
        for row in ratios:
            lines.append(
                f"| {row['setting']} | {row['fast']} | {row['naive']} | {_fmt(row['time_ratio'], '.1f')}x | {_fmt(row['memory_ratio'], '.1f')}{'x' if row['memory_ratio'] else ''} |"
            )
    return "\n".join(lines)


PAIRS = [
    ("additive/split (mmfuse)", "additive/per-position loop"),
    ("additive/split (mmfuse)", "additive/pair-MLP"),
    ("multihead/SDPA (mmfuse)", "multihead/einsum softmax"),
]


def speedups(results: list[Result]) -> list[dict[str, Any]]:
    by_key = {(r.name, r.setting): r for r in results if r.group == "naive" and r.status == "ok"}
    rows = []
    for setting in sorted({r.setting for r in results if r.group == "naive"}):
        for fast, naive in PAIRS:
            a, b = by_key.get((fast, setting)), by_key.get((naive, setting))
            if a is None or b is None or not a.ms_min or b.ms_min is None:
                continue
            mem = b.peak_mib / a.peak_mib if a.peak_mib and b.peak_mib else None
            rows.append(
                {"setting": setting, "fast": fast, "naive": naive, "time_ratio": b.ms_min / a.ms_min, "memory_ratio": mem}
            )
    return rows


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (b=8, t=12, d=32, M=2 only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per measurement, after one warm-up step (default 2)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="strategy names to run (default: all registered; none: naive only)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive attention comparisons")
    parser.add_argument("--loop-max-m", type=int, default=2, help="largest M for the per-position loop (it is slow)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per measurement before it is skipped")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = QUICK if args.quick else FULL
    repeats = args.repeats or 2
    device = torch.device(args.device)
    fork = device.type == "cpu"
    names = mmfuse.list_fusions() if args.only is None else args.only
    print(
        f"fusion_speed: device={device}, threads={torch.get_num_threads()}, b={shapes.batch}, t={shapes.tokens}, "
        f"d={shapes.dim}, repeats={repeats}, strategies={names}",
        flush=True,
    )

    results: list[Result] = []
    started = time.perf_counter()

    def record(r: Result) -> None:
        results.append(r)
        tail = f"{_fmt(r.ms, '9.1f')} ms {_fmt(r.peak_mib, '8.1f')} MiB" if r.status == "ok" else f"SKIPPED: {r.reason.splitlines()[0]}"
        print(f"  {r.group:8s} {r.name:34s} {r.setting:14s} {tail}", flush=True)

    for name in names:
        for m in shapes.modalities:
            for form in shapes.forms:
                job = lambda n=name, m=m, f=form: strategy_job(n, shapes, m, f, device, repeats)  # noqa: E731
                record(run_isolated(job, fork=fork, timeout_s=args.timeout, label=("strategy", name, f"M={m} {form}")))
    if not args.no_naive:
        for m in shapes.modalities:
            kinds = [
                "additive/split (mmfuse)",
                "additive/pair-MLP",
                "multihead/SDPA (mmfuse)",
                "multihead/einsum softmax",
            ]
            if m <= args.loop_max_m:
                kinds.insert(1, "additive/per-position loop")
            for kind in kinds:
                job = lambda k=kind, m=m: naive_job(k, shapes, m, device, repeats)  # noqa: E731
                record(run_isolated(job, fork=fork, timeout_s=args.timeout, label=("naive", kind, f"M={m} sequence")))

    report = table(results)
    print()
    print(report)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "shapes": asdict(shapes),
            "repeats": repeats,
            "memory": "cuda max_memory_allocated delta" if device.type == "cuda" else "forked child: VmHWM - VmRSS over one step after a warm-up",
        }
        payload = {"meta": meta, "results": [asdict(r) for r in results], "speedups": speedups(results)}
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
        header = f"# Fusion speed\n\n{json.dumps(meta)}\n\n"
        args.out.with_suffix(".md").write_text(header + report + "\n")
        print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
