"""The Snakemake catalog's conventions: the conda environment and the catalog file."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = REPO / "workflow" / "envs" / "testtime.yaml"


def _pip_paths() -> list[str]:
    deps = yaml.safe_load(ENV.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return [p.removeprefix("-r ").removeprefix("-e ").strip() for p in pip]


def test_conda_env_paths_resolve_from_the_file_and_from_snakemakes_copy() -> None:
    # conda runs pip in the env file's directory; Snakemake copies the file to
    # .snakemake/conda/<hash>.yaml, so both places must reach the same lock and package.
    lock, package = _pip_paths()
    for env_dir in (ENV.parent, REPO / ".snakemake" / "conda"):
        assert (env_dir / lock).resolve() == REPO / "requirements" / "lock-cpu.txt"
        assert (env_dir / package).resolve() == REPO
    assert "python=3.11" in yaml.safe_load(ENV.read_text())["dependencies"]


def test_every_rule_runs_in_the_conda_env() -> None:
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    for path in rules:
        text = path.read_text()
        n_rules = text.count("\nrule ") + text.startswith("rule ")
        n_local = text.count("localrule: True")
        assert text.count('"../envs/testtime.yaml"') == n_rules - n_local, path.name


def test_catalog_file_declares_conda_and_report() -> None:
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert usage["report"] is True
    assert (REPO / "workflow" / "Snakefile").is_file()
    assert (REPO / "config" / "README.md").is_file()
