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

    from mmfuse.bench.tune import shared_space
    from mmfuse.fusions import fusion_class, list_fusions
    from mmfuse.fusions._options import option_help
    from mmfuse.space import render

    print("every model, strategy or baseline (tuned by mmfuse bench --tune):")
    for key, dist in shared_space().items():
        print(f"    {key}: {render(dist)}")
    for name in list_fusions():
        cls = fusion_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:28s} {doc[0] if doc else ''}")
        if args.options:
            for opt in option_help(cls):
                print(f"    {opt.name} = {opt.default!r}")
                if opt.allowed:
                    print(f"        allowed: {opt.allowed}")
                if opt.name in cls.search_space:
                    print(f"        tuned (--tune): {render(cls.search_space[opt.name])}")
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
    own = p.add_argument_group("your own data (a table: CSV, TSV, Parquet file or folder, JSON Lines; the same "
                               "options as data.<option>=value or a YAML data: section, which a flag given overrides)")
    own.add_argument("--data", metavar="PATH", help="the table (instead of --dataset); see `mmfuse data inspect`")
    _table_flags(own)
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
        "(--noise-scales, --metric) without training them again. Precedence: --config YAML, then key=value, then flags.",
    )
    _add_common(p, bench=True)
    p.add_argument("--fusions", help="comma-separated strategy names (default: every registered one)")
    p.add_argument("--seeds", type=int, help="seeds of standard training (default 3)")
    p.add_argument("--modality-dropout", type=float, help="rate of the modality-dropout training variant (0: off)")
    p.add_argument("--dropout-seeds", type=int, help="seeds of the modality-dropout variant (default 1)")
    p.add_argument("--balance", help="balanced-training variants of every fusion, comma-separated: aux, gblend, "
                   "ogm_ge, mmpareto (default: none); their options as balance.<option>=value (balance.weight, "
                   "balance.alpha, balance.every, balance.floor, balance.gamma)")
    p.add_argument("--noise-scales", help="comma-separated test-time noise scales (default 0.5,1,2)")
    p.add_argument("--metric", metavar="NAME",
                   help="the metric that ranks, tests and recommends (YAML metric:, or metric=NAME): one of the "
                   "task's metrics (accuracy, macro_f1, auroc for classification; micro_f1, macro_f1, map for "
                   "multilabel; rmse, mae, r2 for regression) or auto (default): the task's main metric, but "
                   "macro_f1 for a classification target whose majority class exceeds 70%% of the training rows. "
                   "Why macro-F1 and not AUROC there: on an 82/18 target a model that always predicts the "
                   "majority class keeps 0.82 accuracy, while its macro-F1 falls to 0.45; macro-F1 scores the "
                   "decisions the model makes (what mmfuse predict outputs) with every class weighed equally, "
                   "whereas AUROC only scores the ranking of the outputs and stays high for a model that never "
                   "predicts the minority class. AUROC and F1 are shown beside it either way")
    p.add_argument("--no-unimodal", action="store_true", help="skip the unimodal baselines")
    p.add_argument("--jobs", type=int, help="runs at the same time (default 2)")
    p.add_argument("--executor", choices=["local", "serial", "ray"], help="where runs execute (default local)")
    p.add_argument("--ray-address", help="Ray cluster address (with --executor ray; default: $RAY_ADDRESS, "
                   "else a local Ray)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG files (the report still shows the figures)")
    p.add_argument("--no-report", action="store_true", help="write no HTML report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    tune = p.add_argument_group(
        "tuning (equal budget: every strategy and baseline gets N Optuna trials, trial 0 its defaults, pruned on "
        "the validation score per epoch; the best of each is retrained over the seeds and compared; YAML tune: "
        "{trials, time, storage, seed, pruner, epochs, space}, or tune.<setting>=value)")
    tune.add_argument("--tune", type=int, metavar="N",
                      help="tune every strategy and baseline with N trials each (N >= 1) before comparing them")
    tune.add_argument("--tune-time", type=float, metavar="SECONDS",
                      help="most seconds of tuning per model and dataset (a model cut short has fewer trials)")
    tune.add_argument("--tune-storage", metavar="PATH",
                      help="keep the studies in PATH: an SQLite file (.db, .sqlite) or an Optuna journal file (any "
                      "other name), so a killed tuning resumes and several processes share it (default: memory; "
                      "with --executor ray, out/tuning/studies.journal)")
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


_TASKS = ("binary", "multiclass", "multilabel", "regression")


def _table_flags(group: argparse._ActionsContainer) -> None:
    """Add the flags of a user table's settings (all but its path) to ``group``. A flag not
    given stays ``None``, so it never overrides a value given another way; the values are
    read by the one grammar of :func:`mmfuse.experiment.config.table_settings`."""
    group.add_argument("--target", metavar="COL", action="append",
                       help="the target column (comma-separated, or repeat, for several: multilabel or "
                       "multi-output regression)")
    group.add_argument("--modality", metavar="NAME=COL[,COL...]", action="append",
                       help="columns of one modality (repeat; default: numeric/categorical -> tabular, each "
                       "text/image/audio/embedding column its own)")
    group.add_argument("--kind", metavar="COL=KIND", action="append",
                       help="a column's kind instead of the inferred one (numeric, categorical, text, image, audio, "
                       "embedding); repeat")
    group.add_argument("--task", choices=_TASKS, help="the task (default: inferred from the target)")
    group.add_argument("--exclude", metavar="COL", action="append",
                       help="a column not to use (repeat), e.g. one that leaks the target")
    group.add_argument("--split", metavar="COL|group:COL",
                       help="a column of train/val/test (a fixed split), or group:COL (a random split in which no "
                       "group spans two splits); default: a stratified random split")
    group.add_argument("--base-dir", metavar="DIR",
                       help="folder that relative file paths resolve against (default: the table's)")


def _table_options_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The table settings among the flags given (``--data`` is ``path``), unparsed: the
    library reads them (:func:`mmfuse.experiment.config.table_settings`)."""
    from mmfuse.experiment.config import TABLE_FLAGS

    given = {opt: getattr(args, flag[2:].replace("-", "_"), None) for opt, flag in TABLE_FLAGS.items()}
    return {opt: value for opt, value in given.items() if value is not None}


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

    encoders = _encoders(args)
    config = load_config(
        args.config,
        settings=[*args.settings, *(["verbose=true"] if args.verbose else [])],
        data=_table_options_from_args(args) or None,
        datasets=_csv_list(args.dataset),
        encoders=encoders or None,
        fusions=_csv_list(args.fusions),
        seeds=args.seeds,
        epochs=args.epochs,
        modality_dropout=args.modality_dropout,
        dropout_seeds=args.dropout_seeds,
        balance=_csv_list(args.balance),
        noise_scales=_floats("--noise-scales", _csv_list(args.noise_scales)),
        metric=args.metric,
        unimodal=False if args.no_unimodal else None,
        jobs=args.jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        out=args.out,
        force=True if args.force else None,
        data_root=args.data_root,
        plots=False if args.no_plots else None,
        report=False if args.no_report else None,
        tune=args.tune,
        tune_time=args.tune_time,
        tune_storage=args.tune_storage,
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
        "precision=bf16-mixed), balanced training (balance=aux balance.weight=2), model options (hidden_dim=32), data.<option> (data.task=synergy), "
        "fusion.<option> (fusion.gate=feature) and encoder.<modality>.<option>. Precedence: --config YAML, "
        "then key=value, then flags.",
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
    settings.update({f"data.{k}": v for k, v in _table_options_from_args(args).items()})
    if args.data is not None and args.dataset is None:
        dataset = "table"  # the flag over the YAML's dataset; with --dataset too, the library says which two
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.verbose:
        settings["verbose"] = True
    if args.seed is not None:
        settings["seed"] = args.seed
    if fusion is not None and unimodal is not None:
        raise ConfigError(f"--fusion {fusion} and --unimodal {unimodal}: give one of them")
    return train_command(settings, dataset=dataset, fusion=fusion, unimodal=unimodal,
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
    _table_flags(p.add_argument_group("inspect: the table's settings (as in mmfuse train and bench)"))
    p.add_argument("--json", action="store_true", help="inspect: print the report as JSON")
    p.set_defaults(func=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from mmfuse.data import download, verify

    if args.action == "inspect":
        import json

        from mmfuse.data import describe_table
        from mmfuse.experiment.config import table_settings

        options = table_settings({"path": args.name, **_table_options_from_args(args)}, require=True)
        report = describe_table(options.pop("path"), **options)
        print(json.dumps(report.to_json(), indent=1) if args.json else report.render())
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


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict new rows of a table with a trained model (a run folder, or a bench folder)",
        description="Apply a trained model to a table with the training table's column names: the saved "
        "preprocessing reads it (a modality's column absent or empty -> that modality missing for the row; an "
        "unseen category -> the unknown code, counted; extra columns ignored and listed; a wrong value, e.g. text "
        "in a numeric column -> an error naming the column and row). One output row per input row, in order: "
        "the predicted class and one probability per class, the labels and a probability per label, or the value "
        "in the target's units. A row with every modality missing gets empty cells (--strict: an error). When the "
        "target column is present it is not used as input and the metrics are printed. Parquet is read and "
        "written in batches of rows (bounded memory).",
    )
    p.add_argument("run", help="a run folder (mmfuse train --out) or a bench folder (mmfuse bench --out)")
    p.add_argument("--data", required=True, metavar="PATH", help="the new rows: CSV, TSV, Parquet file or folder, "
                   "JSON Lines")
    p.add_argument("--out", metavar="FILE", help="predictions.csv or predictions.parquet (default: CSV on "
                   "standard output, the summary on standard error)")
    p.add_argument("--strategy", metavar="NAME", help="with a bench folder: the strategy (a fusion name or "
                   "uni:<modality>; default: the recommended one), its lowest seed")
    p.add_argument("--id", dest="id_column", metavar="COL", help="copy this column of the input into the output, "
                   "first")
    p.add_argument("--explain", action="store_true", help="add per-row Shapley values of the modalities, the "
                   "strategy's modality weights, and trusted's uncertainty per row and per modality")
    p.add_argument("--strict", action="store_true", help="a row with every modality missing is an error")
    p.add_argument("--base-dir", help="folder that relative image/audio/.npy paths resolve against (default: the "
                   "table's folder)")
    p.add_argument("--batch-rows", type=int, default=4096, help="rows read, predicted and written at a time "
                   "(default 4096)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("on a Ray cluster (--executor ray: a Parquet file or folder in, a folder of Parquet "
                               "files out, with an input_row column: each row's position in the input, to sort on)")
    ray.add_argument("--executor", choices=("local", "ray"), default="local", help="local: this process (default); "
                     "ray: Ray Data, a pool of actors that each load the model once")
    ray.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster (default: $RAY_ADDRESS, else a local "
                     "Ray instance on this machine's CPUs)")
    ray.add_argument("--ray-workers", type=int, metavar="N", help="actors predicting (default: from 1 up to the "
                     "cluster's CPUs)")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from mmfuse.runs.command import predict_command

    return predict_command(args.run, data=args.data, out=args.out, strategy=args.strategy,
                           id_column=args.id_column, explain=args.explain, strict=args.strict,
                           base_dir=args.base_dir, batch_rows=args.batch_rows, progress=not args.no_progress,
                           executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP (POST /predict with JSON rows, GET /health)",
        description="Serve a trained model: POST /predict takes {\"rows\": [{column: value, ...}, ...]} (or a bare "
        "list of rows) with the training table's column names and answers one prediction per row, in order, "
        "with the probabilities of `mmfuse predict` and its summary lines; GET /health describes the model. "
        "Image, audio and .npy columns take paths under --base-dir or the file as base64. Concurrent requests "
        "are coalesced into one model call of at most --max-batch-rows rows, waiting at most --max-wait-ms for "
        "requests still arriving. Listens on 127.0.0.1 only unless --host says otherwise (no authentication).",
    )
    p.add_argument("run", help="a run folder (mmfuse train --out) or a bench folder (mmfuse bench --out)")
    p.add_argument("--strategy", metavar="NAME", help="with a bench folder: the strategy (a fusion name or "
                   "uni:<modality>; default: the recommended one), its lowest seed")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: every "
                   "interface, with a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    p.add_argument("--base-dir", help="folder that image/audio/.npy paths in rows resolve against and must stay "
                   "inside (default: none, paths are refused and files come as base64)")
    p.add_argument("--max-batch-rows", type=int, default=256, help="most rows in one model call (default 256)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="most time a model call waits for requests "
                   "still arriving to join it (default 2; a lone request is not delayed)")
    p.add_argument("--max-request-rows", type=int, default=10_000, help="most rows in one request (default 10000)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MiB (default 64)")
    p.add_argument("--threads", type=int, help="torch threads of the model's forward (default: auto, one for a "
                   "small model, as mmfuse predict)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmfuse.runs.serve import ServeSettings, serve_command

    settings = ServeSettings(host=args.host, port=args.port,
                             base_dir=Path(args.base_dir) if args.base_dir else None,
                             max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms,
                             max_request_rows=args.max_request_rows, max_body_mb=args.max_body_mb,
                             threads=args.threads)
    return serve_command(args.run, strategy=args.strategy, settings=settings)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model (encoders, fusion, head) to ONNX or a torch.export program",
        description="Write the tensor part of a trained model as an ONNX file (torch.onnx.export, dynamo) or a "
        "torch.export program (.pt2), with a JSON sidecar (<out>.json: inputs, outputs, dynamic axes, class "
        "names) and the run's preprocessing (<out>.preprocessor/). Inputs per modality: <m> (the batch), "
        "<m>__present (b,) bool, and <m>__tokens (b, t) bool for sequence and audio modalities; outputs: logits "
        "and probabilities (regression: prediction). A row with every modality missing gives NaN. See "
        "mmfuse.runs.export.",
    )
    p.add_argument("run", help="a run folder (mmfuse train --out) or a bench folder (mmfuse bench --out)")
    p.add_argument("--out", required=True, metavar="FILE", help="the exported model: model.onnx or model.pt2")
    p.add_argument("--format", choices=["onnx", "pt2"], help="default: from --out's suffix, else onnx")
    p.add_argument("--strategy", metavar="NAME", help="with a bench folder: the strategy (a fusion name or "
                   "uni:<modality>; default: the recommended one), its lowest seed")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from mmfuse.runs.export import export_command

    return export_command(args.run, out=args.out, format=args.format, strategy=args.strategy)


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
    _add_predict(sub)
    _add_serve(sub)
    _add_export(sub)
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
    from mmfuse.io import is_disk_full

    what = {"predict": "no predictions file was written", "bench": "rerun the same command to continue",
            "train": "rerun with --resume --out <the run folder> to continue"}.get(args.command, "nothing more was done")
    try:
        return int(args.func(args) or 0)
    except MmfuseError as exc:
        print(f"mmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or "the output folder"  # a write outside atomic_write
        print(f"mmfuse {args.command}: error: no space left on the device writing {where}: free some space "
              "there and run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmmfuse {args.command}: interrupted; {what}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
