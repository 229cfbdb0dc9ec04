"""The ``mmfuse`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered fusion strategies and their options")
    p.add_argument("--options", action="store_true", help="also show each strategy's keyword options")
    p.set_defaults(func=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    import textwrap

    if not args.options:  # names and summaries come from the sources: no torch import
        from mmfuse._catalogue import builtin_fusions

        for name, summary in builtin_fusions().items():
            print(f"{name:28s} {summary}")
        return 0

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


def _add_common(p: argparse.ArgumentParser, *, bench: bool) -> None:
    """The flags ``mmfuse train`` and ``mmfuse bench`` share, spelled the same on both."""
    p.add_argument("--dataset", help=f"dataset name{', comma-separated for several, or all' if bench else ''} "
                   "(synthetic, avdigits, mfeat, reviews; default: synthetic)")
    p.add_argument("--config", help="YAML file of settings (the same keys as key=value)")
    p.add_argument("--out", help="results folder" + (" (default bench-out/<datasets>)" if bench else
                                                    " (default runs/<dataset>-<model>-<time>)"))
    p.add_argument("--force", action="store_true",
                   help="write into an existing folder that holds another run" + ("s' comparison" if bench else ""))
    p.add_argument("--epochs", type=int, help="most epochs per model (a shortcut for epochs=N)")
    p.add_argument("--verbose", action="store_true", help="show Lightning's own messages (a shortcut for verbose=true)")
    p.add_argument("--data-root", help="folder of the real datasets (default: $MMFUSE_DATA or the cache)")
    own = p.add_argument_group("your own data (a table: CSV, TSV, Parquet file or folder, JSON Lines)")
    own.add_argument("--data", metavar="PATH", help="the table (instead of --dataset); see `mmfuse data inspect`")
    own.add_argument("--target", metavar="COL", help="the target column (comma-separated for several)")
    own.add_argument("--modality", metavar="NAME=COL[,COL...]", action="append", default=[],
                     help="columns of one modality (repeat; default: numeric/categorical -> tabular, each "
                     "text/image/audio/embedding column its own)")
    own.add_argument("--task", choices=["binary", "multiclass", "multilabel", "regression"],
                     help="the task (default: inferred from the target)")
    own.add_argument("--exclude", metavar="COL", action="append", default=[],
                     help="a column not to use (repeat), e.g. one that leaks the target")
    p.add_argument("--encoder", metavar="MODALITY=NAME", action="append", default=[],
                   help="a pretrained encoder for a modality: hf:<model or folder> or timm:<model>, options after "
                   "commas (frozen (default), finetune, finetune_last=N, tokens); repeat for several")
    p.add_argument("settings", nargs="*", metavar="key=value",
                   help="training settings (epochs=5 lr=3e-4 batch_size=64 precision=bf16-mixed devices=2 ...), "
                   + ("measure.<setting>, or any bench setting (seeds=2)" if bench else
                      "model (hidden_dim=32), data.<option>, fusion.<option>, encoder.<modality>.<option>"))


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="train and compare every fusion strategy side by side",
        description="Train every strategy (and the unimodal baselines) over several seeds, measure score, "
        "cost and robustness, and write results (JSON, CSV), plots and an HTML report. Re-running into the "
        "same --out folder skips finished runs and re-measures saved models with new test-time settings "
        "(--noise-scales) without training them again. Precedence: --config YAML, then key=value, then flags.",
    )
    _add_common(p, bench=True)
    p.add_argument("--fusions", help="comma-separated strategy names (default: every registered one)")
    p.add_argument("--seeds", type=int, help="seeds of standard training (default 3)")
    p.add_argument("--modality-dropout", type=float, help="rate of the modality-dropout training variant (0: off)")
    p.add_argument("--dropout-seeds", type=int, help="seeds of the modality-dropout variant (default 1)")
    p.add_argument("--balance", help="balanced-training variants of every fusion, comma-separated: aux, gblend, "
                   "ogm_ge, mmpareto (default: none)")
    p.add_argument("--noise-scales", help="comma-separated test-time noise scales (default 0.5,1,2)")
    p.add_argument("--no-unimodal", action="store_true", help="skip the unimodal baselines")
    p.add_argument("--jobs", type=int, help="runs at the same time (default 2)")
    p.add_argument("--executor", choices=["local", "serial", "ray"], help="where runs execute (default local)")
    p.add_argument("--ray-address", help="Ray cluster address (with --executor ray; default: $RAY_ADDRESS, "
                   "else a local Ray)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG files (the report still shows the figures)")
    p.add_argument("--no-report", action="store_true", help="write no HTML report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_bench)


def _csv_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _floats(flag: str, values: list[str] | None) -> list[float] | None:
    from mmfuse.errors import ConfigError

    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError as exc:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {','.join(values)!r}") from exc


def _table(args: argparse.Namespace) -> dict[str, object] | None:
    """The ``table`` dataset's options from --data/--target/--modality/--task, or None."""
    from mmfuse.errors import ConfigError

    if args.data is None:
        for flag, value in (("--target", args.target), ("--modality", args.modality), ("--task", args.task),
                            ("--exclude", args.exclude)):
            if value:
                raise ConfigError(f"{flag}: only with --data PATH (your own table)")
        return None
    if args.dataset is not None:
        raise ConfigError(f"--dataset {args.dataset} and --data {args.data}: give one of them")
    if not args.target:
        raise ConfigError("--data: expected --target COL naming the target column")
    from mmfuse.data import table_options

    modalities: dict[str, list[str]] = {}
    for item in args.modality:
        name, sep, cols = item.partition("=")
        if not sep or not name.strip() or not cols.strip():
            raise ConfigError(f"--modality {item!r}: expected NAME=COL[,COL...]")
        modalities[name.strip()] = [c.strip() for c in cols.split(",") if c.strip()]
    target = [t.strip() for t in args.target.split(",")] if "," in args.target else args.target
    return table_options(args.data, target=target, modalities=modalities or None, task=args.task,
                         exclude=tuple(args.exclude))


def _encoders(args: argparse.Namespace) -> dict[str, str]:
    from mmfuse.errors import ConfigError

    out: dict[str, str] = {}
    for item in args.encoder:
        mod, sep, name = item.partition("=")
        if not sep or not mod.strip() or not name.strip():
            raise ConfigError(f"--encoder {item!r}: expected MODALITY=NAME (e.g. text=hf:distilbert-base-uncased)")
        out[mod.strip()] = name.strip()
    return out


def _run_bench(args: argparse.Namespace) -> int:
    from mmfuse.bench import load_config, run_bench

    table = _table(args)
    encoders = _encoders(args)
    config = load_config(
        args.config,
        settings=[*args.settings, *(["verbose=true"] if args.verbose else [])],
        datasets=["table"] if table is not None else _csv_list(args.dataset),
        dataset_options={"table": table} if table is not None else None,
        encoders=encoders or None,
        fusions=_csv_list(args.fusions),
        seeds=args.seeds,
        epochs=args.epochs,
        modality_dropout=args.modality_dropout,
        dropout_seeds=args.dropout_seeds,
        balance=_csv_list(args.balance),
        noise_scales=_floats("--noise-scales", _csv_list(args.noise_scales)),
        unimodal=False if args.no_unimodal else None,
        jobs=args.jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        out=args.out,
        force=True if args.force else None,
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
        "(safetensors + JSON config), the run's settings (spec.json) and its record (run.json) to --out. "
        "Settings are key=value: TrainConfig fields (epochs=5 lr=3e-4 accelerator=gpu devices=2 strategy=ddp "
        "precision=bf16-mixed), model options (hidden_dim=32), data.<option> (data.task=synergy), "
        "fusion.<option> (fusion.gate=feature) and encoder.<modality>.<option>; they override the --config "
        "YAML file.",
    )
    _add_common(p, bench=False)
    p.add_argument("--fusion", help="fusion strategy (default gated; see `mmfuse list`)")
    p.add_argument("--unimodal", metavar="MODALITY", help="train the single-modality baseline instead of a fusion")
    p.add_argument("--seed", type=int, help="training seed (a shortcut for seed=N)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same settings)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from mmfuse.errors import ConfigError
    from mmfuse.experiment import parse_overrides, read_yaml
    from mmfuse.experiment.command import train_command
    from mmfuse.experiment.config import flatten_settings

    settings: dict[str, object] = {}
    dataset, fusion, unimodal = args.dataset, args.fusion, args.unimodal
    if args.config is not None:
        loaded = read_yaml(args.config)
        dataset = dataset or loaded.pop("dataset", None)
        if isinstance(loaded.get("fusion"), str):
            fusion = fusion or loaded.pop("fusion")
        unimodal = unimodal or loaded.pop("unimodal", None)
        settings.update(flatten_settings(loaded))
    settings.update(parse_overrides(args.settings))
    settings.update({f"encoders.{m}": name for m, name in _encoders(args).items()})
    table = _table(args)
    if table is not None:
        dataset = "table"
        settings.update({f"data.{k}": v for k, v in table.items()})
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.verbose:
        settings["verbose"] = True
    if args.seed is not None:
        settings["seed"] = args.seed
    if fusion is not None and unimodal is not None:
        raise ConfigError(f"--fusion {fusion} and --unimodal {unimodal}: give one of them")
    return train_command(settings, dataset=dataset or "synthetic", fusion=fusion, unimodal=unimodal,
                             out=args.out, resume=args.resume, force=args.force, data_root=args.data_root)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="download or verify the real datasets' files, or inspect your own table",
        description="download NAME / verify NAME: the built-in datasets' files (verify always hashes every file). "
        "inspect PATH --target COL: the schema mmfuse infers from your table (CSV, TSV, Parquet file or folder, "
        "JSON Lines): each column's kind, modality and missing rate, the task, class balance or target range, "
        "the split sizes, dropped rows and bad files. Nothing trains.",
    )
    p.add_argument("action", choices=["download", "verify", "inspect"])
    p.add_argument("name", help="download/verify: dataset name (avdigits, mfeat, reviews) or one of their "
                   "sources; inspect: the table's path")
    p.add_argument("--data-root", help="download/verify: target folder (default: $MMFUSE_DATA or the cache)")
    p.add_argument("--target", action="append", metavar="COL",
                   help="inspect: the target column (repeat for several: multilabel or multi-output regression)")
    p.add_argument("--modality", action="append", metavar="NAME=COL[,COL...]",
                   help="inspect: a modality and its columns (repeatable; default: tabular + one per text, "
                   "image, audio and embedding column)")
    p.add_argument("--task", choices=["binary", "multiclass", "multilabel", "regression"],
                   help="inspect: override the inferred task")
    p.add_argument("--kind", action="append", metavar="COL=KIND",
                   help="inspect: override a column's inferred kind (numeric, categorical, text, image, audio, "
                   "embedding); repeatable")
    p.add_argument("--exclude", action="append", metavar="COL", help="inspect: a column not to use (repeatable)")
    p.add_argument("--split", help="inspect: a column of train/val/test, or group:COL (no group spans two splits)")
    p.add_argument("--base-dir", help="inspect: folder relative file paths resolve against (default: the table's)")
    p.add_argument("--json", action="store_true", help="inspect: print the report as JSON")
    p.set_defaults(func=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from mmfuse.data import DataError, download, verify

    if args.action == "inspect":
        import json

        from mmfuse.data import describe_table

        if not args.target:
            raise DataError("data inspect: expected --target COL")
        modalities = None
        for spec in args.modality or []:
            name, sep, cols = spec.partition("=")
            columns = [c.strip() for c in cols.split(",") if c.strip()]
            if not sep or not name.strip() or not columns:
                raise DataError(f"--modality: expected NAME=COL[,COL...], got {spec!r}")
            modalities = modalities or {}
            if name.strip() in modalities:
                raise DataError(f"--modality: modality {name.strip()!r} given twice")
            modalities[name.strip()] = columns
        kinds = {}
        for spec in args.kind or []:
            col, sep, kind = spec.rpartition("=")
            if not sep or not col:
                raise DataError(f"--kind: expected COL=KIND, got {spec!r}")
            kinds[col] = kind.strip()
        split = args.split
        if split is not None and split.startswith("group:"):
            split = {"group": split[len("group:"):]}
        report = describe_table(args.name, target=args.target[0] if len(args.target) == 1 else args.target,
                                modalities=modalities, task=args.task, split=split, base_dir=args.base_dir,
                                kinds=kinds, exclude=tuple(args.exclude or ()))
        print(json.dumps(report.to_dict(), indent=1) if args.json else report.render())
        return 0
    if args.action == "download":
        print(f"{args.name}: files in {download(args.name, args.data_root)}")
        return 0
    problems = verify(args.name, args.data_root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.name}: all files present and correct (every file hashed)")
    return 1 if problems else 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a suggestion for a mistyped flag (``--epoch`` -> ``--epochs``) instead of
    silently taking a prefix for the flag it abbreviates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        import difflib
        import re

        bad = re.findall(r"(--?[\w-]+)", message.split(":", 1)[-1]) if "unrecognized arguments" in message else []
        known = [o for a in self._actions for o in a.option_strings]
        for sub in (a for a in self._actions if isinstance(a, argparse._SubParsersAction)):
            for p in sub.choices.values():
                known += [o for a in p._actions for o in a.option_strings]
        hints = []
        for flag in bad:
            close = difflib.get_close_matches(flag, [k for k in known if k != flag], n=1, cutoff=0.6)
            if close:
                hints.append(f"{flag}: did you mean {close[0]}?")
            elif flag.startswith("--") and "=" not in flag:
                hints.append(f"{flag}: not a flag; settings are key=value (e.g. {flag[2:].replace('-', '_')}=...)")
        super().error(message + ("\n" + "\n".join(hints) if hints else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmfuse", description="Multimodal fusion strategies, trained and compared.")
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
    import re

    from mmfuse.errors import MmfuseError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value settings may come after flags (argparse stops a positional list at the first flag)
    settings = [a for a in extra if re.match(r"^[A-Za-z_][\w.]*=", a)]
    unknown = [a for a in extra if a not in settings]
    if settings and hasattr(args, "settings"):
        args.settings = [*args.settings, *settings]
    elif settings:
        unknown = extra
    if unknown:  # the command's own parser, so suggestions come from its flags only
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except MmfuseError as exc:
        print(f"mmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
