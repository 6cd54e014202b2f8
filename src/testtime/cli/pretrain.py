"""`testtime pretrain`: pre-train the demo GPT-2 (resumable) or save a pretrained LM locally."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config, warn_slow_bf16

HELP = "pre-train the demo LM on the pretrain split (or copy a pretrained LM) into --out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory")
    parser.add_argument("--pretrain", required=True, help="pretrain.parquet (chunk stage)")
    parser.add_argument("--checkpoint-dir", required=True, help="resumable checkpoints")
    parser.add_argument("--out", required=True, help="base_model directory to write")


def run(args: argparse.Namespace) -> None:
    import time

    import pandas as pd

    from testtime.device import resolve_device
    from testtime.io import atomic_path, check_output, write_json
    from testtime.lm import load_causal_lm, pretrain
    from testtime.provenance import provenance
    from testtime.tokenizer import load_tokenizer

    config = load_cli_config(args)
    check_output(args.out, is_dir=True, flag="--out")
    model_cfg = config["model"]
    device = resolve_device(config["device"])
    if model_cfg["source"] != "pretrained":
        warn_slow_bf16(device, model_cfg["pretrain"]["bf16"])
    tok = load_tokenizer(args.tokenizer, local=True, flag="--tokenizer")
    start = time.monotonic()
    if model_cfg["source"] == "pretrained":
        model = load_causal_lm(model_cfg["name_or_path"], "cpu")
        extra = {"source": model_cfg["name_or_path"]}
    else:
        seqs = pd.read_parquet(args.pretrain, columns=["input_ids"])["input_ids"].tolist()
        result = pretrain(seqs, tok, model_cfg, config["seed"], args.checkpoint_dir, device)
        model = result.model.to("cpu")
        tail = result.losses[-10:]
        extra = {
            "final_train_loss": sum(tail) / len(tail),
            "first_train_loss": result.losses[0],
            "steps": len(result.losses),
            "resumed_from": result.resumed_from,
            "tokens_per_step": model_cfg["pretrain"]["batch_size"] * config["data"]["seq_len"],
            "n_params": sum(p.numel() for p in model.parameters()),
        }
    extra["seconds"] = round(time.monotonic() - start, 1)
    meta = provenance(config, seed=config["seed"], device=str(device), extra=extra)
    with atomic_path(args.out, is_dir=True) as tmp:  # model, tokenizer and run.json together
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "run.json", meta)
