"""Load and validate the workflow config through the one JSON schema.

The schema (``testtime/schemas/config.schema.yaml``, linked as
``workflow/schemas/config.schema.yaml``) is the single source of truth for config keys:
Snakemake validates against it and every CLI command loads its config through
:func:`load_config`, which fills defaults, rejects unknown keys and checks the constraints a
schema cannot express (e.g. ``select.n <= select.k`` for nn). Errors name the offending key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("testtime") / "schemas" / "config.schema.yaml"))


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def load_schema() -> dict[str, Any]:
    """The config JSON schema as a dict."""
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Recursively insert schema defaults for missing object properties (in place)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _key_of(error: jsonschema.ValidationError) -> str:
    """Dotted key of the offending value (for an unknown key: its parent; the message names it)."""
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled.

    Raises :class:`ConfigError` naming the first bad key.

    >>> cfg = validate_config({"select": {"k": 50, "n": 10}})
    >>> cfg["select"]["lam"], cfg["name"]
    (1.0, 'demo')
    >>> validate_config({"select": {"lam": 0}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    testtime.config.ConfigError: config key 'select.lam': 0 is less than or equal to ...
    """
    schema = load_schema()
    cfg = copy.deepcopy(dict(config))
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config key '{_key_of(err)}': {err.message}")
    _check_cross_field(cfg)
    return cfg


def _check_cross_field(cfg: dict[str, Any]) -> None:
    split = cfg["data"]["split"]
    total = split["pretrain"] + split["memory"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"config key 'data.split': fractions must sum to 1, got {total:g}")
    sel = cfg["select"]
    if "nn" in sel["methods"] and sel["n"] > sel["k"]:
        raise ConfigError(
            f"config key 'select.n': nn selects distinct candidates, so n={sel['n']} "
            f"must not exceed select.k={sel['k']}"
        )
    bad_eval = [s for s in cfg["finetune"]["eval_at"] if s > sel["n"]]
    if bad_eval:
        raise ConfigError(
            f"config key 'finetune.eval_at': steps {bad_eval} exceed select.n={sel['n']}"
        )
    model = cfg["model"]
    if model["source"] == "train":
        if model["n_embd"] % model["n_head"]:
            raise ConfigError(
                f"config key 'model.n_head': {model['n_head']} does not divide "
                f"model.n_embd={model['n_embd']}"
            )
        if cfg["data"]["seq_len"] > model["n_positions"]:
            raise ConfigError(
                f"config key 'data.seq_len': {cfg['data']['seq_len']} exceeds the model "
                f"context model.n_positions={model['n_positions']}"
            )
        check_prompt_fits(cfg["data"], model["n_positions"], "model.n_positions")
    elif not model["name_or_path"]:
        raise ConfigError(
            "config key 'model.name_or_path': required when model.source is 'pretrained'"
        )
    if cfg["data"]["source"] == "jsonl" and not cfg["data"]["jsonl"]["path"]:
        raise ConfigError("config key 'data.jsonl.path': required when data.source is 'jsonl'")


def check_prompt_fits(data: Mapping[str, Any], context: int, context_name: str) -> None:
    """ConfigError unless a test prompt fits the model context of ``context`` tokens.

    ``same`` scores ``data.eval_tokens``; ``split`` feeds ``data.prompt_tokens`` as context and
    scores the next ``data.eval_tokens``, so both must fit in one forward pass.

    >>> check_prompt_fits({"protocol": "split", "prompt_tokens": 128, "eval_tokens": 256},
    ...                   256, "model.n_positions")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    testtime.config.ConfigError: config keys 'data.prompt_tokens' + 'data.eval_tokens': ...
    """
    if data["protocol"] == "split":
        total = data["prompt_tokens"] + data["eval_tokens"]
        if total > context:
            raise ConfigError(
                "config keys 'data.prompt_tokens' + 'data.eval_tokens': "
                f"{data['prompt_tokens']} + {data['eval_tokens']} = {total} tokens exceed the "
                f"model context of {context} ({context_name}) under data.protocol 'split'"
            )
    elif data["eval_tokens"] > context:
        raise ConfigError(
            f"config key 'data.eval_tokens': {data['eval_tokens']} exceeds the model context "
            f"of {context} ({context_name})"
        )


def load_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a YAML config file, apply dotted-key ``overrides``, validate and fill defaults."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    with open(p, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_config(raw)
