#!/usr/bin/env python3
"""Save and restore the mtimes of a workflow's outputs around a tool that rewrites files.

`dvc commit` moves each out into the DVC cache and puts a fresh copy back, which gives every
file a new mtime; Snakemake then finds inputs newer than their outputs and would rerun the whole
workflow. The contents are unchanged, so putting the old mtimes back is exact:

    scripts/keep-mtimes.py save SNAPSHOT data results figures
    dvc commit --force
    scripts/keep-mtimes.py restore SNAPSHOT

Only paths whose size is unchanged get their mtime back; directories last, deepest first (a
restored file does not touch its directory, but the tool's rename did).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def save(snapshot: Path, roots: list[str]) -> None:
    """Write ``{path: [mtime_ns, size, is_dir]}`` of every path under ``roots`` to snapshot."""
    stamps: dict[str, list] = {}
    for root in map(Path, roots):
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                continue
            st = path.stat()
            stamps[str(path)] = [st.st_mtime_ns, st.st_size, path.is_dir()]
    snapshot.write_text(json.dumps(stamps))


def restore(snapshot: Path) -> int:
    """Put the saved mtimes back; returns how many paths were restored."""
    stamps = json.loads(snapshot.read_text())
    files = [(p, s) for p, s in stamps.items() if not s[2]]
    dirs = sorted(((p, s) for p, s in stamps.items() if s[2]), key=lambda x: -x[0].count(os.sep))
    restored = 0
    for path, (mtime_ns, size, is_dir) in files + dirs:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not is_dir and st.st_size != size:
            continue
        os.utime(path, ns=(st.st_atime_ns, mtime_ns), follow_symlinks=False)
        restored += 1
    return restored


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("save", "restore"):
        print("usage: keep-mtimes.py save SNAPSHOT DIR... | restore SNAPSHOT", file=sys.stderr)
        return 2
    if argv[0] == "save":
        save(Path(argv[1]), argv[2:])
    else:
        restore(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
