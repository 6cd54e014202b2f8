"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from typing import Any


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="workflow config YAML (validated, defaults filled)")
    group.add_argument(
        "--config-json",
        help="the config sections this stage may read, as JSON (how workflow rules pass them)",
    )


def load_cli_config(args: argparse.Namespace) -> dict[str, Any]:
    from testtime.config import load_config, load_config_json

    if args.config_json is not None:
        return load_config_json(args.config_json)
    return load_config(args.config)
