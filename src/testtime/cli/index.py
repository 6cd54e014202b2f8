"""`testtime index`: merge memory embedding shards by id and build the Faiss index."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "build the Faiss index over memory embeddings (row r = memory_id r)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--embeddings", nargs="+", required=True, help="memory.I.npy shards")
    parser.add_argument("--out", required=True, help="memory.faiss to write")


def run(args: argparse.Namespace) -> None:
    import faiss

    from testtime.index import build_index, gpu_available, merge_shards
    from testtime.io import atomic_path, write_run_json

    config = load_cli_config(args)
    memory = merge_shards(args.embeddings)
    index = build_index(memory.embeddings, config["index"], config["seed"])
    with atomic_path(args.out) as tmp:
        faiss.write_index(index, str(tmp))
    m, d = memory.embeddings.shape
    extra = {
        "d": d,
        "M": m,
        "type": config["index"]["type"],
        "faiss_class": type(index).__name__,
        "gpu": bool(config["index"]["gpu"] and gpu_available()),
    }
    write_run_json(args.out, config, seed=config["seed"], extra=extra)
