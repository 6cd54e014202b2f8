"""`testtime bench`: run a benchmark module, e.g. ``testtime bench selection --repeats 5``."""

from __future__ import annotations

import argparse

HELP = "run a benchmark against its baseline (selection: SIFT vs activeft; finetune; lora)"

TARGETS = {
    "selection": "testtime.benchmarks.selection",
    "finetune": "testtime.benchmarks.finetune",
    "lora": "testtime.benchmarks.lora",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=sorted(TARGETS), help="which benchmark")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="options of that benchmark (see its --help)"
    )


def run(args: argparse.Namespace) -> None:
    import importlib

    module = importlib.import_module(TARGETS[args.target])
    status = module.main(args.args)
    if status:
        raise SystemExit(status)
