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
    from mmfuse.fusions import fusion_class, fusion_options, list_fusions

    for name in list_fusions():
        doc = (fusion_class(name).__doc__ or "").strip().splitlines()
        print(f"{name:28s} {doc[0] if doc else ''}")
        if args.options:
            for opt, param in fusion_options(name).items():
                default = "" if param.default is param.empty else f" = {param.default!r}"
                print(f"    {opt}{default}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmfuse", description="Multimodal fusion strategies, trained and compared.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
