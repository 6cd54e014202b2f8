"""README.md's demo table: copied from figures/demo/bpb_table.md by scripts/readme-table.py.

The staleness check needs a local demo run (`make reproduce`) and skips without one; the
script's parsing and rendering are tested on hand-written tables.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = runpy.run_path(str(REPO / "scripts" / "readme-table.py"), run_name="readme_table")
TABLE = REPO / "figures" / "demo" / "bpb_table.md"

MEASURED = """| domain | Base | SIFT |
|---:|---:|---:|
| Github | 221.3 (16.6) | **172.0 (21.9)** |
| all | 218.1 (9.9) | **187.0 (12.0)** |

Bits per byte × 100 of each domain's evaluation text.

| domain | Base | SIFT |
|---|---:|---:|
| all | 100.0 (0.0) | **85.7 (1.2)** |

Bits per byte in % of the base model.
"""


@pytest.mark.skipif(not TABLE.is_file(), reason="no local demo run (make reproduce)")
def test_readme_shows_the_local_demo_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stale = SCRIPT["differences"](SCRIPT["readme_block"](readme), TABLE.read_text("utf-8"))
    assert not stale, f"README.md is stale, run scripts/readme-table.py: {stale}"


def test_render_replaces_only_the_block_between_the_markers() -> None:
    readme = "# t\n\n<!-- demo-table:start -->\n| old |\n<!-- demo-table:end -->\n\nafter\n"
    out = SCRIPT["render"](readme, MEASURED)
    assert out == (
        "# t\n\n<!-- demo-table:start -->\n"
        "| domain | Base | SIFT |\n|---:|---:|---:|\n"
        "| Github | 221.3 (16.6) | **172.0 (21.9)** |\n| all | 218.1 (9.9) | **187.0 (12.0)** |\n"
        "\n| domain | Base | SIFT |\n|---|---:|---:|\n| all | 100.0 (0.0) | **85.7 (1.2)** |\n"
        "<!-- demo-table:end -->\n\nafter\n"
    )
    with pytest.raises(ValueError, match="markers"):
        SCRIPT["render"]("no markers here", MEASURED)


def test_differences_allow_the_cross_machine_tolerance_only() -> None:
    close = MEASURED.replace("221.3 (16.6)", "223.8 (16.2)").replace("187.0", "187.9")
    assert SCRIPT["differences"](close, MEASURED) == []
    far_domain = MEASURED.replace("221.3 (16.6)", "224.4 (16.6)")
    assert SCRIPT["differences"](far_domain, MEASURED) == ["Github: 224.4 shown, 221.3 measured"]
    far = MEASURED.replace("187.0 (12.0)", "185.5 (12.0)")
    assert SCRIPT["differences"](far, MEASURED) == ["all: 185.5 shown, 187.0 measured"]
    far_pct = MEASURED.replace("**85.7 (1.2)**", "**84.0 (1.2)**")
    assert SCRIPT["differences"](far_pct, MEASURED) == ["all: 84.0 shown, 85.7 measured"]
    moved_bold = MEASURED.replace("| **172.0 (21.9)** |", "| 172.0 (21.9) |")
    assert SCRIPT["differences"](moved_bold, MEASURED) == [
        "the tables differ in rows, columns, labels or bold cells"
    ]
