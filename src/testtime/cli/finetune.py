"""`testtime finetune`: test-time fine-tune one method on one prompt shard and score bpb.

Example (docs/pipeline.md section 5)::

    testtime finetune --config C --method sift --shard 0 --num-shards 1 \\
        --model data/demo/base_model/ --prompts data/demo/prompts.parquet \\
        --memory data/demo/memory.parquet --selection data/demo/selections/sift.parquet \\
        --out data/demo/finetune/sift/shard-0.parquet
"""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "test-time fine-tune on selected sequences and score bits per byte (one shard)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--method", required=True, help="base or a selection variant (sift, nn, ...)"
    )
    parser.add_argument("--shard", type=int, default=0, help="prompt shard index I")
    parser.add_argument("--num-shards", type=int, default=1, help="number of prompt shards S")
    parser.add_argument("--model", required=True, help="base model directory (HF, with tokenizer)")
    parser.add_argument("--prompts", required=True, help="prompts.parquet")
    parser.add_argument("--memory", required=True, help="memory.parquet")
    parser.add_argument("--selection", default=None, help="selections/<method>.parquet (not base)")
    parser.add_argument("--out", required=True, help="output shard parquet")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from testtime.finetune.stage import read_finetune_inputs, run_finetune
    from testtime.io import AtomicGroup, check_output

    cfg = load_cli_config(args)
    check_output(args.out, flag="--out")
    for flag, path in (
        ("--model", args.model),
        ("--prompts", args.prompts),
        ("--memory", args.memory),
        ("--selection", args.selection),
    ):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path!r} does not exist")
    inputs = read_finetune_inputs(
        cfg,
        method=args.method,
        prompts_path=args.prompts,
        memory_path=args.memory,
        selection_path=args.selection,
        shard=args.shard,
        num_shards=args.num_shards,
    )
    table = run_finetune(cfg, inputs, model_dir=args.model)
    n_nan = int((table["status"] != "ok").sum())
    with AtomicGroup() as out:
        out.write_parquet(args.out, table)
        out.write_run_json(
            args.out,
            cfg,
            seed=cfg["seed"],
            device=str(inputs.device),
            extra={
                "method": args.method,
                "shard": args.shard,
                "num_shards": args.num_shards,
                "rows": len(table),
                "nan_loss_rows": n_nan,
            },
        )
