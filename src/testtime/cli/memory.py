"""`testtime memory build|info`: turn your documents into a memory directory (or inspect one).

Defaults (``--seq-len``, ``--embed-max-length``, ``--index`` settings, ...) are the workflow
config schema's, shown by ``--help``. Example::

    testtime memory build --input docs/ --model minilm --tokenizer path/to/model \\
        --seq-len 256 --out mem/
    testtime memory build --input more.jsonl --model minilm --tokenizer path/to/model \\
        --seq-len 256 --out mem/            # appends; old sequences are not re-embedded
    testtime memory info mem/
"""

from __future__ import annotations

import argparse

from testtime.cli._common import (
    DefaultsHelpFormatter,
    add_verbose_argument,
    device,
    schema_option,
)

HELP = "build (or append to) a memory of your documents: sequences, embeddings, Faiss index"
SUFFIXES = ".txt,.text,.md,.markdown,.mdown,.rst,.adoc,.org,.tex"  # memory.TEXT_SUFFIXES


def _suffixes(value: str) -> tuple[str, ...]:
    out = tuple("." + s.strip().lower().lstrip(".") for s in value.split(",") if s.strip())
    if not out:
        raise argparse.ArgumentTypeError("give at least one suffix, e.g. .txt,.md")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    b = sub.add_parser(
        "build",
        help="build or append to a memory directory",
        formatter_class=DefaultsHelpFormatter,
        epilog="Defaults are the workflow config schema's (data.seq_len, embed.*, index.*).",
    )
    b.add_argument(
        "--input",
        required=True,
        help="a .jsonl/.parquet file with a text column, a text file, a directory of text files "
        "(see --suffixes), or a Hugging Face dataset name (name or name:config)",
    )
    schema_option(b, "--model", "embed.model", "embedding model: minilm or a dir")
    b.add_argument(
        "--tokenizer", required=True, help="the target model (dir or hub id) whose tokenizer cuts"
    )
    schema_option(b, "--seq-len", "data.seq_len", "tokens per sequence", type=int)
    b.add_argument("--out", required=True, help="memory directory (created or appended to)")
    b.add_argument("--text-column", default="text", help="text column of a file or dataset")
    b.add_argument(
        "--source-column",
        default=None,
        help="column naming each document (default: the first of source, title, path, url, "
        "name, id present)",
    )
    b.add_argument("--encoding", default="utf-8", help="text encoding of the input files")
    b.add_argument(
        "--suffixes", type=_suffixes, default=SUFFIXES, help="a directory's files to read"
    )
    b.add_argument("--split", default="train", help="split of a Hugging Face dataset")
    schema_option(b, "--index", "index.type", "Faiss index type", choices=["flat", "ivf", "ivfpq"])
    schema_option(b, "--nlist", "index.nlist", "IVF cells", type=int)
    schema_option(b, "--nprobe", "index.nprobe", "IVF cells probed", type=int)
    schema_option(b, "--pq-m", "index.pq_m", "PQ sub-quantisers", type=int)
    schema_option(b, "--embed-max-length", "embed.max_length", "embedder truncation", type=int)
    schema_option(b, "--batch-size", "embed.batch_size", "texts per embedding batch", type=int)
    b.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    b.add_argument("--seed", type=int, default=0, help="seed of IVF/PQ training")
    b.add_argument(
        "--lock-timeout",
        type=float,
        default=600.0,
        help="seconds to wait while another build writes the same memory",
    )
    add_verbose_argument(b)
    i = sub.add_parser("info", help="print a memory's manifest (JSON)")
    i.add_argument("path", help="memory directory")


def run(args: argparse.Namespace) -> None:
    import json

    from testtime.cli._common import quiet_libraries, resolve_device_flag

    if args.memory_command == "info":
        from testtime.memory import Memory

        memory = Memory.open(args.path)
        print(json.dumps(memory.manifest, indent=2, sort_keys=True))
        return
    quiet_libraries(args.verbose)
    from testtime.memory import build_memory

    suffixes = _suffixes(args.suffixes) if isinstance(args.suffixes, str) else args.suffixes
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
        device=str(resolve_device_flag(args.device)),
        seed=args.seed,
        encoding=args.encoding,
        suffixes=suffixes,
        source_column=args.source_column,
        lock_timeout=args.lock_timeout,
        note=print,
    )
    c = manifest["counts"]
    print(
        f"memory {args.out}: {c['sequences']} sequences ({c['tokens']} tokens) from "
        f"{c['documents']} documents, generation {manifest['generation']}, "
        f"fingerprint {manifest['fingerprint']}"
    )
