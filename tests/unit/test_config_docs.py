"""config/README.md: its key reference is the schema's, and it describes every config file."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = runpy.run_path(str(REPO / "scripts" / "config-docs.py"), run_name="config_docs")


def _schema() -> dict:
    return yaml.safe_load((REPO / "src/testtime/schemas/config.schema.yaml").read_text())


def test_key_reference_is_generated_from_the_current_schema() -> None:
    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    assert DOCS["render"](readme, _schema()) == readme, "run scripts/config-docs.py"


def test_key_reference_lists_every_leaf_key_of_the_schema() -> None:
    def leaves(node: dict, prefix: str = "") -> set[str]:
        out = set()
        for name, child in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            out |= leaves(child, f"{key}.") if "properties" in child else {key}
        return out

    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    keys = leaves(_schema())
    assert {"select.lam", "data.split.memory", "finetune.lora.r"} <= keys
    missing = sorted(k for k in keys if f"| `{k}` |" not in readme)
    assert not missing


def test_every_config_file_is_described() -> None:
    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "config").glob("*.yaml")):
        assert f"`{path.name}`" in readme, path.name


def test_render_refuses_a_readme_without_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        DOCS["render"]("# no markers\n", _schema())
