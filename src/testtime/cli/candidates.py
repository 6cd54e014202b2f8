"""`testtime candidates`: top-K memory ids and inner products per test prompt."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "pre-select the select.k nearest memory sequences of each prompt (Faiss search)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--index", required=True, help="memory.faiss")
    parser.add_argument("--queries", required=True, help="prompts.npy (ids in prompts.ids.npy)")
    parser.add_argument("--out", required=True, help="candidates.parquet to write")


def run(args: argparse.Namespace) -> None:
    import os

    import faiss

    from testtime.index import candidates_table, load_embeddings, search
    from testtime.io import write_parquet, write_run_json

    config = load_cli_config(args)
    if not os.path.isfile(args.index):
        raise FileNotFoundError(f"--index {args.index!r} does not exist")
    index = faiss.read_index(args.index)
    queries, prompt_ids = load_embeddings(args.queries)
    k = config["select"]["k"]
    scores, ids = search(index, queries, k, config["index"])
    write_parquet(args.out, candidates_table(prompt_ids, scores, ids))
    extra = {"k": k, "prompts": len(prompt_ids), "M": int(index.ntotal)}
    write_run_json(args.out, config, seed=config["seed"], extra=extra)
