"""`testtime plan`: records, memory, index, GPU-hours and cluster jobs of a config (no work)."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "estimate what a config costs before running it (testtime.plan)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--memory-docs",
        type=int,
        default=None,
        help="override data.memory_docs (and raise data.hf.max_scan_docs to at least it)",
    )
    parser.add_argument("--params", type=float, default=None, help="base-model parameters")


def run(args: argparse.Namespace) -> None:
    from testtime.config import validate_config
    from testtime.plan import format_plan, make_plan

    config = load_cli_config(args)
    if args.memory_docs is not None:
        config["data"]["memory_docs"] = args.memory_docs
        hf = config["data"]["hf"]
        hf["max_scan_docs"] = max(hf["max_scan_docs"], args.memory_docs)
        config = validate_config(config)
    print(format_plan(make_plan(config, args.params), config))
