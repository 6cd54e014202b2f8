"""Atomic writes: single files, and a stage's outputs renamed together.

Every artifact is written to a temporary file in the destination directory and renamed into
place, so a killed job never leaves a half-written file that looks complete; a stage's outputs
and their ``run.json`` records are renamed together (:class:`AtomicGroup`), so a failed stage
leaves the previous set untouched. Artifacts get the permissions of a plain write (0666/0777
minus the umask). No pickle: arrays are .npy (``allow_pickle=False``), tables Parquet, metadata
JSON. What a record holds is :mod:`testtime.provenance`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from testtime.provenance import provenance, run_json_path


def _umask() -> int:
    """The process umask (read from /proc where possible: no window with a changed umask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output(
    target: str | os.PathLike[str], *, is_dir: bool = False, flag: str = "output"
) -> None:
    """ValueError when ``target`` exists as the other kind (a directory where a file goes).

    Stages call it on their output paths before any work, so the mistake costs nothing.
    """
    target = Path(target)
    if not is_dir and target.is_dir():
        raise ValueError(f"{flag} {str(target)!r} is a directory, expected a file path")
    if is_dir and target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {str(target)!r} is a file, expected a directory path")


def _temp_sibling(target: Path, is_dir: bool) -> Path:
    """A fresh temporary beside ``target`` with the permissions a plain write would get.

    ``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask; the temporary becomes the
    artifact, so it gets 0666/0777 minus the umask like any file made with ``open()``/``mkdir``.
    """
    check_output(target, is_dir=is_dir)
    prefix, suffix = f".{target.name}.", ".tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
            os.chmod(tmp, 0o777 & ~_umask())
            return tmp
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    except OSError as exc:  # name the output, not a temporary's random name
        raise _naming(exc, target) from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` (same class and errno) naming ``target``'s path."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(target))


def _settle(path: Path) -> None:
    """fsync a staged file, or every file of a staged directory, and give what a library wrote
    inside a staged directory the umask's permissions too (safetensors writes 0600)."""
    if path.is_file():
        files = [path]
    else:
        mask = _umask()
        files = []
        for p in sorted(path.rglob("*")):
            if p.is_symlink():
                continue
            executable = p.is_dir() or p.stat().st_mode & 0o111
            os.chmod(p, (0o777 if executable else 0o666) & ~mask)
            if p.is_file():
                files.append(p)
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class AtomicGroup:
    """Several outputs written to temporaries and renamed into place together, or not at all.

    Stage every output with :meth:`path` (or the ``write_*`` helpers), then :meth:`commit`:
    nothing is renamed until every temporary is complete, so an exception while writing (a bad
    value, a full disk, a read-only directory) leaves all earlier outputs as they were. Commit
    first removes the provenance records being replaced (``*.run.json``, ``run.json``) and
    renames them last, so even a kill in the middle of the renames never leaves a new output
    beside an old record (at worst an output without its record). Use as a context manager:
    leaving the block normally commits, an exception discards.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary, target)

    def path(self, target: str | os.PathLike[str], *, is_dir: bool = False) -> Path:
        """A temporary to write ``target``'s content to (a directory with ``is_dir``)."""
        target = Path(target)
        if any(t == target for _, t in self._staged):
            raise ValueError(f"output {str(target)!r} is staged twice")
        tmp = _temp_sibling(target, is_dir)
        self._staged.append((tmp, target))
        return tmp

    def write_text(self, target: str | os.PathLike[str], text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def write_json(self, target: str | os.PathLike[str], obj: Any) -> None:
        self.write_text(target, dumps_json(obj))

    def save_npy(self, target: str | os.PathLike[str], array: np.ndarray) -> None:
        with open(self.path(target), "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    def write_parquet(self, target: str | os.PathLike[str], table: Any) -> None:
        import pyarrow.parquet as pq

        pq.write_table(_arrow_table(table), self.path(target))

    def write_run_json(
        self,
        output: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Stage ``<output>.run.json``; keywords go to :func:`provenance`."""
        path = run_json_path(output)
        self.write_json(path, provenance(config, **kwargs))
        return path

    def commit(self) -> None:
        for tmp, _ in self._staged:
            _settle(tmp)
        records = [(tmp, t) for tmp, t in self._staged if _is_record(t)]
        others = [(tmp, t) for tmp, t in self._staged if not _is_record(t)]
        for _, target in records:
            target.unlink(missing_ok=True)
        for tmp, target in others + records:
            if tmp.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        self._staged.clear()

    def discard(self) -> None:
        for tmp, _ in self._staged:
            _remove(tmp)
        self._staged.clear()

    def __enter__(self) -> AtomicGroup:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
            return
        last = self._staged[-1][1] if self._staged else None
        self.discard()
        if isinstance(exc, OSError) and exc.filename is None and last is not None:
            # a failed write (disk full, file too large) names no file: name the output that
            # was being written (outputs are staged right before they are written)
            raise _naming(exc, last) from exc


def _is_record(path: Path) -> bool:
    return path.name == "run.json" or path.name.endswith(".run.json")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and (with ``is_dir=True``) whole directories such as a saved HF model.
    On an exception the temporary is removed and ``path`` keeps its previous state.
    """
    with AtomicGroup() as group:
        yield group.path(path, is_dir=is_dir)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_json(obj: Any) -> str:
    """Indented, key-sorted JSON text; NaN and infinity are a ValueError (JSON has neither)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is rejected: JSON has no NaN)."""
    write_text(path, dumps_json(obj))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically save one array as .npy (no pickle)."""
    with AtomicGroup() as group:
        group.save_npy(path, array)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a .npy written by :func:`save_npy` (pickle disabled)."""
    return np.load(path, allow_pickle=False)


def _arrow_table(table: Any) -> Any:
    import pyarrow as pa

    return (
        table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
    )


def write_parquet(path: str | os.PathLike[str], table: Any) -> None:
    """Atomically write a pandas DataFrame or pyarrow Table as Parquet."""
    with AtomicGroup() as group:
        group.write_parquet(path, table)


def write_run_json(
    output: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``<output>.run.json`` (for a file) or ``<output>/run.json`` (for a directory).

    Keyword arguments go to :func:`provenance`. Returns the path written.
    """
    path = run_json_path(output)
    write_json(path, provenance(config, **kwargs))
    return path
