"""`testtime corpus` (placeholder, to be implemented)."""

from __future__ import annotations

import argparse

HELP = "corpus stage (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    raise NotImplementedError("testtime corpus is not implemented yet")
