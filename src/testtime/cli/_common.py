"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="workflow config YAML (validated)")


def load_cli_config(args: argparse.Namespace) -> dict[str, Any]:
    from testtime.config import load_config

    return load_config(args.config)


def set_threads(config: dict[str, Any], rule_threads: int | None = None) -> None:
    """Honour config ``threads`` (0 = the job's threads, from --threads or the environment)."""
    import torch

    n = config.get("threads") or rule_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
