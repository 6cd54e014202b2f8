"""`testtime pretrain` (placeholder, to be implemented)."""

from __future__ import annotations

import argparse

HELP = "pretrain stage (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    raise NotImplementedError("testtime pretrain is not implemented yet")
