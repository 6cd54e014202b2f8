"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import functools
import os
import re
import warnings
from typing import Any

#: libraries whose warnings, log lines and loading bars the own-prompt commands hide unless -v
NOISY_LIBRARIES = ("peft", "transformers", "torch", "sentence_transformers", "huggingface_hub")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that appends each option's default where it has one (not None, False or required)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False
        if not (unset or action.default == argparse.SUPPRESS or action.required):
            text += " (default: %(default)s)"
        return text


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


@functools.cache
def _schema_defaults() -> dict[str, Any]:
    from testtime.config import validate_config

    return validate_config({})


def schema_default(dotted: str) -> Any:
    """The workflow config schema's default for ``dotted`` (e.g. ``select.lam``): the CLI's
    defaults are the workflow's.

    >>> schema_default("select.n")
    20
    """
    from testtime.config import get_dotted

    return get_dotted(_schema_defaults(), dotted)


def schema_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, key: str, help: str, **kw
) -> None:
    """Add ``flag`` with the schema's default for the config ``key``, named in its help."""
    parser.add_argument(flag, default=schema_default(key), help=f"{help} ({key})", **kw)


def device(value: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda or cuda:N (checked before any loading)."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use auto, cpu, cuda or cuda:N")
    return value


def resolve_device_flag(name: str) -> Any:
    """:func:`testtime.device.resolve_device` with errors naming ``--device``."""
    from testtime.device import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise ValueError(str(exc).replace("config key 'device' is", "--device")) from exc


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the libraries' warnings, log lines and loading bars (hidden by default)",
    )


def quiet_libraries(verbose: bool) -> None:
    """Hide the warnings, log lines and loading bars of :data:`NOISY_LIBRARIES` (not testtime's
    own progress bars and notes) unless ``verbose``."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module=rf"(?:{'|'.join(NOISY_LIBRARIES)})(?:\.|$)")
    import logging

    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def warn_slow_bf16(device: Any, bf16: bool) -> None:
    """One stderr line when bf16 autocast would be emulated on this CPU (device.slow_cpu_bf16)."""
    import sys

    from testtime.device import slow_cpu_bf16

    message = slow_cpu_bf16(device, bf16)
    if message:
        print(message, file=sys.stderr)
