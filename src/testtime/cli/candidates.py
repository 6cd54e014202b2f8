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
    from testtime.index import candidates_table, load_embeddings, read_index, search
    from testtime.io import AtomicGroup, check_output

    config = load_cli_config(args)
    check_output(args.out, flag="--out")
    index = read_index(args.index, "--index")
    queries, prompt_ids = load_embeddings(args.queries)
    k = config["select"]["k"]
    scores, ids = search(index, queries, k, config["index"])
    extra = {"k": k, "prompts": len(prompt_ids), "M": int(index.ntotal)}
    with AtomicGroup() as out:
        out.write_parquet(args.out, candidates_table(prompt_ids, scores, ids))
        out.write_run_json(args.out, config, seed=config.get("seed"), extra=extra)
