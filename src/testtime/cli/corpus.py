"""`testtime corpus`: build documents.parquet (demo, hf or jsonl source; docs/pipeline.md §1)."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "build the document table split into pretrain / memory / test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--out", required=True, help="documents.parquet to write")


def run(args: argparse.Namespace) -> None:
    from testtime.corpus import build_corpus
    from testtime.io import AtomicGroup, check_output

    config = load_cli_config(args)
    check_output(args.out, flag="--out")
    if config.get("model", {}).get("source") == "pretrained":
        from testtime.lm import check_pretrained_context

        # before any streaming: a model too short for data.seq_len / eval_tokens fails here
        check_pretrained_context(config)
    corpus = build_corpus(config)
    with AtomicGroup() as out:  # documents and run.json replaced together or not at all
        out.write_parquet(args.out, corpus.documents)
        out.write_run_json(args.out, config, seed=config["seed"], extra={"corpus": corpus.info})
