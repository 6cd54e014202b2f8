"""`testtime tokenizer`: train byte-level BPE on the pretrain split, or save a pretrained one."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "train (demo) or copy (pretrained) the tokenizer into a local directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--documents", required=True, help="documents.parquet (corpus stage)")
    parser.add_argument("--out", required=True, help="tokenizer directory to write")


def run(args: argparse.Namespace) -> None:
    import pandas as pd

    from testtime.io import atomic_path, check_output, write_json
    from testtime.provenance import provenance
    from testtime.tokenizer import load_tokenizer, train_bpe_tokenizer

    config = load_cli_config(args)
    check_output(args.out, is_dir=True, flag="--out")
    model_cfg = config["model"]
    if model_cfg["source"] == "pretrained":
        tok = load_tokenizer(model_cfg["name_or_path"])
        extra = {"tokenizer": {"source": model_cfg["name_or_path"]}}
    else:
        docs = pd.read_parquet(args.documents, columns=["split", "text"])
        texts = docs.loc[docs["split"] == "pretrain", "text"].tolist()
        if not texts:
            raise ValueError(f"--documents {args.documents!r} has no pretrain documents")
        tok = train_bpe_tokenizer(texts, model_cfg["vocab_size"], model_cfg["n_positions"])
        extra = {"tokenizer": {"trained_on_docs": len(texts), "vocab_size": len(tok)}}
    record = provenance(config, seed=config["seed"], extra=extra)
    with atomic_path(args.out, is_dir=True) as tmp:  # tokenizer and run.json in one directory
        tok.save_pretrained(tmp)
        write_json(tmp / "run.json", record)
