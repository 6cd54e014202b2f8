"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from typing import Any


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="workflow config YAML (validated)")


def load_cli_config(args: argparse.Namespace) -> dict[str, Any]:
    from testtime.config import load_config

    return load_config(args.config)
