"""The core install (``pip install testtime``, no extras) is the library API and the CLI without a
workflow engine: pyproject.toml's core dependencies name no workflow tool, and ``testtime``,
``testtime.tuner`` and the CLI's parser import in a fresh interpreter in which importing
Snakemake or DVC fails.

    .venv/bin/python -m pytest -q tests/unit/test_core_install.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# Distributions only the workflow (or its lint) needs; prefixes cover the plugin families.
WORKFLOW_TOOLS = {"snakemake", "dvc", "snakefmt"}
WORKFLOW_PREFIXES = ("snakemake-", "dvc-")


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement (``Foo_Bar>=1`` -> foo-bar)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_name_normalisation():
    assert _name("Snakemake_Executor.Plugin-slurm>=1.0") == "snakemake-executor-plugin-slurm"
    assert _name("dvc[ssh] >= 3.50 ; python_version>'3'") == "dvc"


def test_core_dependencies_name_no_workflow_tool():
    core = {_name(r) for r in _project()["dependencies"]}
    assert "torch" in core and "transformers" in core  # the parse found the real list
    tools = {n for n in core if n in WORKFLOW_TOOLS or n.startswith(WORKFLOW_PREFIXES)}
    assert tools == set()


def test_workflow_extra_holds_the_engines():
    extras = _project()["optional-dependencies"]
    workflow = {_name(r) for r in extras["workflow"]}
    assert {"snakemake", "dvc", "snakemake-executor-plugin-slurm"} <= workflow
    assert "slurm" not in extras  # folded into `workflow`
    assert "snakefmt" in {_name(r) for r in extras["dev"]}


BLOCKED_IMPORTS = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = {"snakemake", "dvc"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in ("snakemake", "dvc.repo"):  # the blocker works, submodules included
        try:
            __import__(name)
        except ImportError as exc:
            assert str(exc) == f"blocked: {name.partition('.')[0]}", exc
        else:
            raise AssertionError(f"{name} imported despite the blocker")

    import testtime
    import testtime.tuner
    from testtime import Memory, TestTimeTuner
    from testtime.cli import build_parser

    parser = build_parser()  # imports every subcommand's module
    assert "generate" in parser.format_help()
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert loaded == [], loaded
    print("ok", TestTimeTuner.__name__, Memory.__name__, parser.prog)
    """
)


def test_api_and_cli_import_without_snakemake_and_dvc():
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "TestTimeTuner", "Memory", "testtime"]
