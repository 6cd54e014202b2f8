"""The ``testtime`` command line: one thin subcommand module per pipeline stage.

Each module in :data:`SUBCOMMANDS` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> None``; heavy imports happen inside ``run`` so ``testtime --help`` stays fast.
Errors that are the user's (bad config, bad input files) are ``ValueError`` / ``FileNotFoundError``
and are printed as one line with exit status 2 instead of a traceback; so are the environment's
(``OSError``: a full disk, a read-only or missing directory), naming the path.

Before a stage runs, :func:`main` fixes its CPU thread count (:data:`NUMERIC_THREADS`) and, for a
stage that may use a GPU, takes a GPU slot (:mod:`testtime.gpu_slots`) before CUDA starts.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = (
    "corpus",
    "tokenizer",
    "chunk",
    "pretrain",
    "embed",
    "index",
    "candidates",
    "select",
    "finetune",
    "aggregate",
    "report",
    "bench",
    "memory",
    "generate",
    "plan",
)

# CPU threads of the numerical libraries (torch, faiss through OpenMP, MKL) per stage, fixed
# here, not taken from the job: the job's CPU allocation (--cores, a profile's set-threads,
# Slurm's CPUs) changes the float summation order, so it would change numbers between machines
# and profiles. The values are the ones the reference runs used (README, tests: 2 cores), so
# fixing them changed no published number. A stage not listed uses what the job gives it.
NUMERIC_THREADS = {
    "pretrain": 2,
    "embed": 2,
    "index": 2,
    "candidates": 2,
    "select": 1,
    "finetune": 1,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testtime",
        description="Test-time fine-tuning with SIFT data selection (one subcommand per stage).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"testtime.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def describe(exc: BaseException) -> str:
    """One line for a user-facing error: an OSError as its reason and path, else its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        paths = [str(exc.filename)] + ([str(exc.filename2)] if exc.filename2 else [])
        return f"{exc.strerror}: " + " -> ".join(repr(p) for p in paths)
    return " ".join(str(exc).split()) or type(exc).__name__


def pin_threads(command: str) -> None:
    """Fix the numerical libraries' thread count for ``command`` (:data:`NUMERIC_THREADS`)."""
    threads = NUMERIC_THREADS.get(command)
    if threads is None:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # read when torch / faiss load their OpenMP runtimes
    if "torch" in sys.modules:  # already loaded (an in-process caller): set it directly
        sys.modules["torch"].set_num_threads(threads)


def claim_gpu(args: argparse.Namespace) -> None:
    """Take a GPU slot for a stage whose config slice names a device (see gpu_slots.claim)."""
    from testtime import gpu_slots

    if not os.environ.get(gpu_slots.SLOTS_ENV) or not hasattr(args, "config_json"):
        return
    from testtime.cli._common import load_cli_config

    device = load_cli_config(args).get("device")
    if device is not None:
        gpu_slots.claim(device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pin_threads(args.command)
        claim_gpu(args)
        args._run(args)
    except (ValueError, OSError) as exc:
        print(f"testtime {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
