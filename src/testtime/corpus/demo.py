"""Local text sources of the offline demo corpus, one per Pile-named domain.

By default everything is read from what the project's own install put on the machine: the
Python standard library and, from the venv's site-packages, the installed distributions in the
dependency closure of ``testtime[dev,bench,slurm]`` (the extras ``make install`` installs, whose
versions it pins through the lock file); a package installed into the venv by hand is not read.
A system share directory (``data.demo.share_dir``, e.g. ``/usr/share``) is opt-in: its
files depend on the host's packages, so a corpus that reads it is no longer a function of the
lock file and the Python minor version alone.

| domain | local source |
|---|---|
| Github | standard-library ``.py`` files (test suites excluded) |
| StackExchange | standard-library docstrings (module, classes, functions), one doc per module |
| Pile-CC | package long descriptions (METADATA) by section; opt-in: ``<share>/doc/*/README*`` |
| FreeLaw | licence files of installed packages; opt-in: ``<share>/common-licenses``, copyrights |
| Ubuntu IRC | man pages (``<share>/man``, roff stripped to text); needs the share directory |

DM Mathematics comes from :mod:`testtime.corpus.mathgen`. Each domain lists its candidates as
``(source, load)`` pairs; ``source`` names the file relative to its root (``stdlib/json/
decoder.py``, ``site-packages/numpy-2.1.3.dist-info/LICENSE.txt``, ``share/...``), so it is the
same on every machine and in every clone. ``load()`` returns the text or None. Paths are
arguments (:class:`DemoRoots`) so tests point the builder at a tiny synthetic tree.
"""

from __future__ import annotations

import ast
import gzip
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

Candidate = tuple[str, Callable[[], str | None]]

EXCLUDED_DIRS = frozenset({"test", "tests", "site-packages", "dist-packages", "__pycache__"})
LICENCE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|COPYRIGHT)", re.IGNORECASE)
README_NAME = re.compile(r"^README", re.IGNORECASE)
MAN_SECTIONS = ("man1", "man5", "man8")


# Installed by the venv bootstrap or as the project itself, not pinned by the lock file: their
# files change with the day of install (pip, setuptools, wheel) or with every edit (testtime).
UNPINNED_DISTRIBUTIONS = frozenset({"pip", "setuptools", "wheel", "testtime"})
# The distribution whose dependency closure the demo reads, with the extras the Makefile's
# ``make install`` installs (``pip install -e ".[dev,bench,slurm]"``; not ``gpu``).
PROJECT_DISTRIBUTION = "testtime"
INSTALL_EXTRAS = ("dev", "bench", "slurm")


@dataclass(frozen=True)
class DemoRoots:
    """Where the demo sources live: stdlib dir, site-packages dirs, optional share dir."""

    stdlib: Path
    site_packages: tuple[Path, ...]
    share: Path | None = None

    @classmethod
    def default(cls, share_dir: str | None = None) -> DemoRoots:
        """This interpreter's stdlib and site-packages; ``share_dir`` only when asked for."""
        paths = sysconfig.get_paths()
        site = tuple(dict.fromkeys(Path(paths[k]) for k in ("purelib", "platlib")))
        share = Path(share_dir) if share_dir else None
        if share is not None and not share.is_dir():
            raise ValueError(f"config key 'data.demo.share_dir': {share_dir!r} is not a directory")
        return cls(Path(paths["stdlib"]), site, share)


def source_name(label: str, root: Path, path: Path) -> str:
    """Machine-independent name of ``path`` under ``root``: ``label/relative/path``.

    >>> source_name("stdlib", Path("/opt/py/lib"), Path("/opt/py/lib/json/decoder.py"))
    'stdlib/json/decoder.py'
    """
    return f"{label}/{path.relative_to(root).as_posix()}"


def read_text(path: Path) -> str | None:
    """UTF-8 text of a file (gzip-transparent); None for binary or unreadable files."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError):
        return None
    if b"\x00" in raw:
        return None
    return raw.decode("utf-8", errors="replace")


def _walk(root: Path, pattern: str) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob(pattern)
        if p.is_file() and not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])
    )


def github(roots: DemoRoots) -> list[Candidate]:
    """Standard-library Python sources."""
    return [
        (source_name("stdlib", roots.stdlib, p), partial(read_text, p))
        for p in _walk(roots.stdlib, "*.py")
    ]


def module_docstrings(path: Path) -> str | None:
    """Module, class and function docstrings of one Python file, as one document."""
    source = read_text(path)
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"{path.stem}\n\n{doc}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
                parts.append(f"{kind} {node.name}\n\n{doc}")
    return "\n\n".join(parts) if parts else None


def stackexchange(roots: DemoRoots) -> list[Candidate]:
    """Standard-library docstrings, one document per module."""
    return [
        (f"docstrings:{source_name('stdlib', roots.stdlib, p)}", partial(module_docstrings, p))
        for p in _walk(roots.stdlib, "*.py")
    ]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(
    dists: list[metadata.Distribution], extras: frozenset[str]
) -> list[tuple[str, frozenset[str]]]:
    """(name, extras) of the requirements of ``dists`` that apply here with ``extras`` chosen."""
    out = []
    for dist in dists:
        for line in dist.requires or ():
            req = Requirement(line)
            applies = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in ("", *sorted(extras))
            )
            if applies:
                out.append((_canonical(req.name), frozenset(req.extras)))
    return out


def _dependency_closure(
    installed: dict[str, list[metadata.Distribution]], root: str, extras: tuple[str, ...]
) -> set[str]:
    """Canonical names of the installed distributions ``root[extras]`` requires, recursively.

    Markers are evaluated for this interpreter, with ``extra`` set to each extra requested on
    the requirement (``foo[bar]``); requirements of distributions that are not installed end
    the walk there. ``root`` itself is in the result.
    """
    done: set[tuple[str, str]] = set()
    todo = [(_canonical(root), frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        new = {e for e in ("", *wanted) if (name, e) not in done}
        if not new or name not in installed:
            continue
        done.update((name, e) for e in new)
        todo.extend(_requirements(installed[name], frozenset(e for e in new if e)))
    return {name for name, _ in done}


def _distributions(roots: DemoRoots) -> list[metadata.Distribution]:
    """Installed distributions of ``testtime[dev,bench,slurm]``'s dependency closure.

    Sorted by (name, version), without :data:`UNPINNED_DISTRIBUTIONS`. ``make install``
    installs exactly this closure at the lock file's versions, so a package a user adds to
    the venv by hand changes no document.
    """
    installed: dict[str, list[metadata.Distribution]] = {}
    for d in metadata.distributions(path=[str(p) for p in roots.site_packages]):
        if d.metadata["Name"]:
            installed.setdefault(_canonical(d.metadata["Name"]), []).append(d)
    if PROJECT_DISTRIBUTION not in installed:
        # a ValueError: the CLI reports it as a one-line error, not a traceback
        raise ValueError(
            f"the demo corpus reads the dependencies of the installed {PROJECT_DISTRIBUTION!r} "
            f"distribution, which is not installed in {[str(p) for p in roots.site_packages]}; "
            'run `make install` (or `pip install -e ".[dev,bench,slurm]"`) first'
        )
    closure = _dependency_closure(installed, PROJECT_DISTRIBUTION, INSTALL_EXTRAS)
    by_name = {
        (name, d.version): d for name in closure - UNPINNED_DISTRIBUTIONS for d in installed[name]
    }
    return [by_name[k] for k in sorted(by_name)]


def _description(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    return meta.get_payload() or meta.get("Description") or ""


_HEADING = re.compile(r"^(#{1,3} \S.*|[=\-~^*]{3,})$")
SECTION_CHARS = 2000


def sections(text: str, min_chars: int = SECTION_CHARS) -> list[str]:
    r"""Split a README at Markdown / reStructuredText headings into parts of >= ``min_chars``.

    Consecutive sections are merged until a part is long enough; a short tail joins the last
    part. Long package descriptions thus give several web-page-sized documents.

    >>> parts = sections("# A\n" + "a" * 30 + "\n# B\n" + "b" * 30 + "\n# C\nc", 20)
    >>> [p.splitlines()[0] for p in parts], parts[1].endswith("# C\nc")
    (['# A', '# B'], True)
    """
    lines = text.splitlines()
    starts = [0]
    for i, line in enumerate(lines):
        if i and _HEADING.match(line.strip()):
            # an rst underline belongs to the title line above it
            start = i - 1 if line.strip()[0] in "=-~^*" else i
            if start > starts[-1]:
                starts.append(start)
    blocks = ["\n".join(lines[a:b]) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    parts: list[str] = []
    current = ""
    for block in blocks:
        current = f"{current}\n{block}" if current else block
        if len(current.strip()) >= min_chars:
            parts.append(current.strip())
            current = ""
    if current.strip():
        if parts:
            parts[-1] = f"{parts[-1]}\n{current.strip()}"
        else:
            parts.append(current.strip())
    return parts


def pile_cc(roots: DemoRoots) -> list[Candidate]:
    """Package long descriptions (METADATA) cut into sections, then /usr/share/doc READMEs."""
    out: list[Candidate] = []
    for dist in _distributions(roots):
        source = f"metadata:{dist.metadata['Name']}=={dist.version}"
        for i, part in enumerate(sections(_description(dist))):
            out.append((f"{source}#{i}", partial(str, part)))
    if roots.share is not None:
        for p in sorted((roots.share / "doc").glob("*/*")):
            if README_NAME.match(p.name) and p.is_file():
                out.append((source_name("share", roots.share, p), partial(read_text, p)))
    return out


def free_law(roots: DemoRoots) -> list[Candidate]:
    """Licence files of the pinned distributions (from their RECORD); opt-in share licences."""
    found: dict[str, Path] = {}
    for dist in _distributions(roots):
        for rel in dist.files or ():
            parts = Path(str(rel)).parts
            if LICENCE_NAME.match(parts[-1]) and not EXCLUDED_DIRS.intersection(parts[:-1]):
                path = Path(str(dist.locate_file(rel)))
                if path.is_file():
                    found[f"site-packages/{Path(str(rel)).as_posix()}"] = path
    if roots.share is not None:
        share_paths = _walk(roots.share / "common-licenses", "*")
        share_paths += sorted((roots.share / "doc").glob("*/copyright"))
        for p in share_paths:
            found[source_name("share", roots.share, p)] = p
    return [(name, partial(read_text, found[name])) for name in sorted(found)]


_ROFF_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_ROFF_ESCAPE = re.compile(r"\\(\(..|\[[^\]]*\]|[-e&|^ ]|.)")


def man_to_text(roff: str) -> str:
    r"""Strip roff markup from a man page, keeping headings and prose.

    >>> man_to_text('.TH LS 1\n.SH NAME\nls \\- list \\fBfiles\\fR\n.\\" note')
    'NAME\nls - list files'
    """
    lines = []
    for line in roff.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\"')):
            continue
        if line.startswith((".SH", ".SS")):
            line = line[3:].strip().strip('"')
        elif line.startswith((".B ", ".I ", ".BR ", ".IR ", ".BI ", ".IB ", ".RB ", ".RI ")):
            line = line.split(" ", 1)[1]
        elif line.startswith((".", "'")):
            continue
        line = _ROFF_FONT.sub("", line)
        line = _ROFF_ESCAPE.sub(lambda m: {"\\-": "-", "\\e": "\\"}.get(m.group(0), ""), line)
        lines.append(line)
    return "\n".join(lines).strip()


def _man_page(path: Path) -> str | None:
    text = read_text(path)
    return man_to_text(text) if text else None


def ubuntu_irc(roots: DemoRoots) -> list[Candidate]:
    """Man pages (sections 1, 5, 8) as text; empty without /usr/share."""
    if roots.share is None:
        return []
    paths = [p for s in MAN_SECTIONS for p in sorted((roots.share / "man" / s).glob("*"))]
    return [
        (source_name("share", roots.share, p), partial(_man_page, p)) for p in paths if p.is_file()
    ]


LOCAL_DOMAINS: dict[str, Callable[[DemoRoots], list[Candidate]]] = {
    "Github": github,
    "StackExchange": stackexchange,
    "Pile-CC": pile_cc,
    "FreeLaw": free_law,
    "Ubuntu IRC": ubuntu_irc,
}
MATH_DOMAIN = "DM Mathematics"
DEMO_DOMAINS = (*LOCAL_DOMAINS, MATH_DOMAIN)
