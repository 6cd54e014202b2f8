"""`testtime embed`: embed one text column (optionally one shard of it) to float16 .npy + ids."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config, warn_slow_bf16

HELP = "embed texts with the frozen embedding model (unit-norm float16 .npy + .ids.npy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--input", required=True, help="Parquet table holding the texts")
    parser.add_argument("--text-column", required=True, help="column with the texts")
    parser.add_argument("--id-column", required=True, help="column with the row ids")
    parser.add_argument("--shard", type=int, default=0, help="shard index I (rows i %% S == I)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards S")
    parser.add_argument("--out", required=True, help="X.npy to write (ids go to X.ids.npy)")


def run(args: argparse.Namespace) -> None:
    import time

    import pandas as pd

    from testtime.device import resolve_device
    from testtime.embedding import embed_texts, ids_path, load_embedding_model, to_float16
    from testtime.io import AtomicGroup, check_output

    config = load_cli_config(args)
    check_output(args.out, flag="--out")
    ecfg = config["embed"]
    if not 0 <= args.shard < args.num_shards:
        raise ValueError(f"--shard {args.shard} is not in 0..--num-shards-1={args.num_shards - 1}")
    table = pd.read_parquet(args.input)
    for col in (args.text_column, args.id_column):
        if col not in table.columns:
            raise ValueError(f"--input {args.input!r} has no column {col!r}")
    part = table.iloc[args.shard :: args.num_shards]
    device = resolve_device(config["device"])
    warn_slow_bf16(device, ecfg["bf16"])
    encoder = load_embedding_model(
        ecfg["model"], device, pooling=ecfg["pooling"], max_length=ecfg["max_length"]
    )
    start = time.monotonic()
    emb = embed_texts(
        part[args.text_column].tolist(),
        encoder,
        batch_size=ecfg["batch_size"],
        bf16=ecfg["bf16"],
    )
    seconds = time.monotonic() - start
    ids = part[args.id_column].to_numpy(dtype="int64")
    extra = {
        "rows": len(part),
        "dim": int(emb.shape[1]),
        "model_path": encoder.source,
        "seconds": round(seconds, 2),
        "rows_per_second": round(len(part) / max(seconds, 1e-9), 1),
        "shard": args.shard,
        "num_shards": args.num_shards,
    }
    with AtomicGroup() as out:
        out.save_npy(args.out, to_float16(emb))
        out.save_npy(ids_path(args.out), ids)
        out.write_run_json(
            args.out, config, seed=config.get("seed"), device=str(device), extra=extra
        )
