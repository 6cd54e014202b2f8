"""The report's outputs have one owner (testtime.report.outputs), and the workflow, the CLI and
the owner agree on them.

Checks: for configs with and without ``select.lam_sweep`` / ``select.memory_fractions``, the
owner's paths and argv equal a hand-written list of the report's files and flags; a Snakemake
dry run (in a copy of workflow/ and config/) declares exactly those files as the report rule's
outputs and passes exactly that argv; the CLI requires exactly the flags the config has.

Run: .venv/bin/pytest tests/unit/test_report_outputs.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_report import _outputs
from testtime.cli import main
from testtime.config import validate_config
from testtime.report import report_argv, report_outputs

REPO = Path(__file__).resolve().parents[2]
# (lam_sweep, memory_fractions): each optional output with and without the other
CASES = [([0.1], []), ([], [0.5])]


def _config(lam_sweep: list[float], fractions: list[float]) -> dict:
    cfg = yaml.safe_load((REPO / "tests" / "workflow" / "tiny.yaml").read_text())
    cfg["select"] |= {"lam_sweep": lam_sweep, "memory_fractions": fractions}
    return validate_config(cfg)


@pytest.mark.parametrize(("lam_sweep", "fractions"), [*CASES, ([], []), ([0.1], [0.5])])
def test_owner_names_the_reports_files_and_flags(lam_sweep, fractions) -> None:
    res, fig = Path("results/tiny"), Path("figures/tiny")
    paths = report_outputs(_config(lam_sweep, fractions), res, fig)
    want = _outputs(res, fig, lam_sweep=bool(lam_sweep), memory_curve=bool(fractions))
    assert report_argv(paths) == want
    assert ("lambda_sweep" in paths) == bool(lam_sweep)
    assert ("memory_curve_md" in paths) == ("memory_curve_png" in paths) == bool(fractions)
    with pytest.raises(ValueError, match="not report outputs"):
        report_argv({"bpb_png": "x.png"})


def _report_job(dry_run: str) -> tuple[list[str], list[str]]:
    """The report job's declared outputs and its shell command (argv) in a dry run's log."""
    lines = dry_run.splitlines()
    start = lines.index("rule report:")
    output = next(line for line in lines[start:] if line.strip().startswith("output:"))
    shell = next(line for line in lines[start:] if line.startswith("Shell command: "))
    argv = shlex.split(shell.removeprefix("Shell command: ").split(" > ")[0])
    return output.split(":", 1)[1].strip().split(", "), argv


@pytest.mark.parametrize(("lam_sweep", "fractions"), CASES)
def test_snakemake_report_rule_declares_and_passes_the_owners_outputs(
    lam_sweep, fractions, tmp_path
) -> None:
    for d in ("workflow", "config"):
        shutil.copytree(REPO / d, tmp_path / d)
    cfg = _config(lam_sweep, fractions)
    cfg["data"]["demo"]["corpus_dir"] = str(REPO / ".corpus")
    (tmp_path / "config" / "case.yaml").write_text(yaml.safe_dump(cfg))
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [bin_dir / "snakemake", "-n", "-p", "--cores", "1", "--configfile", "config/case.yaml"],
        cwd=tmp_path,
        env=os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    declared, argv = _report_job(proc.stdout)
    paths = report_outputs(cfg, "results/tiny", "figures/tiny")
    assert sorted(declared) == sorted(paths.values())
    selections = argv.index("--selections")
    flags = next(i for i, a in enumerate(argv) if i > selections and a.startswith("--"))
    assert argv[flags:] == report_argv(paths)


@pytest.mark.parametrize(("lam_sweep", "fractions"), CASES)
def test_cli_takes_exactly_the_flags_the_config_has(lam_sweep, fractions, tmp_path, capsys):
    cfg = _config(lam_sweep, fractions)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res, fig = tmp_path / "results", tmp_path / "figures"
    base = ["report", "--config", str(tmp_path / "c.yaml"), "--per-prompt", "missing.parquet"]
    # the other optional outputs: given where the config lacks them, an error before any work
    wrong = _outputs(res, fig, lam_sweep=not lam_sweep, memory_curve=not fractions)
    assert main([*base, *wrong]) == 2
    assert "exactly when the config has select." in capsys.readouterr().err
    right = _outputs(res, fig, lam_sweep=bool(lam_sweep), memory_curve=bool(fractions))
    assert main([*base, *right]) == 2  # past the output checks: the input is missing
    assert "'missing.parquet' does not exist" in capsys.readouterr().err
