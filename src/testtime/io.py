"""Atomic writes and provenance records.

Every artifact is written to a temporary file in the destination directory and renamed into
place, so a killed job never leaves a half-written file that looks complete. No pickle: arrays
are .npy (``allow_pickle=False``), tables Parquet, metadata JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and (with ``is_dir=True``) whole directories such as a saved HF model.
    On an exception the temporary is removed and ``path`` keeps its previous state.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is rejected: JSON has no NaN)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically save one array as .npy (no pickle)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a .npy written by :func:`save_npy` (pickle disabled)."""
    return np.load(path, allow_pickle=False)


def write_parquet(path: str | os.PathLike[str], table: Any) -> None:
    """Atomically write a pandas DataFrame or pyarrow Table as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


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


def write_run_json(
    output: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``<output>.run.json`` (for a file) or ``<output>/run.json`` (for a directory).

    Keyword arguments go to :func:`provenance`. Returns the path written.
    """
    out = Path(output)
    path = out / "run.json" if out.is_dir() else out.with_name(out.name + ".run.json")
    write_json(path, provenance(config, **kwargs))
    return path
