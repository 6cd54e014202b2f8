"""The ``testtime`` command line: one thin subcommand module per pipeline stage.

Each module in :data:`SUBCOMMANDS` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> None``; heavy imports happen inside ``run`` so ``testtime --help`` stays fast.
Errors that are the user's (bad config, bad input files) are ``ValueError`` / ``FileNotFoundError``
and are printed as one line with exit status 2 instead of a traceback; so are the environment's
(``OSError``: a full disk, a read-only or missing directory), naming the path.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = (
    "corpus",
    "tokenizer",
    "chunk",
    "pretrain",
    "embed",
    "index",
    "candidates",
    "select",
    "finetune",
    "aggregate",
    "report",
    "bench",
    "memory",
    "generate",
    "plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testtime",
        description="Test-time fine-tuning with SIFT data selection (one subcommand per stage).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"testtime.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def describe(exc: BaseException) -> str:
    """One line for a user-facing error: an OSError as its reason and path, else its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        paths = [str(exc.filename)] + ([str(exc.filename2)] if exc.filename2 else [])
        return f"{exc.strerror}: " + " -> ".join(repr(p) for p in paths)
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args._run(args)
    except (ValueError, OSError) as exc:
        print(f"testtime {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
