"""Provenance records: what produced a result (argv, versions, config hash, seed, device).

Every stage writes :func:`provenance` as ``<output>.run.json`` (a file output) or
``<dir>/run.json`` (a directory output) beside its result, through
:meth:`testtime.io.AtomicGroup.write_run_json` so that output and record are renamed together.
This module only builds records; writing them is :mod:`testtime.io`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

PROVENANCE_PACKAGES = (
    "testtime",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "faiss-cpu",
    "numpy",
    "pyarrow",
    "sentence-transformers",
    "mathematics-dataset",
)


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a resolved config (sorted-key JSON, sha256, 16 hex digits)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution name (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(
    config: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    device: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record written as run.json beside every result."""
    record: dict[str, Any] = {
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "seed": seed,
        "device": device,
    }
    if config is not None:
        record["config_hash"] = config_hash(config)
        record["config"] = dict(config)
    if extra:
        record.update(extra)
    return record


def run_json_path(output: str | os.PathLike[str]) -> Path:
    """Where the provenance record of ``output`` goes: ``<dir>/run.json`` or ``<file>.run.json``."""
    out = Path(output)
    return out / "run.json" if out.is_dir() else out.with_name(out.name + ".run.json")
