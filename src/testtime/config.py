"""Load and validate the workflow config through the one JSON schema.

The schema (``testtime/schemas/config.schema.yaml``, linked as
``workflow/schemas/config.schema.yaml``) is the single source of truth for config keys:
Snakemake validates against it and every CLI command loads its config through
:func:`load_config`, which fills defaults, rejects unknown keys and checks the constraints a
schema cannot express (e.g. ``select.n <= select.k`` for nn). Errors name the offending key.
Numbers must be finite (no NaN or infinity) and integers must be ints (``16``, not ``16.0``).

Workflow jobs do not read a config file: each rule passes the slice of the validated config it
declares (:func:`config_slice_json`) as ``--config-json``, so a job runs with exactly the values
it was scheduled with and reruns when, and only when, one of them changes.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
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


def _is_int(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# JSON Schema calls 16.0 an integer; Python code indexing with it fails later, so integers must
# be ints (YAML `16`, not `16.0`).
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


def _key_of(error: jsonschema.ValidationError) -> str:
    """Dotted key of the offending value (for an unknown key: its parent; the message names it)."""
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _check_finite(node: Any, path: str = "") -> None:
    """ConfigError naming the first NaN or infinite number anywhere in ``node``."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(
            f"config key '{path or '<top level>'}': must be a finite number, got {node}"
        )
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _check_finite(value, f"{path}.{i}" if path else str(i))


def validate_config(config: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled.

    Raises :class:`ConfigError` naming the first bad key. With ``partial=True`` the config is a
    slice of a validated config (the sections a workflow job may read, see :func:`config_slice`):
    nothing is filled in, present keys are checked, and a missing key stays missing, so a stage
    reading a section its rule did not declare fails instead of silently seeing a default.

    >>> cfg = validate_config({"select": {"k": 50, "n": 10}})
    >>> cfg["select"]["lam"], cfg["name"]
    (1.0, 'demo')
    >>> validate_config({"select": {"lam": 0}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    testtime.config.ConfigError: config key 'select.lam': 0 is less than or equal to ...
    >>> sorted(validate_config({"select": {"k": 50}}, partial=True)["select"])
    ['k']
    """
    schema = load_schema()
    cfg = copy.deepcopy(dict(config))
    _check_finite(cfg)
    if not partial:
        _fill_defaults(cfg, schema)
    errors = sorted(_Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config key '{_key_of(err)}': {err.message}")
    _check_cross_field(cfg)
    return cfg


def get_dotted(mapping: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Value at a dotted path of nested mappings; ``default`` when any part is missing.

    >>> get_dotted({"meta": {"pile_set_name": "Github"}}, "meta.pile_set_name")
    'Github'
    >>> get_dotted({"meta": None}, "meta.pile_set_name") is None
    True
    """
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


_MISSING = object()


def _has(cfg: Mapping[str, Any], *dotted: str) -> bool:
    """Whether every dotted key is present (always, after defaults; maybe not in a slice); a
    key present with the value None counts as present."""
    return all(get_dotted(cfg, key, _MISSING) is not _MISSING for key in dotted)


def _check_cross_field(cfg: dict[str, Any]) -> None:
    """Constraints between keys; in a slice, only those whose keys are all present."""
    if _has(cfg, "data.split"):
        split = cfg["data"]["split"]
        total = split["pretrain"] + split["memory"] + split["test"]
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"config key 'data.split': fractions must sum to 1, got {total:g}")
    if _has(cfg, "select.methods", "select.n", "select.k"):
        sel = cfg["select"]
        if "nn" in sel["methods"] and sel["n"] > sel["k"]:
            raise ConfigError(
                f"config key 'select.n': nn selects distinct candidates, so n={sel['n']} "
                f"must not exceed select.k={sel['k']}"
            )
    if _has(cfg, "finetune.eval_at", "select.n"):
        n = cfg["select"]["n"]
        bad_eval = [s for s in cfg["finetune"]["eval_at"] if s > n]
        if bad_eval:
            raise ConfigError(
                f"config key 'finetune.eval_at': steps {bad_eval} exceed select.n={n}"
            )
    if _has(cfg, "model.source", "model.n_embd", "model.n_head", "model.n_positions"):
        model = cfg["model"]
        if model["source"] == "train":
            if model["n_embd"] % model["n_head"]:
                raise ConfigError(
                    f"config key 'model.n_head': {model['n_head']} does not divide "
                    f"model.n_embd={model['n_embd']}"
                )
            if _has(cfg, "data.seq_len") and cfg["data"]["seq_len"] > model["n_positions"]:
                raise ConfigError(
                    f"config key 'data.seq_len': {cfg['data']['seq_len']} exceeds the model "
                    f"context model.n_positions={model['n_positions']}"
                )
            prompt_keys = ("data.protocol", "data.prompt_tokens", "data.eval_tokens")
            if _has(cfg, *prompt_keys):
                check_prompt_fits(cfg["data"], model["n_positions"], "model.n_positions")
    if _has(cfg, "model.source", "model.name_or_path"):
        if cfg["model"]["source"] == "pretrained" and not cfg["model"]["name_or_path"]:
            raise ConfigError(
                "config key 'model.name_or_path': required when model.source is 'pretrained'"
            )
    if _has(cfg, "data.source", "data.hf.prompt_split"):
        if cfg["data"]["hf"]["prompt_split"] is not None and cfg["data"]["source"] != "hf":
            raise ConfigError(
                "config key 'data.hf.prompt_split': sources per role need data.source 'hf', "
                f"got {cfg['data']['source']!r}"
            )
    if _has(cfg, "data.min_eval_tokens", "data.eval_tokens"):
        low = cfg["data"]["min_eval_tokens"]
        if low is not None and low > cfg["data"]["eval_tokens"]:
            raise ConfigError(
                f"config key 'data.min_eval_tokens': {low} exceeds data.eval_tokens="
                f"{cfg['data']['eval_tokens']}"
            )
    if _has(cfg, "data.source", "data.jsonl.path"):
        if cfg["data"]["source"] == "jsonl" and not cfg["data"]["jsonl"]["path"]:
            raise ConfigError("config key 'data.jsonl.path': required when data.source is 'jsonl'")


def config_slice(config: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The part of ``config`` under each dotted key (whole sections or single values).

    >>> config_slice({"seed": 1, "data": {"seq_len": 8, "source": "demo"}, "x": 2},
    ...              ["seed", "data.seq_len"])
    {'seed': 1, 'data': {'seq_len': 8}}
    """
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src: Any = config
        dst = out
        for part in parents:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[leaf] = copy.deepcopy(src[leaf])
    return out


def config_slice_json(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """:func:`config_slice` as compact, key-sorted JSON (what a workflow job is given)."""
    return json.dumps(config_slice(config, keys), sort_keys=True, allow_nan=False)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"config file {str(path)!r}{where}: invalid YAML: {problem}")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML config file; ConfigError (naming the file and line) otherwise."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(p)!r} {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text: {exc.reason}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(p, exc) from exc
    if node is None:
        raise ConfigError(
            f"config file {str(p)!r} is empty; give the keys to change (or copy config/config.yaml)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {str(p)!r} line {node.start_mark.line + 1}: expected a mapping of "
            f"config keys, got a {type(raw).__name__}"
        )
    return raw


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
    raw = read_config_file(path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_config(raw)


def load_config_json(text: str) -> dict[str, Any]:
    """Validate a config slice given as JSON text (``--config-json``, written by the workflow)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config-json: invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--config-json: expected a JSON object, got {type(raw).__name__}")
    return validate_config(raw, partial=True)
