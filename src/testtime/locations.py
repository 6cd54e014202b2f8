"""Model locations: a local directory or a hub id, decided once for every loader.

The tokenizer, causal-LM and embedding loaders all take ``path_or_id``; a local path must be an
existing directory and is loaded with ``local_files_only=True``, since ``from_pretrained`` would
otherwise take a missing directory for a hub id and go online.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class ModelLocation(NamedTuple):
    """Where ``from_pretrained`` loads from: ``where`` (a directory path or a hub id) and
    ``local`` (pass it as ``local_files_only``)."""

    where: str
    local: bool


def looks_local(path_or_id: str | os.PathLike[str]) -> bool:
    """Whether a model location is a local path rather than a hub id (``name``, ``org/name``).

    Absolute, ``./``, ``../`` and ``~`` paths, paths with two or more parts, and anything that
    exists on disk are local; a hub id never starts with ``/``, ``.`` or ``~``.

    >>> [looks_local(s) for s in ("gpt2", "microsoft/phi-2", "./gpt2", "data/demo/tokenizer")]
    [False, False, True, True]
    """
    s = os.fspath(path_or_id)
    return (
        isinstance(path_or_id, Path)
        or s.startswith(("/", ".", "~"))
        or s.count("/") >= 2
        or os.sep != "/"
        and os.sep in s
        or os.path.exists(s)
    )


def require_local_dir(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as a string if it is an existing directory; FileNotFoundError naming ``what``.

    Used before handing a local path to ``from_pretrained``, which would otherwise treat a
    missing directory as a hub id and go online.
    """
    p = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(p):
        state = "is not a directory" if os.path.exists(p) else "does not exist"
        raise FileNotFoundError(
            f"{what} {os.fspath(path)!r} {state} (local path, not looked up online)"
        )
    return p


def resolve_model_location(
    path_or_id: str | os.PathLike[str], what: str, *, local: bool = False
) -> ModelLocation:
    """The location to load ``path_or_id`` from.

    A local path (``local=True``, or one that :func:`looks_local`) must be an existing directory
    (FileNotFoundError naming ``what`` otherwise) and comes back user-expanded; a hub id comes
    back unchanged.

    >>> resolve_model_location("gpt2", "--model")
    ModelLocation(where='gpt2', local=False)
    >>> resolve_model_location("./no_such_model", "--model")
    Traceback (most recent call last):
    FileNotFoundError: --model './no_such_model' does not exist (local path, not looked up online)
    """
    if local or looks_local(path_or_id):
        return ModelLocation(require_local_dir(path_or_id, what), True)
    return ModelLocation(str(path_or_id), False)
