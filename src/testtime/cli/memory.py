"""`testtime memory build|info`: turn your documents into a memory directory (or inspect one).

Example::

    testtime memory build --input docs/ --model minilm --tokenizer path/to/model \\
        --seq-len 256 --out mem/
    testtime memory build --input more.jsonl --model minilm --tokenizer path/to/model \\
        --seq-len 256 --out mem/            # appends; old sequences are not re-embedded
    testtime memory info mem/
"""

from __future__ import annotations

import argparse

HELP = "build (or append to) a memory of your documents: sequences, embeddings, Faiss index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build or append to a memory directory")
    b.add_argument(
        "--input",
        required=True,
        help="a .jsonl/.parquet file with a text column, a directory of .txt/.md files, or a "
        "Hugging Face dataset name (name or name:config)",
    )
    b.add_argument("--model", default="minilm", help="embedding model: minilm or a hub id/dir")
    b.add_argument(
        "--tokenizer", required=True, help="the target model (dir or hub id) whose tokenizer cuts"
    )
    b.add_argument("--seq-len", type=int, default=256, help="tokens per memory sequence")
    b.add_argument("--out", required=True, help="memory directory (created or appended to)")
    b.add_argument("--text-column", default="text", help="text column of a file or dataset")
    b.add_argument("--split", default="train", help="split of a Hugging Face dataset")
    b.add_argument("--index", default="flat", choices=["flat", "ivf", "ivfpq"], help="Faiss type")
    b.add_argument("--nlist", type=int, default=256, help="IVF cells (ivf, ivfpq)")
    b.add_argument("--nprobe", type=int, default=16, help="IVF cells probed per query")
    b.add_argument("--pq-m", type=int, default=16, help="PQ sub-quantisers (ivfpq)")
    b.add_argument("--embed-max-length", type=int, default=256, help="embedder truncation")
    b.add_argument("--batch-size", type=int, default=64, help="texts per embedding batch")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    b.add_argument("--seed", type=int, default=0, help="seed of IVF/PQ training")
    i = sub.add_parser("info", help="print a memory's manifest")
    i.add_argument("path", help="memory directory")


def run(args: argparse.Namespace) -> None:
    import json

    from testtime.memory import Memory, build_memory

    if args.memory_command == "info":
        memory = Memory.open(args.path)
        print(json.dumps(memory.manifest, indent=2, sort_keys=True))
        return
    from testtime.device import resolve_device

    manifest = build_memory(
        args.input,
        args.out,
        tokenizer_name=args.tokenizer,
        embedder=args.model,
        seq_len=args.seq_len,
        text_column=args.text_column,
        split=args.split,
        index={"type": args.index, "nlist": args.nlist, "nprobe": args.nprobe, "pq_m": args.pq_m},
        embed_batch_size=args.batch_size,
        embed_max_length=args.embed_max_length,
        device=str(resolve_device(args.device)),
        seed=args.seed,
    )
    c = manifest["counts"]
    print(
        f"memory {args.out}: {c['sequences']} sequences ({c['tokens']} tokens) from "
        f"{c['documents']} documents, generation {manifest['generation']}, "
        f"fingerprint {manifest['fingerprint']}"
    )
