"""The ``mmfuse`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered fusion strategies and their options")
    p.add_argument("--options", action="store_true", help="also show each strategy's keyword options")
    p.set_defaults(func=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    import textwrap

    from mmfuse.fusions import fusion_class, list_fusions
    from mmfuse.fusions._options import option_help

    for name in list_fusions():
        cls = fusion_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:28s} {doc[0] if doc else ''}")
        if args.options:
            for opt in option_help(cls):
                print(f"    {opt.name} = {opt.default!r}")
                if opt.allowed:
                    print(f"        allowed: {opt.allowed}")
                if opt.meaning:
                    print(textwrap.fill(opt.meaning, width=96, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="train and compare every fusion strategy side by side",
        description="Train every strategy (and the unimodal baselines) over several seeds, measure accuracy, "
        "cost and robustness, and write results (JSON, CSV), plots and an HTML report. Re-running into the "
        "same --out folder skips finished runs. Flags override the --config YAML file.",
    )
    p.add_argument("--config", help="YAML file of settings (keys as in mmfuse.bench.BenchConfig)")
    p.add_argument("--dataset", help="avdigits, mfeat, reviews, synthetic or all; comma-separated for several "
                   "(default: synthetic)")
    p.add_argument("--fusions", help="comma-separated strategy names (default: every registered one)")
    p.add_argument("--seeds", type=int, help="seeds of standard training (default 3)")
    p.add_argument("--epochs", type=int, help="maximum epochs per run")
    p.add_argument("--modality-dropout", type=float, help="rate of the modality-dropout training variant (0: off)")
    p.add_argument("--dropout-seeds", type=int, help="seeds of the modality-dropout variant (default 1)")
    p.add_argument("--noise-scales", help="comma-separated test-time noise scales (default 0,0.5,1,2)")
    p.add_argument("--no-unimodal", action="store_true", help="skip the unimodal baselines")
    p.add_argument("--jobs", type=int, help="runs at the same time (default 2)")
    p.add_argument("--executor", choices=["local", "serial", "ray"], help="where runs execute (default local)")
    p.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--out", help="results folder (default bench-out)")
    p.add_argument("--data-root", help="folder of the real datasets (default: $MMFUSE_DATA or the cache)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots (the report still has them)")
    p.add_argument("--no-report", action="store_true", help="write no HTML report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from mmfuse.bench import load_config, run_bench

    def csv_list(value: str | None) -> list[str] | None:
        return None if value is None else [v.strip() for v in value.split(",") if v.strip()]

    scales = csv_list(args.noise_scales)
    config = load_config(
        args.config,
        datasets=csv_list(args.dataset),
        fusions=csv_list(args.fusions),
        seeds=args.seeds,
        epochs=args.epochs,
        modality_dropout=args.modality_dropout,
        dropout_seeds=args.dropout_seeds,
        noise_scales=None if scales is None else [float(s) for s in scales],
        unimodal=False if args.no_unimodal else None,
        jobs=args.jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        out=args.out,
        data_root=args.data_root,
        plots=False if args.no_plots else None,
        report=False if args.no_report else None,
    )
    outcome = run_bench(config, progress=not args.no_progress, argv=sys.argv)
    return 1 if outcome.failed else 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (a fusion, or a unimodal baseline) on one dataset",
        description="Train with early stopping on validation, print val/test metrics and write a checkpoint "
        "(safetensors + JSON config) to --out. Settings are key=value: TrainConfig fields (epochs=5 lr=3e-4 "
        "accelerator=gpu devices=2 strategy=ddp precision=bf16-mixed), model options (hidden_dim=32), "
        "data.<option> (data.task=synergy), fusion.<option> (fusion.gate=feature) and "
        "encoder.<modality>.<option>; they override the --config YAML file.",
    )
    p.add_argument("--dataset", help="dataset name (synthetic, avdigits, mfeat, reviews)")
    p.add_argument("--fusion", help="fusion strategy (default gated; see `mmfuse list`)")
    p.add_argument("--unimodal", metavar="MODALITY", help="train the single-modality baseline instead of a fusion")
    p.add_argument("--config", help="YAML file of settings (same keys as the key=value overrides)")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<fusion>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--data-root", help="folder of the real datasets (default: $MMFUSE_DATA or the cache)")
    p.add_argument("settings", nargs="*", metavar="key=value", help="settings overrides")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from mmfuse.errors import ConfigError
    from mmfuse.training.settings import default_out_dir, resolve_settings, run_training

    settings = resolve_settings(
        args.dataset, args.fusion, args.settings, config_file=args.config, unimodal=args.unimodal
    )
    if args.resume and not args.out:
        raise ConfigError("--resume: expected --out naming the run folder to continue")
    out = args.out or default_out_dir(settings)
    outcome = run_training(settings, out, resume=args.resume, root=args.data_root)
    if not outcome["result"].is_global_zero:
        return 0  # another process of a multi-process (DDP) run: rank 0 reports
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{settings.dataset} / {settings.label}")
    for col in ("split", "accuracy", "macro_f1", "auroc", "n"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in ("val", "test"):
        m = outcome[split]
        auroc = f"{m['auroc']:.4f}" if "auroc" in m else "-"
        table.add_row(split, f"{m.get('accuracy', float('nan')):.4f}", f"{m.get('macro_f1', float('nan')):.4f}",
                      auroc, str(m.get("n", 0)))
    console = Console()
    console.print(table)
    result = outcome["result"]
    console.print(f"epochs: {result.epochs_run} (best {result.best_epoch + 1}), time: {result.train_time_s:.1f} s")
    print(f"checkpoint: {result.checkpoint}")  # plain print: a path must not be wrapped
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download or verify the real datasets' files")
    p.add_argument("action", choices=["download", "verify"])
    p.add_argument("name", help="dataset name (avdigits, mfeat, reviews) or one of their sources")
    p.add_argument("--data-root", help="target folder (default: $MMFUSE_DATA or the cache)")
    p.set_defaults(func=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from mmfuse.data import download, verify

    if args.action == "download":
        print(f"{args.name}: files in {download(args.name, args.data_root)}")
        return 0
    problems = verify(args.name, args.data_root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.name}: all files present and correct")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmfuse", description="Multimodal fusion strategies, trained and compared.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; an :class:`~mmfuse.errors.MmfuseError` (bad input) prints
    ``mmfuse <command>: error: <message>`` and returns 2, anything else raises with its
    traceback (a bug to report)."""
    from mmfuse.errors import MmfuseError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmfuseError as exc:
        print(f"mmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
