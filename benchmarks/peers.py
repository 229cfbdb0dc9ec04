"""mmfuse strategies against peer implementations of the same job, side by side.

Shape legend: ``b`` batch, ``m`` modalities, ``t`` tokens per modality, ``d`` input
features per modality, ``k`` width inside the fusion, ``o`` output features.

Usage::

    python benchmarks/peers.py                          # b = 64 and 512, CPU, 1 thread
    python benchmarks/peers.py --batch 64 --repeats 30 --only tensor,low_rank
    python benchmarks/peers.py --out benchmarks/results/peers_cpu2   # + .json and .md
    python benchmarks/peers.py --rounds 7 --clock cpu   # median of 7 alternated ratios, CPU time

Each pair is one mmfuse strategy and a peer doing the same job with the same shapes,
parameter count and operations (parameter counts are printed; a pair whose counts
differ says why). Both are timed on one forward + backward pass in training mode
(inputs with ``requires_grad``, gradients reset between steps), the two alternated in
every repetition so that load on a shared machine hits both alike; the result is the
median of each side and their ratio ``mmfuse / peer`` (below 1: mmfuse is faster).
mmfuse is called through its contract (``fusion(inputs)``, a dict, no masks), so the
ratio includes the contract's per-call validation. ``--rounds N`` repeats the
alternated timing N times per pair and reports the median of the N ratios (each
round's ratio is listed); ``--block N`` (default 32) times N consecutive steps per
sample, so work a strategy does once every few training calls (the running-mean
update of ``film`` and ``multihead_cross_attention`` on batches without masks, one in
32) is in every sample rather than hidden by the median; ``--clock cpu`` times with the thread's CPU time, which on a
machine shared with other work leaves out the time spent waiting for a core.

Peers:

- TorchMultimodal (``pip install --no-deps torchmultimodal-nightly``): its
  ``ConcatFusionModule`` + the same MLP against ``early``; its
  ``AttentionFusionModule`` against ``gated(gate="scalar", unit="gmu")`` (same
  softmax gate over modalities from the raw inputs; mmfuse also applies ``tanh`` to
  the projections, GMU's ``h_i = tanh(W_i x_i)``; a second pair adds that ``tanh`` to
  the peer's projections, the same job, same parameters). The two files are loaded by path:
  the package's ``__init__`` needs ``iopath``, which these modules do not use.
- fusilli and pytorch-widedeep: not installed here (pytorch-widedeep pulls
  torchvision, spaCy and another numpy; fusilli resolves only to 0.0.5); skipped with
  a message when absent.
- bare ``nn.MultiheadAttention`` and
  :func:`torch.nn.functional.scaled_dot_product_attention` against
  ``multihead_cross_attention`` (query tokens attend to the other modalities' tokens,
  zero attention slot, residual, LayerNorm, mean pool, output map).
- plain transcriptions of the published equations, written below: TFN (Zadeh et
  al., 2017) against ``tensor``, LMF (Liu et al., 2018) against ``low_rank``, GMU
  (Arevalo et al., 2017) against ``gated(unit="gmu")``, FiLM (Perez et al., 2018)
  against ``film``, per-modality MLPs averaged against ``late``, and MulT (Tsai et
  al., 2019; cross-modal pre-norm blocks per ordered pair, self-attention over the
  concatenated streams) against ``cross_modal_transformer``.

Threads are pinned to 1 (``torch.set_num_threads(1)``): the small modules here gain
nothing from intra-op threads on a shared CPU and lose much to their contention.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mmfuse

M = 3  # modalities
D = 32  # input width of every modality
OUT = 32  # output width
T = 16  # tokens per modality (sequence pairs)
NAMES = ("a", "b", "c")


# ------------------------------------------------------------------------ peers
class ConcatMlp(nn.Module):
    """TorchMultimodal's ConcatFusionModule, then the MLP ``early`` builds."""

    def __init__(self, concat: nn.Module, hidden: int) -> None:
        super().__init__()
        self.concat = concat
        self.mlp = nn.Sequential(nn.Linear(M * D, hidden), nn.GELU(), nn.Linear(hidden, OUT))

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.concat(x))


class LateMean(nn.Module):
    """``h = (1/m) sum_i Mlp_i(x_i)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            [nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, OUT)) for _ in range(M)]
        )

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return torch.stack([mlp(x[n]) for mlp, n in zip(self.mlps, NAMES, strict=True)], dim=1).mean(dim=1)


class GMU(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., 2017), two modalities, with biases:
    ``h_i = tanh(W_i x_i)``, ``z = sigmoid(W_z [x_1, x_2])``, ``h = z h_1 + (1 - z) h_2``."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(D, OUT), nn.Linear(D, OUT)
        self.wz = nn.Linear(2 * D, OUT)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        h1, h2 = torch.tanh(self.w1(x["a"])), torch.tanh(self.w2(x["b"]))
        z = torch.sigmoid(self.wz(torch.cat([x["a"], x["b"]], dim=-1)))
        return z * h1 + (1 - z) * h2


class TFN(nn.Module):
    """Tensor Fusion Network (Zadeh et al., 2017): ``z_i = [W_i x_i + b_i; 1]``,
    ``out = W vec(z_1 (x) z_2 (x) z_3) + b``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(D, k) for _ in range(M)])
        self.out = nn.Linear((k + 1) ** M, OUT)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        z: Tensor | None = None
        for proj, n in zip(self.proj, NAMES, strict=True):
            h = proj(x[n])
            h = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)
            z = h if z is None else torch.einsum("bi,bj->bij", z, h).flatten(1)
        assert z is not None
        return self.out(z)


class LMF(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al., 2018), the release's form:
    ``out = sum_r prod_i ([h_i; 1] W_i^(r)) + b`` with ``W_i`` of shape ``(r, k+1, o)``."""

    def __init__(self, k: int, rank: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(D, k) for _ in range(M)])
        self.factors = nn.ParameterList([nn.Parameter(torch.randn(rank, k + 1, OUT) * 0.1) for _ in range(M)])
        self.bias = nn.Parameter(torch.zeros(OUT))

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        prod: Tensor | None = None
        for proj, w, n in zip(self.proj, self.factors, NAMES, strict=True):
            h = proj(x[n])
            h = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)
            term = torch.matmul(h, w)  # (r, b, o)
            prod = term if prod is None else prod * term
        assert prod is not None
        return prod.sum(dim=0) + self.bias


class FiLMChain(nn.Module):
    """FiLM (Perez et al., 2018) as a chain a -> b -> c: ``s_1 = h_a``,
    ``s_j = gamma_j(s_{j-1}) * h_j + beta_j(s_{j-1})``, ``out = W s_3``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(D, k) for _ in range(M)])
        self.gamma = nn.ModuleList([nn.Linear(k, k) for _ in range(M - 1)])
        self.beta = nn.ModuleList([nn.Linear(k, k) for _ in range(M - 1)])
        self.out = nn.Linear(k, OUT)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        h = [p(x[n]) for p, n in zip(self.proj, NAMES, strict=True)]
        s = h[0]
        for j in range(1, M):
            s = self.gamma[j - 1](s) * h[j] + self.beta[j - 1](s)
        return self.out(s)


class AttentionPool(nn.Module):
    """Query modality ``a`` attends to ``b`` and ``c``: ``y = LN(q + MHA(q, c, c))`` with a
    zero key/value slot, mean over query tokens, ``W_out``; ``core`` is
    ``nn.MultiheadAttention`` or the same projections around the SDPA kernel."""

    def __init__(self, k: int, heads: int, core: str) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(D, k) for _ in range(M)])
        self.core, self.heads = core, heads
        self.mha = nn.MultiheadAttention(k, heads, batch_first=True, add_zero_attn=True)
        self.norm = nn.LayerNorm(k)
        self.out = nn.Linear(k, OUT)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        q = self.proj[0](x["a"])
        ctx = torch.cat([self.proj[1](x["b"]), self.proj[2](x["c"])], dim=1)
        if self.core == "mha":
            a, _ = self.mha(q, ctx, ctx, need_weights=False)
        else:
            a = self._sdpa(q, ctx)
        return self.out(self.norm(q + a).mean(dim=1))

    def _sdpa(self, q: Tensor, ctx: Tensor) -> Tensor:
        b, tq, k = q.shape
        h = self.heads
        wq, wk, wv = self.mha.in_proj_weight.chunk(3)
        bq, bk, bv = self.mha.in_proj_bias.chunk(3)
        qh = F.linear(q, wq, bq).view(b, tq, h, k // h).transpose(1, 2)
        kh = F.linear(ctx, wk, bk)
        vh = F.linear(ctx, wv, bv)
        kh = torch.cat([kh, kh.new_zeros(b, 1, k)], dim=1).view(b, -1, h, k // h).transpose(1, 2)
        vh = torch.cat([vh, vh.new_zeros(b, 1, k)], dim=1).view(b, -1, h, k // h).transpose(1, 2)
        a = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(b, tq, k)
        return self.mha.out_proj(a)


class PreNormBlock(nn.Module):
    """``z <- z + MHA(LN(z), LN(c), LN(c))``; ``z <- z + FFN(LN(z))`` (MulT's block, pre-norm)."""

    def __init__(self, k: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.ln1, self.ln_kv = nn.LayerNorm(k), (nn.LayerNorm(k) if cross else None)
        self.attn = nn.MultiheadAttention(k, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(k)
        self.ffn = nn.Sequential(nn.Linear(k, 4 * k), nn.GELU(), nn.Linear(4 * k, k))

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        q = self.ln1(z)
        kv = q if self.ln_kv is None or c is None else self.ln_kv(c)
        z = z + self.attn(q, kv, kv, need_weights=False)[0]
        return z + self.ffn(self.ln2(z))


class MulT(nn.Module):
    """MulT (Tsai et al., 2019) in the layout of ``cross_modal_transformer``: per target
    ``i`` and source ``j != i`` a stream of ``L`` cross-modal blocks from ``x_i`` with
    keys ``x_j``; the target's streams concatenated, ``S`` self-attention blocks,
    LayerNorm, mean over tokens; targets concatenated, ``W_out``."""

    def __init__(self, k: int, heads: int, layers: int, self_layers: int) -> None:
        super().__init__()
        s = (M - 1) * k
        self.proj = nn.ModuleList([nn.Linear(D, k) for _ in range(M)])
        self.streams = nn.ModuleList(
            [
                nn.ModuleList(
                    [nn.ModuleList([PreNormBlock(k, heads, True) for _ in range(layers)]) for _ in range(M - 1)]
                )
                for _ in range(M)
            ]
        )
        self.selfs = nn.ModuleList(
            [nn.ModuleList([PreNormBlock(s, heads, False) for _ in range(self_layers)]) for _ in range(M)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(s) for _ in range(M)])
        self.out = nn.Linear(M * s, OUT)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        xs = [p(x[n]) for p, n in zip(self.proj, NAMES, strict=True)]
        outs = []
        for i in range(M):
            sources = [j for j in range(M) if j != i]
            streams = []
            for stream, j in zip(self.streams[i], sources, strict=True):
                z = xs[i]
                for block in stream:
                    z = block(z, xs[j])
                streams.append(z)
            z = torch.cat(streams, dim=-1)
            for block in self.selfs[i]:
                z = block(z)
            outs.append(self.norms[i](z).mean(dim=1))
        return self.out(torch.cat(outs, dim=-1))


# ------------------------------------------------------------------- the pairs
@dataclass
class Pair:
    name: str
    strategy: str
    options: dict[str, Any]
    peer: str
    build_peer: Callable[[], nn.Module] | None
    form: str  # "vector" or "sequence"
    m: int = M
    note: str = ""
    skip: str = ""


def _load_tmm(module: str) -> Any:
    """A TorchMultimodal module file loaded by path (its package ``__init__`` needs iopath)."""
    spec = importlib.util.find_spec("torchmultimodal")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "modules" / "fusions" / f"{module}.py"
    file_spec = importlib.util.spec_from_file_location(f"_tmm_{module}", path)
    if file_spec is None or file_spec.loader is None or not path.exists():
        return None
    mod = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(mod)
    return mod


def _with_tanh(module: nn.Module) -> nn.Module:
    """TorchMultimodal's AttentionFusionModule with ``tanh`` after each projection (same
    parameters): the job of ``gated(gate="scalar", unit="gmu")``."""
    for key in list(module.encoding_projection):
        module.encoding_projection[key] = nn.Sequential(module.encoding_projection[key], nn.Tanh())
    return module


def pairs() -> list[Pair]:
    concat = _load_tmm("concat_fusion")
    attention = _load_tmm("attention_fusion")
    no_tmm = "torchmultimodal-nightly not installed (pip install --no-deps torchmultimodal-nightly)"
    hidden = mmfuse.fusions.fusion_class("early").default("hidden_dims")[0]
    out = [
        Pair(
            "early vs TMM ConcatFusionModule + MLP", "early", {"presence_features": False},
            "torchmultimodal ConcatFusionModule",
            (lambda: ConcatMlp(concat.ConcatFusionModule(), hidden)) if concat else None, "vector",
            skip="" if concat else no_tmm,
        ),
        Pair(
            "gated(scalar, gmu) vs TMM AttentionFusionModule", "gated", {"gate": "scalar", "unit": "gmu"},
            "torchmultimodal AttentionFusionModule",
            (lambda: attention.AttentionFusionModule(dict.fromkeys(NAMES, D), OUT)) if attention else None,
            "vector", note="mmfuse also applies tanh to the projections (GMU)",
            skip="" if attention else no_tmm,
        ),
        Pair(
            "gated(scalar, gmu) vs TMM AttentionFusionModule + tanh", "gated", {"gate": "scalar", "unit": "gmu"},
            "torchmultimodal AttentionFusionModule, tanh after each projection",
            (lambda: _with_tanh(attention.AttentionFusionModule(dict.fromkeys(NAMES, D), OUT))) if attention else None,
            "vector", note="the same job: the peer's projections followed by tanh, as GMU's h_i = tanh(W_i x_i)",
            skip="" if attention else no_tmm,
        ),
        Pair("gated(gmu) vs GMU", "gated", {"unit": "gmu"}, "GMU transcription", GMU, "vector", m=2),
        Pair("late vs mean of MLPs", "late", {}, "per-modality MLPs averaged", lambda: LateMean(hidden), "vector"),
        Pair("tensor vs TFN", "tensor", {}, "TFN transcription", lambda: TFN(16), "vector"),
        Pair("low_rank vs LMF", "low_rank", {}, "LMF transcription", lambda: LMF(16, 4), "vector"),
        Pair("film vs FiLM chain", "film", {}, "FiLM transcription", lambda: FiLMChain(64), "vector"),
        Pair(
            "multihead_cross_attention vs nn.MultiheadAttention", "multihead_cross_attention", {"dim": OUT},
            "nn.MultiheadAttention", lambda: AttentionPool(OUT, 4, "mha"), "sequence",
        ),
        Pair(
            "multihead_cross_attention vs SDPA", "multihead_cross_attention", {"dim": OUT},
            "F.scaled_dot_product_attention", lambda: AttentionPool(OUT, 4, "sdpa"), "sequence",
        ),
        Pair(
            "cross_modal_transformer vs MulT", "cross_modal_transformer", {},
            "MulT transcription", lambda: MulT(32, 4, 2, 1), "sequence",
        ),
    ]
    for pkg in ("fusilli", "pytorch_widedeep"):
        if importlib.util.find_spec(pkg) is None:
            out.append(Pair(f"{pkg}", "", {}, pkg, None, "vector", skip=f"{pkg} not installed"))
    return out


# ---------------------------------------------------------------------- timing
def make_inputs(b: int, m: int, form: str, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (b, T, D) if form == "sequence" else (b, D)
    return {n: torch.randn(*shape, generator=g).requires_grad_(True) for n in NAMES[:m]}


def step_fn(module: nn.Module, inputs: dict[str, Tensor]) -> Callable[[], None]:
    params = [p for p in module.parameters()]

    def step() -> None:
        for p in params:
            p.grad = None
        for x in inputs.values():
            x.grad = None
        out = module(inputs)
        out.sum().backward()

    return step


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_pair(
    a: Callable[[], None], b: Callable[[], None], repeats: int, warmup: int, clock: Callable[[], float] = time.perf_counter,
    block: int = 1,
) -> tuple[list[float], list[float]]:
    """Alternate ``a`` and ``b`` (which goes first also alternates); seconds per call,
    each sample the mean over ``block`` consecutive calls.

    ``clock``: ``time.perf_counter`` (wall) or ``time.thread_time`` (this thread's CPU
    time, which leaves out the time the thread waits for a core on a busy machine)."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        for fn, sink in order:
            start = clock()
            for _ in range(block):
                fn()
            sink.append((clock() - start) / block)
    return ta, tb


@dataclass
class Row:
    pair: str
    batch: int
    mmfuse_ms: float | None
    peer_ms: float | None
    ratio: float | None
    mmfuse_params: int | None
    peer_params: int | None
    peer: str
    note: str
    #: the ratio of each round (``ratio`` is their median); one round: ``[ratio]``
    round_ratios: list[float] | None = None


def run_pair(
    pair: Pair, b: int, repeats: int, warmup: int, rounds: int = 1, clock: str = "wall", block: int = 1
) -> Row:
    if pair.skip or pair.build_peer is None:
        print(f"skip {pair.name}: {pair.skip}", file=sys.stderr)
        return Row(pair.name, b, None, None, None, None, None, pair.peer, f"skipped: {pair.skip}")
    torch.manual_seed(0)
    fusion = mmfuse.create_fusion(
        pair.strategy, input_dims=dict.fromkeys(NAMES[: pair.m], D), output_dim=OUT, **pair.options
    ).train()
    peer = pair.build_peer().train()
    inputs = make_inputs(b, pair.m, pair.form)
    peer_inputs = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    a, p = step_fn(fusion, inputs), step_fn(peer, peer_inputs)
    medians = []
    for _ in range(rounds):  # each round: its own alternated timing and its own ratio
        ta, tb = time_pair(a, p, repeats, warmup, CLOCKS[clock], block)
        medians.append((statistics.median(ta), statistics.median(tb)))
    ratios = [ma / mb for ma, mb in medians]
    ma = statistics.median(m for m, _ in medians)
    mb = statistics.median(m for _, m in medians)
    pa, pb = sum(p.numel() for p in fusion.parameters()), sum(p.numel() for p in peer.parameters())
    note = pair.note
    if pa != pb and not note:
        note = "parameter counts differ"
    return Row(pair.name, b, ma * 1e3, mb * 1e3, statistics.median(ratios), pa, pb, pair.peer, note,
               [round(r, 4) for r in ratios])


def table(rows: list[Row]) -> str:
    lines = [
        "| pair | b | mmfuse ms | peer ms | ratio | ratio per round | mmfuse params | peer params | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.ratio is None:
            lines.append(f"| {r.pair} | {r.batch} | - | - | - | - | - | - | {r.note} |")
            continue
        per_round = " ".join(f"{v:.3f}" for v in r.round_ratios or [r.ratio])
        lines.append(
            f"| {r.pair} | {r.batch} | {r.mmfuse_ms:.3f} | {r.peer_ms:.3f} | {r.ratio:.3f} | {per_round} | "
            f"{r.mmfuse_params:,} | {r.peer_params:,} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=str, default="64,512", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternated timings per pair; the ratio reported is the median of the rounds' ratios")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: perf_counter; cpu: the thread's CPU time (less noise on a shared machine)")
    parser.add_argument("--block", type=int, default=32,
                        help="consecutive steps per timed sample (their mean): work done every few training "
                             "calls (the running-mean update of film and multi-head, one call in 32) is in every sample")
    parser.add_argument("--only", type=str, default="", help="comma-separated strategy names")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, 2 repeats of blocks of 2, every pair (a check that the script runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.warmup, args.rounds, args.block = "8", 2, 1, 1, 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    only = {s for s in args.only.split(",") if s}
    rows: list[Row] = []
    for b in (int(x) for x in args.batch.split(",")):
        for pair in pairs():
            if only and pair.strategy not in only:
                continue
            row = run_pair(pair, b, args.repeats, args.warmup, args.rounds, args.clock, args.block)
            rows.append(row)
            if row.ratio is not None:
                print(f"b={b:4d} {row.pair:55s} {row.mmfuse_ms:8.3f} ms vs {row.peer_ms:8.3f} ms  ratio {row.ratio:.3f}")
    md = table(rows)
    print(md)
    if args.out is not None:
        from mmfuse.io import atomic_write

        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": args.threads,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "clock": args.clock,
            "block": args.block,
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()],
            "shapes": {"m": M, "d": D, "o": OUT, "t": T},
        }
        atomic_write(args.out.with_suffix(".json"), json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
        atomic_write(args.out.with_suffix(".md"), f"# mmfuse against peers\n\n{json.dumps(meta)}\n\n{md}\n")
        print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
