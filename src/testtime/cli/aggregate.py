"""`testtime aggregate`: concatenate finetune shards into one validated per-prompt table.

Every configured method (base, select.methods, select.lam_sweep) must have results for the
same prompts (all of ``--prompts`` when given); anything missing is an error naming it.

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
    parser.add_argument(
        "--prompts",
        default=None,
        help="prompts.parquet: every test prompt must have results (checked when given)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept shards that lack methods or prompts (default: an error naming them)",
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd

    from testtime.io import AtomicGroup, check_output
    from testtime.methods import finetuned_method_names
    from testtime.report import aggregate, check_complete

    cfg = load_cli_config(args)
    check_output(args.out, flag="--out")
    table = aggregate(args.inputs)
    prompt_ids = None
    if args.prompts is not None:
        if not Path(args.prompts).is_file():
            raise FileNotFoundError(f"--prompts {args.prompts!r} does not exist")
        prompt_ids = pd.read_parquet(args.prompts, columns=["prompt_id"])["prompt_id"].tolist()
    methods = finetuned_method_names(cfg)
    partial = check_complete(table, methods, prompt_ids, allow_partial=args.allow_partial)
    with AtomicGroup() as out:
        out.write_parquet(args.out, table)
        out.write_run_json(
            args.out,
            cfg,
            seed=cfg.get("seed"),
            extra={
                "inputs": [str(p) for p in args.inputs],
                "rows": len(table),
                "methods": sorted(set(table["method"])),
                "partial": partial if args.allow_partial else None,
            },
        )
