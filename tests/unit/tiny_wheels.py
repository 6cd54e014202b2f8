"""Tiny hand-made wheels and pinned corpus directories for the demo-corpus tests (offline).

A wheel here is what pip downloads: a zip with ``<name>-<version>.dist-info/{METADATA,WHEEL,
RECORD}`` and the distribution's files. :func:`pinned_corpus` turns wheels into a corpus
directory with the real :func:`testtime.corpus.pinned.assemble` (pip is not needed for that).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from testtime.corpus.pinned import assemble


def make_wheel(
    out: Path,
    name: str,
    version: str,
    description: str = "",
    files: Mapping[str, str] | None = None,
    requires: Iterable[str] = (),
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``out``. ``files`` maps member paths
    to text; a leading ``@/`` puts a file inside the ``.dist-info`` folder."""
    norm = re.sub(r"[-_.]+", "_", name)
    info = f"{norm}-{version}.dist-info"
    head = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    head += [f"Requires-Dist: {r}" for r in requires]
    members = {m.replace("@/", f"{info}/", 1): t for m, t in (files or {}).items()}
    members[f"{info}/METADATA"] = "\n".join(head) + f"\n\n{description}\n"
    members[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    members[f"{info}/RECORD"] = "".join(f"{m},,\n" for m in [*members, f"{info}/RECORD"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return path


def write_lock(path: Path, wheels: Iterable[Path]) -> Path:
    """A hash-pinned requirements file for ``wheels`` (``name==version --hash=sha256:...``)."""
    lines = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} --hash=sha256:{digest}\n")
    path.write_text("".join(lines))
    return path


def pinned_corpus(root: Path, wheels: list[Path]) -> Path:
    """``root/corpus``: the corpus directory of ``wheels``, as ``make install`` lays it out."""
    root.mkdir(parents=True, exist_ok=True)
    lock = write_lock(root / "corpus.txt", wheels)
    target = root / "corpus"
    assemble(sorted(wheels), lock, target)
    return target
