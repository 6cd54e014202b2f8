"""`testtime aggregate`: concatenate finetune shards into one validated per-prompt table.

Example (docs/pipeline.md section 5)::

    testtime aggregate --config C --inputs data/demo/finetune/*/shard-*.parquet \\
        --out results/demo/per_prompt.parquet
"""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "concatenate finetune shard results into per_prompt.parquet (validated)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--inputs", nargs="+", required=True, help="finetune shard parquets")
    parser.add_argument("--out", required=True, help="output per_prompt.parquet")


def run(args: argparse.Namespace) -> None:
    from testtime.io import write_parquet, write_run_json
    from testtime.report import aggregate

    cfg = load_cli_config(args)
    table = aggregate(args.inputs)
    write_parquet(args.out, table)
    write_run_json(
        args.out,
        cfg,
        seed=cfg["seed"],
        extra={
            "inputs": [str(p) for p in args.inputs],
            "rows": len(table),
            "methods": sorted(set(table["method"])),
        },
    )
