"""scripts/ follows one naming rule (docs/development.md, "Scripts"): lowercase words joined by
hyphens (so a script that another imports is one word); CUDA-only tools sit in scripts/gpu/.

    .venv/bin/python -m pytest -q tests/unit/test_script_names.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*\.(py|sh)")


def _tracked() -> list[Path]:
    """Every script file, from git where the tree is a checkout (no stray local files)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", "."], cwd=SCRIPTS, capture_output=True, text=True, check=True
        ).stdout.split()
        paths = [SCRIPTS / p for p in out]
    except (OSError, subprocess.CalledProcessError):
        paths = []
    if not paths:
        paths = [p for p in SCRIPTS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(paths)


def test_names_are_hyphenated_lowercase_words():
    files = _tracked()
    assert files, SCRIPTS
    assert [p.name for p in files if not NAME.fullmatch(p.name)] == []
    assert {p.parent.name for p in files} <= {"scripts", "gpu"}  # one level: scripts/gpu/


def test_cuda_tools_live_in_gpu():
    """Scripts in scripts/gpu/ are about CUDA; the others never ask for a CUDA device."""
    for path in _tracked():
        text = path.read_text().lower()
        if path.parent.name == "gpu":
            assert "cuda" in text, path.name
        else:
            assert "--device cuda" not in text and 'device="cuda"' not in text, path.name
