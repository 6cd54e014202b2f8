"""The demo corpus's own pinned distributions: ``requirements/corpus.txt`` -> a corpus directory.

The Pile-CC and FreeLaw domains of the demo (:mod:`testtime.corpus.demo`) read package
descriptions and licence files. They read them from a directory of their own, built from a
hash-pinned list of distribution files, not from the project's environment: adding, removing
or moving one of testtime's dependencies changes no document.

``make install`` runs ``python -m testtime.corpus install requirements/corpus.txt .corpus``:
pip downloads each pinned file (``--no-deps``, hashes checked, four pip processes at once),
builds the two sdists into wheels (setuptools pinned by ``requirements/corpus-build.txt``), and
from every wheel extracts only what the demo reads (:func:`is_corpus_member`: its
``.dist-info`` folder and licence files) into ``<dir>/site``, laid out as in ``site-packages``.
``<dir>/manifest.json`` lists the distributions and their files; the directory is built beside
the target and renamed into place, so an interrupted install leaves the previous corpus or
none. Nothing is installed or importable from there: torch's 190 MB wheel yields its licence
files and METADATA.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from importlib.metadata import PathDistribution
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

MANIFEST = "manifest.json"
SITE = "site"
SDIST_SUFFIXES = (".tar.gz", ".zip")
LICENCE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|COPYRIGHT)", re.IGNORECASE)
EXCLUDED_DIRS = frozenset({"test", "tests", "site-packages", "dist-packages", "__pycache__"})
INSTALL_HINT = "run `make install` (it builds the directory from requirements/corpus.txt)"


class Pinned(NamedTuple):
    """One distribution of a corpus directory: name, version, ``.dist-info`` folder and the
    members extracted from its wheel (paths relative to ``<dir>/site``)."""

    name: str
    version: str
    dist_info: str
    members: list[str]


def is_corpus_member(member: str) -> bool:
    """Whether a wheel member is read by the demo: ``*.dist-info/*`` or a licence file.

    Licence files are those :func:`testtime.corpus.demo.free_law` reads from a RECORD: the
    name matches :data:`LICENCE_NAME` and no folder on the way is a test suite.

    >>> [is_corpus_member(m) for m in ("a-1.dist-info/METADATA", "a/LICENSE", "a/tests/COPYING")]
    [True, True, False]
    >>> is_corpus_member("a/core.py")
    False
    """
    parts = PurePosixPath(member).parts
    if not parts or member.endswith("/"):
        return False
    if parts[0].endswith(".dist-info"):
        return True
    return bool(LICENCE_NAME.match(parts[-1])) and not EXCLUDED_DIRS.intersection(parts[:-1])


def _safe_member(member: str) -> PurePosixPath:
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"wheel member {member!r} would land outside the corpus directory")
    return path


def extract_wheel(wheel: Path, site: Path) -> Pinned:
    """Extract the corpus members of ``wheel`` into ``site``; its :class:`Pinned` entry."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if is_corpus_member(n))
        infos = sorted({PurePosixPath(n).parts[0] for n in names if ".dist-info/" in n})
        if len(infos) != 1:
            raise ValueError(f"{wheel.name}: expected one .dist-info folder, found {infos}")
        for name in names:
            target = site / _safe_member(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    meta = PathDistribution(site / infos[0]).metadata
    return Pinned(meta["Name"], meta["Version"], infos[0], names)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env)


def _pip_download_parallel(lock: Path, dest: Path, jobs: int) -> None:
    """``pip download --no-deps --require-hashes -r lock`` split over ``jobs`` pip processes
    (round-robin over the lock's lines, one entry per line; option lines are not supported):
    each pinned file costs an index round trip."""
    lines = [ln for ln in lock.read_text().splitlines() if ln.strip() and ln[0] not in "#-"]
    chunks = [lines[i::jobs] for i in range(jobs) if lines[i::jobs]]
    procs = []
    for i, chunk in enumerate(chunks):
        part = dest / f".lock-{i}.txt"
        part.write_text("\n".join(chunk) + "\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        procs.append(subprocess.Popen([*cmd, "--require-hashes", "-r", str(part), "-d", str(dest)]))
    codes = [proc.wait() for proc in procs]
    for part in dest.glob(".lock-*.txt"):
        part.unlink()
    if any(codes):
        raise subprocess.CalledProcessError(max(codes), f"pip download -r {lock}")


def download(
    lock: Path, dest: Path, build_constraints: Path | None = None, jobs: int = 4
) -> list[Path]:
    """pip-download the files pinned by ``lock`` into ``dest``; sdists are built into wheels.

    ``build_constraints`` pins the build backend used for sdists (their METADATA is generated
    by it). Returns the downloaded files, sorted; the wheels built from sdists are in
    ``dest/built``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    _pip_download_parallel(lock, dest, jobs)
    files = sorted(f for f in dest.iterdir() if f.is_file())
    sdists = [f for f in files if f.name.endswith(SDIST_SUFFIXES)]
    if sdists:
        env = dict(os.environ)
        if build_constraints is not None:
            env["PIP_CONSTRAINT"] = str(build_constraints.resolve())
        _pip("wheel", "--quiet", "--no-deps", "-w", str(dest / "built"), *map(str, sdists),
             env=env)  # fmt: skip
    return files


def assemble(files: list[Path], lock: Path, target: Path) -> list[Pinned]:
    """Write the corpus directory ``target`` from downloaded ``files`` (wheels; sdists through
    their built wheels in ``built/`` beside them). Replaces ``target`` only when complete."""
    target = target.resolve()
    staging = target.with_name(f"{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    wheels = [f for f in files if f.suffix == ".whl"]
    if any(f.name.endswith(SDIST_SUFFIXES) for f in files):
        wheels += sorted((files[0].parent / "built").glob("*.whl"))
    pinned = sorted((extract_wheel(w, staging / SITE) for w in wheels), key=lambda p: p[2])
    manifest = {
        "lock": lock.name,
        "lock_sha256": _sha256(lock),
        "files": {f.name: _sha256(f) for f in files},
        "distributions": [p._asdict() for p in pinned],
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    old = target.with_name(f"{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return pinned


def install(lock: Path, target: Path, build_constraints: Path | None = None) -> list[Pinned]:
    """Build the corpus directory ``target`` from the hash-pinned requirements file ``lock``."""
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testtime-corpus-") as tmp:
        return assemble(download(lock, Path(tmp), build_constraints), lock, target)


def load_manifest(corpus_dir: Path) -> dict[str, Any]:
    """The manifest of ``corpus_dir``, after checking every file it lists is there.

    A missing directory, manifest or file is one ValueError naming the config key and telling
    the user to run ``make install``.
    """
    where = f"config key 'data.demo.corpus_dir': {str(corpus_dir)!r}"
    path = corpus_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{where} holds no pinned demo corpus (no {MANIFEST}); {INSTALL_HINT}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: unreadable {MANIFEST} ({exc}); {INSTALL_HINT}") from exc
    site = corpus_dir / SITE
    members = [m for d in manifest.get("distributions", []) for m in d["members"]]
    missing = [m for m in members if not (site / m).is_file()]
    if missing or not manifest.get("distributions"):
        raise ValueError(
            f"{where} is incomplete ({len(missing)} files missing, e.g. "
            f"{missing[:1] or 'every distribution'}); {INSTALL_HINT}"
        )
    return manifest


def lock_lines(specs: Sequence[str], dest: Path) -> list[str]:
    """``name==version --hash=sha256:...`` for each spec, hashing the files pip downloads."""
    _pip("download", "--quiet", "--no-deps", "-d", str(dest), *specs)
    by_key: dict[tuple[str, str], Path] = {}
    for f in dest.iterdir():
        name, version = re.split(r"-(?=\d)", f.name.removesuffix(".tar.gz"), maxsplit=1)
        by_key[(_canonical(name), version.split("-")[0].removesuffix(".zip"))] = f
    lines = []
    for spec in specs:
        name, version = spec.split("==")
        f = by_key[(_canonical(name), version)]
        lines.append(f"{spec} --hash=sha256:{_sha256(f)}")
    return lines


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testtime.corpus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="build a corpus directory from a hash-pinned list")
    p.add_argument("lock", type=Path, help="requirements/corpus.txt")
    p.add_argument("target", type=Path, help="corpus directory to (re)build, e.g. .corpus")
    p.add_argument("--build-constraints", type=Path, help="pins for building sdists")
    p = sub.add_parser("lock", help="print hash-pinned lines for name==version specs")
    p.add_argument("specs", nargs="+", help="name==version, one per distribution")
    args = parser.parse_args(argv)
    if args.command == "install":
        pinned = install(args.lock, args.target, args.build_constraints)
        print(f"{args.target}: {len(pinned)} pinned distributions")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(lock_lines(args.specs, Path(tmp))))
    return 0
