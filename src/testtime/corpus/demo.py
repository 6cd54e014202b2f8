"""Local text sources of the offline demo corpus, one per Pile-named domain.

Two roots, neither of them the project's environment: the running interpreter's standard
library, and the demo's own pinned corpus directory (``data.demo.corpus_dir``, default
``.corpus``), which ``make install`` builds from ``requirements/corpus.txt``
(:mod:`testtime.corpus.pinned`: the ``.dist-info`` folders and licence files of 179 pinned
distribution files, hash-checked). Installing, removing or moving one of testtime's own
dependencies therefore changes no document. A system share directory (``data.demo.share_dir``,
e.g. ``/usr/share``) is opt-in: its files depend on the host's packages, so a corpus that reads
it is no longer a function of the pinned lists and the Python minor version alone.

| domain | local source |
|---|---|
| Github | standard-library ``.py`` files (test suites excluded) |
| StackExchange | standard-library docstrings (module, classes, functions), one doc per module |
| Pile-CC | pinned package descriptions (METADATA) by section; opt-in: ``<share>/doc/*/README*`` |
| FreeLaw | licence files of the pinned packages; opt-in: ``<share>/common-licenses``, copyrights |
| Ubuntu IRC | man pages (``<share>/man``, roff stripped to text); needs the share directory |

DM Mathematics comes from :mod:`testtime.corpus.mathgen`. Each domain lists its candidates as
``(source, load)`` pairs; ``source`` names the file relative to its root (``stdlib/json/
decoder.py``, ``site-packages/numpy-2.4.6.dist-info/LICENSE.txt``, ``share/...``), so it is the
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

from testtime.corpus.pinned import EXCLUDED_DIRS, LICENCE_NAME, SITE, load_manifest

Candidate = tuple[str, Callable[[], str | None]]

README_NAME = re.compile(r"^README", re.IGNORECASE)
MAN_SECTIONS = ("man1", "man5", "man8")
# Source names of pinned files keep the label they had when the demo read the venv, so the
# seeded sampling order, and with it the demo's fingerprint, did not move with the switch.
PINNED_LABEL = "site-packages"


@dataclass(frozen=True)
class DemoRoots:
    """Where the demo sources live: stdlib dir, pinned corpus dir, optional share dir."""

    stdlib: Path
    corpus: Path
    share: Path | None = None

    @classmethod
    def default(cls, corpus_dir: str = ".corpus", share_dir: str | None = None) -> DemoRoots:
        """This interpreter's stdlib, ``corpus_dir`` (relative to the working directory) and
        ``share_dir`` only when asked for. The corpus directory is checked when first read."""
        share = Path(share_dir) if share_dir else None
        if share is not None and not share.is_dir():
            raise ValueError(f"config key 'data.demo.share_dir': {share_dir!r} is not a directory")
        return cls(Path(sysconfig.get_paths()["stdlib"]), Path(corpus_dir), share)


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


def _distributions(roots: DemoRoots) -> list[metadata.Distribution]:
    """The pinned distributions of the corpus directory, sorted by (name, version).

    Exactly those its manifest lists (:func:`~testtime.corpus.pinned.load_manifest` checks
    each is there); nothing from the environment the corpus stage runs in.
    """
    site = roots.corpus / SITE
    dists = [
        metadata.PathDistribution(site / d["dist_info"])
        for d in load_manifest(roots.corpus)["distributions"]
    ]
    return sorted(dists, key=lambda d: (_canonical(d.metadata["Name"]), d.version))


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
    """Pinned package descriptions (METADATA) cut into sections, then /usr/share/doc READMEs."""
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
                    found[f"{PINNED_LABEL}/{Path(str(rel)).as_posix()}"] = path
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


# Domains that read the pinned corpus directory (``data.demo.corpus_dir``).
PINNED_DOMAINS = frozenset({"Pile-CC", "FreeLaw"})
LOCAL_DOMAINS: dict[str, Callable[[DemoRoots], list[Candidate]]] = {
    "Github": github,
    "StackExchange": stackexchange,
    "Pile-CC": pile_cc,
    "FreeLaw": free_law,
    "Ubuntu IRC": ubuntu_irc,
}
MATH_DOMAIN = "DM Mathematics"
DEMO_DOMAINS = (*LOCAL_DOMAINS, MATH_DOMAIN)
