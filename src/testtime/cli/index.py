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
    from testtime.io import AtomicGroup, check_output

    config = load_cli_config(args)
    check_output(args.out, flag="--out")
    memory = merge_shards(args.embeddings)
    index = build_index(memory.embeddings, config["index"], config["seed"])
    m, d = memory.embeddings.shape
    extra = {
        "d": d,
        "M": m,
        "type": config["index"]["type"],
        "faiss_class": type(index).__name__,
        "gpu": bool(config["index"]["gpu"] and gpu_available()),
    }
    with AtomicGroup() as out:  # index and run.json replaced together or not at all
        faiss.write_index(index, str(out.path(args.out)))
        out.write_run_json(args.out, config, seed=config["seed"], extra=extra)
