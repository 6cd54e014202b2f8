"""`testtime select`: run one selection method variant over every prompt (docs/pipeline.md §4)."""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "select n memory sequences per prompt from its K candidates (sift, nn, nn_f, us, random)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--method", required=True, help="variant name, e.g. sift, nn, sift_lam0.01")
    parser.add_argument("--candidates", required=True, help="candidates.parquet (K rows/prompt)")
    parser.add_argument(
        "--memory-embeddings", nargs="+", required=True, help="memory.I.npy shards (+ .ids.npy)"
    )
    parser.add_argument("--prompt-embeddings", required=True, help="prompts.npy (+ .ids.npy)")
    parser.add_argument("--out", required=True, help="selections/<method>.parquet to write")
    parser.add_argument("--batch-prompts", type=int, default=512, help="prompts per batch")
    parser.add_argument(
        "--index", help="memory.faiss: methods on a memory subset (sift_mem<f>) search it again"
    )
    parser.add_argument("--memory", help="memory.parquet: documents of the memory subsets")


def run(args: argparse.Namespace) -> None:
    import time

    import pyarrow as pa

    from testtime.device import resolve_device
    from testtime.io import AtomicGroup, check_output
    from testtime.methods import variant_by_name
    from testtime.seeding import selection_generator
    from testtime.selection.pipeline import (
        read_candidates,
        read_embeddings,
        select_table,
        subset_candidates,
    )

    if args.batch_prompts < 1:
        raise ValueError(f"--batch-prompts must be >= 1, got {args.batch_prompts}")
    config = load_cli_config(args)
    check_output(args.out, flag="--out")
    variant = variant_by_name(config, args.method)
    device = resolve_device(config["device"])
    n, seed = config["select"]["n"], config["seed"]
    if variant.memory_fraction == 1:
        candidates = read_candidates(args.candidates, k=config["select"]["k"])
    else:  # the whole memory's candidates do not serve a subset: search it again
        candidates = subset_candidates(
            args.index or "",
            args.memory or "",
            args.prompt_embeddings,
            variant.memory_fraction,
            config["select"]["k"],
            config["index"],
            seed,
        )
    memory = read_embeddings(args.memory_embeddings, "--memory-embeddings")
    prompts = read_embeddings([args.prompt_embeddings], "--prompt-embeddings")

    def generator_of(prompt_id: int):
        return selection_generator(seed, prompt_id, variant.name)

    start = time.perf_counter()
    table = select_table(
        candidates,
        memory,
        prompts,
        variant.selector,
        n,
        variant.lam,
        device=device,
        generator_of=generator_of if variant.selector == "random" else None,
        batch_size=args.batch_prompts,
    )
    seconds = time.perf_counter() - start
    schema = pa.schema(
        [
            ("prompt_id", pa.int64()),
            ("step", pa.int32()),
            ("memory_id", pa.int64()),
            ("variance", pa.float32()),
        ]
    )
    extra = {
        "method": variant.name,
        "selector": variant.selector,
        "lam": variant.lam,
        "memory_fraction": variant.memory_fraction,
        "n": n,
        "k": int(candidates.memory_ids.shape[1]),
        "prompts": int(candidates.memory_ids.shape[0]),
        "seconds": round(seconds, 3),
    }
    with AtomicGroup() as out:
        out.write_parquet(
            args.out, pa.Table.from_pandas(table, schema=schema, preserve_index=False)
        )
        out.write_run_json(args.out, config, seed=seed, device=str(device), extra=extra)
