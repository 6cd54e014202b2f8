"""`testtime chunk`: tokenise documents into pretrain / memory sequences and test prompts."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "chunk documents into fixed-length token sequences and build test prompts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--documents", required=True, help="documents.parquet (corpus stage)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory")
    parser.add_argument("--pretrain-out", required=True, help="pretrain.parquet to write")
    parser.add_argument("--memory-out", required=True, help="memory.parquet to write")
    parser.add_argument("--prompts-out", required=True, help="prompts.parquet to write")


def run(args: argparse.Namespace) -> None:
    import pandas as pd

    from testtime.chunking import check_seq_len, chunk_documents, make_prompts
    from testtime.config import check_prompt_fits
    from testtime.io import AtomicGroup, check_output
    from testtime.tokenizer import load_tokenizer

    config = load_cli_config(args)
    for flag in ("pretrain_out", "memory_out", "prompts_out"):
        check_output(getattr(args, flag), flag="--" + flag.replace("_", "-"))
    data = config["data"]
    tok = load_tokenizer(args.tokenizer, local=True, flag="--tokenizer")
    n_positions = config["model"]["n_positions"] if config["model"]["source"] == "train" else None
    check_seq_len(data["seq_len"], tok, n_positions)
    limit = n_positions or getattr(tok, "model_max_length", None)
    if limit is not None and limit < 10**9:
        where = "model.n_positions" if n_positions else "the tokenizer's model_max_length"
        check_prompt_fits(data, limit, where)
    docs = pd.read_parquet(args.documents)
    outputs = {}
    for split, out in (("pretrain", args.pretrain_out), ("memory", args.memory_out)):
        part = docs[docs["split"] == split]
        # a pretrained model needs no pretrain split (the sources-per-role corpus has none)
        if part.empty and (split == "memory" or config["model"]["source"] == "train"):
            raise ValueError(f"--documents {args.documents!r} has no {split} documents")
        unit = data["memory_unit"] if split == "memory" else "chunk"
        outputs[out] = chunk_documents(part, tok, data["seq_len"], unit)
    prompts = make_prompts(
        docs[docs["split"] == "test"],
        tok,
        data["prompts_per_domain"],
        data["prompt_tokens"],
        data["eval_tokens"],
        list(data["domains"]),
        data["protocol"],
        min_eval_tokens=data["min_eval_tokens"],
        sampling=data["prompt_sampling"],
        num_prompts=data["num_prompts"],
        seed=config["seed"],
    )
    outputs[args.prompts_out] = prompts
    with AtomicGroup() as group:  # all three tables and their records, or none
        for out, frame in outputs.items():
            group.write_parquet(out, frame)
            counts = frame.groupby("domain").size().to_dict()
            tokens = int(frame["n_tokens"].sum()) if "n_tokens" in frame else None
            extra = {"rows": len(frame), "rows_per_domain": counts, "tokens": tokens}
            group.write_run_json(out, config, seed=config["seed"], extra=extra)
