"""The layout of the testtime.finetune package, read from its source with ast (nothing imported).

Checks: the modules' imports of each other form no cycle; no module of the package imports the
package itself (its ``__init__`` re-exports, it is not a layer); no module reaches into another
module's or object's underscore members (``x._name`` on anything but ``self``/``cls``, or
``from m import _name``); the flat modules the package replaced are gone.

Run: .venv/bin/pytest tests/unit/test_finetune_imports.py
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import testtime

PACKAGE = "testtime.finetune"
ROOT = Path(testtime.__file__).parent / "finetune"


def _modules() -> dict[str, ast.Module]:
    """Each module of the package by dotted name (``__init__`` as the package's own name)."""
    out = {}
    for path in sorted(ROOT.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (function-level imports included)."""
    package = PACKAGE if name == PACKAGE else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join([package, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod (and pkg itself)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(t for t in targets if t in known)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {n: _imported(n, t, known) - {n} for n, t in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    """The check itself: a hand-made graph with one cycle, and the same graph without it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = set()
    assert _cycle(graph) is None


def test_package_modules_import_no_cycle():
    graph = _graph()
    assert {"testtime.finetune.jobs", "testtime.finetune.driver"} <= set(graph)
    assert _cycle(graph) is None
    assert graph["testtime.finetune.jobs"] == set(), "jobs is the bottom layer"


def test_no_submodule_imports_the_package_itself():
    bad = {n for n, deps in _graph().items() if n != PACKAGE and PACKAGE in deps}
    assert not bad, f"modules importing {PACKAGE} itself (import the submodule): {sorted(bad)}"


# public by design: a NamedTuple's API is underscored only to keep clear of field names
NAMEDTUPLE_API = {"_fields", "_field_defaults", "_asdict", "_replace", "_make"}


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in NAMEDTUPLE_API


def _reach_ins(tree: ast.Module) -> list[str]:
    """``x._name`` with x not self/cls, and ``from m import _name``, in line order."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                out.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            out += [(node.lineno, f"import {a.name}") for a in node.names if _private(a.name)]
    return [f"line {line}: {text}" for line, text in sorted(out)]


def test_reach_in_finder_finds_private_access():
    tree = ast.parse(
        "self._a\ncls._b\nother._c\nf()._d\nx.__name__\nfrom m import _e, f\nR._fields"
    )
    assert _reach_ins(tree) == [
        "line 3: other._c",
        "line 4: f()._d",
        "line 6: import _e",
    ]


def test_no_module_reaches_into_private_members():
    found = {n: r for n, t in _modules().items() if (r := _reach_ins(t))}
    assert not found, found


def test_the_flat_modules_are_gone():
    for old in ("finetune_batched", "lora_batched", "finetune_inputs"):
        assert importlib.util.find_spec(f"testtime.{old}") is None, old
    assert (ROOT / "__init__.py").is_file()
