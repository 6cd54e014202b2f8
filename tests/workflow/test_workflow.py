"""Workflow tests: Snakemake + DVC wiring, checked by running the real tools.

* A bad config (unknown key, wrong type, out-of-range value, N > K for nn, unknown method) fails
  before any job runs, with a message naming the key; `snakemake --lint` is clean.
* The whole DAG runs on a tiny config (tests/workflow/tiny.yaml) in a temp dir and writes every
  table and figure; a second invocation has nothing to do; `snakemake --report report.zip`
  builds the report with every table and figure; a run killed with SIGKILL (during
  pre-training) and then with SIGINT (during fine-tuning) resumes with the same command,
  redoes no finished job, and ends with results identical to the uninterrupted run.
* Parsing writes nothing: a dry run (even with another config of the same name, while runs
  exist) changes no file, each job's command carries the config slice it was scheduled with,
  and a changed finetune.lr makes exactly the fine-tuning, aggregate and report jobs stale.
* Every artifact (data/, results/, figures/; provenance records aside) of the run killed twice
  is byte-identical to the uninterrupted run's, and files honour the umask.
* The DVC side (dvc.yaml, adoption, remotes, plots) is tested in test_dvc.py, on the same run.

Run only these: `.venv/bin/pytest tests/workflow -m workflow` (about 4-6 minutes on 2 cores).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = Path(__file__).with_name("tiny.yaml")
RUN = ["scripts/run-workflow.sh", "--cores", "2", "--configfile", "config/tiny.yaml"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def _workdir(root: Path, config_overrides: dict | None = None) -> Path:
    """A fresh copy of the workflow (Snakefile, rules, profiles, configs) with tiny.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("workflow", "config", "scripts"):
        shutil.copytree(REPO / sub, root / sub, symlinks=False)
    config = yaml.safe_load(TINY.read_text())
    for section, values in (config_overrides or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    # the pinned demo corpus make install built (docs/corpus.md), not copied into the workdir
    config["data"].setdefault("demo", {})["corpus_dir"] = str(REPO / ".corpus")
    (root / "config" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root


def _run(workdir: Path, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"select": {"lamda": 0.1}}, "lamda"),
        ({"select": {"k": "ten"}}, "select.k"),
        ({"select": {"lam": 0}}, "select.lam"),
        ({"select": {"k": 8, "n": 10}}, "select.n"),
        ({"select": {"methods": ["sift", "bogus"]}}, "select.methods"),
        ({"finetune": {"mode": "everything"}}, "finetune.mode"),
        ({"data": {"protocol": "both"}}, "data.protocol"),
        # tiny's context is 128 tokens: 100 + 48 do not fit under `split`
        ({"data": {"protocol": "split", "prompt_tokens": 100}}, "'data.prompt_tokens' + 'data"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path: Path, override: dict, key: str) -> None:
    workdir = _workdir(tmp_path / "wf", override)
    proc = _run(workdir, ["snakemake", "-n", "--cores", "1", "--configfile", "config/tiny.yaml"])
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    assert not (workdir / "data").exists(), "nothing may be written before the config is valid"


def _job_counts(log: str) -> dict[str, int]:
    """Rule -> job count from the `Job stats:` table of a (dry) run."""
    lines = log[log.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        name, count = line.split()
        if name == "total":
            return counts
        counts[name] = int(count)
    raise ValueError("no total line in the job stats")


def _tree(root: Path) -> dict[str, int]:
    """Every file below ``root`` (Snakemake's own .snakemake/ aside) with its mtime."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".snakemake" not in p.relative_to(root).parts
    }


def test_dry_run_writes_nothing_and_jobs_carry_their_config(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path / "wf", {"finetune": {"lr": 0.00123}})
    before = _tree(workdir)
    proc = _run(
        workdir, ["snakemake", "-n", "-p", "--cores", "1", "--configfile", "config/tiny.yaml"]
    )
    _assert_ok(proc)
    assert _tree(workdir) == before, "parsing the workflow must write nothing"
    commands = [line for line in proc.stdout.splitlines() if "testtime finetune" in line]
    assert commands and all("--config-json" in c and '"lr": 0.00123' in c for c in commands)


def _report_outputs(workdir: Path) -> dict[str, pd.DataFrame]:
    results = workdir / "results" / "tiny"
    return {
        "bpb": pd.read_csv(results / "bpb.csv"),
        "per_prompt": pd.read_parquet(results / "per_prompt.parquet"),
    }


def _marked_incomplete(workdir: Path) -> set[Path]:
    """Outputs Snakemake marks incomplete (jobs started, never recorded as finished).

    Snakemake keeps one marker file per such output under .snakemake/incomplete/, named by the
    urlsafe base64 of the output path (long names split into '@'-prefixed segments).
    """
    root = workdir / ".snakemake" / "incomplete"
    paths = set()
    for marker in root.rglob("*") if root.is_dir() else ():
        if marker.is_file() and marker.name != "migration_underway":
            encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
            paths.add(Path(base64.urlsafe_b64decode(encoded).decode()))
    return paths


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Poll until predicate() holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    raise TimeoutError("workflow did not reach the kill point in time")


def test_snakemake_lint_is_clean() -> None:
    proc = _run(REPO, ["snakemake", "--lint"])
    _assert_ok(proc)  # exit status 1 when any rule has a lint


@pytest.mark.workflow
def test_workflow_end_to_end_resumes_after_kills(clean_run: Path, tmp_path: Path) -> None:
    # 1. Uninterrupted run: every table and figure, nothing left to do afterwards.
    clean = clean_run
    results, figures = clean / "results" / "tiny", clean / "figures" / "tiny"
    for name in ("bpb.csv", "metrics.json", "uncertainty.csv", "bpb_vs_steps.csv"):
        assert (results / name).stat().st_size > 0, name
    for name in (
        "bpb_table.md",
        "bpb_table.tex",
        "uncertainty_vs_error.png",
        "uncertainty_vs_error.pdf",
        "bpb_vs_steps.png",
        "bpb_vs_steps.pdf",
        "adaptive_compute.png",
        "adaptive_compute.pdf",
        "lambda_sweep.png",
        "uncertainty_gain.png",
        "uncertainty_gain.pdf",
    ):
        assert (figures / name).stat().st_size > 0, name
    bpb = pd.read_csv(results / "bpb.csv")
    assert list(bpb.columns) == ["domain", "method", "n", "bpb_mean", "bpb_se"]
    expected_methods = {"base", "sift", "nn", "nn_f", "us", "random", "sift_lam0.1"}
    expected_methods |= {"sift_mem0.5", "nn_mem0.5"}  # the memory-size curve (tiny.yaml)
    assert expected_methods | {"sift_adaptive_a1"} == set(bpb["method"])
    assert set(bpb["domain"]) == {"all", "Github", "FreeLaw", "DM Mathematics"}
    pooled = bpb[bpb["domain"] == "all"]
    assert (pooled["n"] == 6).all(), "3 domains x 2 prompts pooled in the `all` row"
    assert pooled["bpb_mean"].between(0.1, 20).all()
    metrics = json.loads((results / "metrics.json").read_text())
    assert set(metrics["bpb"]) >= expected_methods
    assert metrics["partial"] is None
    assert [row["fraction"] for row in metrics["memory_curve"]] == [0.5, 1.0]
    assert (figures / "memory_curve.png").stat().st_size > 0
    assert "| 50% |" in (figures / "memory_curve.md").read_text()
    _assert_modes_follow_umask(clean)
    for path in ("documents.parquet", "memory.faiss", "selections/sift.parquet"):
        assert (clean / "data" / "tiny" / f"{path}.run.json").is_file(), path
    again = _run(clean, ["snakemake", "-n", "--cores", "2", "--configfile", "config/tiny.yaml"])
    _assert_ok(again)
    assert "Nothing to be done" in again.stdout + again.stderr

    # 2. Same workflow, killed twice, resumed with the same command each time.
    crash = _workdir(tmp_path / "crash")
    data = crash / "data" / "tiny"

    def has_checkpoint() -> bool:
        ckpt = data / "checkpoints"
        return ckpt.is_dir() and any(ckpt.iterdir())

    proc = subprocess.Popen(RUN, cwd=crash, env=_env(), start_new_session=True)
    _wait_for(has_checkpoint, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all: stale lock, incomplete outputs
    proc.wait()
    assert Path("data/tiny/base_model") in _marked_incomplete(crash), "killed job not incomplete"
    documents_mtime = (data / "documents.parquet").stat().st_mtime_ns

    def finished_finetune() -> dict[Path, int]:
        """Fine-tuning outputs of jobs Snakemake recorded as finished, with their mtimes.

        A job killed after its atomic rename but before it exited is not finished: its output
        stays marked incomplete and is rightly redone.
        """
        unfinished = _marked_incomplete(crash)
        return {
            p: p.stat().st_mtime_ns
            for p in (data / "finetune").glob("*/shard-*.parquet")
            if p.relative_to(crash) not in unfinished
        }

    def some_finetune_done() -> bool:
        return bool(finished_finetune())

    proc = subprocess.Popen(RUN, cwd=crash, env=_env(), start_new_session=True)
    finished_early = not _wait_for(some_finetune_done, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=300)
    done_before = finished_finetune()

    _assert_ok(_run(crash, RUN))
    assert (data / "documents.parquet").stat().st_mtime_ns == documents_mtime, "corpus redone"
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"finished job redone: {path}"
    assert finished_early or done_before, "the second kill point was never reached"

    got, want = _report_outputs(crash), _report_outputs(clean)
    pd.testing.assert_frame_equal(got["bpb"], want["bpb"])
    sort = ["method", "prompt_id", "steps"]
    pd.testing.assert_frame_equal(
        got["per_prompt"].sort_values(sort).reset_index(drop=True),
        want["per_prompt"].sort_values(sort).reset_index(drop=True),
    )
    _assert_same_artifacts(crash, clean)


def _artifacts(root: Path) -> dict[str, bytes]:
    """Every artifact of a run (data/, results/, figures/) by path, except provenance records
    (run.json: argv, timings, platform), pre-training checkpoints (a resumed run writes only the
    later ones) and the hidden temporaries (.<name>.<random>.tmp) a SIGKILLed job leaves."""
    out = {}
    for top in ("data", "results", "figures"):
        for p in sorted((root / top).rglob("*")):
            rel = p.relative_to(root)
            leftover = any(part.startswith(".") and part.endswith(".tmp") for part in rel.parts)
            if (
                p.is_file()
                and not p.name.endswith("run.json")
                and "checkpoints" not in rel.parts
                and not leftover
            ):
                out[str(rel)] = p.read_bytes()
    return out


def _assert_same_artifacts(got_root: Path, want_root: Path) -> None:
    got, want = _artifacts(got_root), _artifacts(want_root)
    assert sorted(got) == sorted(want)
    differ = sorted(name for name in want if got[name] != want[name])
    assert not differ, f"artifacts differ between identical runs: {differ}"


def _assert_modes_follow_umask(root: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    for top in ("data", "results", "figures"):
        for p in [root / top, *(root / top).rglob("*")]:
            want = (0o777 if p.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(p.stat().st_mode) == want, f"{p}: {oct(p.stat().st_mode)}"


@pytest.mark.workflow
def test_dry_run_with_another_config_changes_nothing(clean_run: Path) -> None:
    """The probe's case: a dry run with config B (same name, other finetune.lr) must not change
    what the finished (or a running) run A computed, and lists exactly B's stale jobs."""
    other = yaml.safe_load((clean_run / "config" / "tiny.yaml").read_text())
    other["finetune"]["lr"] = 0.002
    (clean_run / "config" / "other.yaml").write_text(yaml.safe_dump(other))
    before = _tree(clean_run)
    dry = ["snakemake", "-n", "--cores", "1", "--configfile"]
    proc = _run(clean_run, [*dry, "config/other.yaml"])
    _assert_ok(proc)
    stale = _job_counts(proc.stdout + proc.stderr)
    # 8 variants (5 methods, sift_lam0.1, sift_mem0.5, nn_mem0.5) x 2 shards
    assert stale == {"finetune": 16, "finetune_base": 2, "aggregate": 1, "report": 1, "all": 1}
    assert _tree(clean_run) == before
    again = _run(clean_run, [*dry, "config/tiny.yaml"])
    _assert_ok(again)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.workflow
def test_snakemake_report_has_the_figures(clean_run: Path) -> None:
    """`snakemake --report report.zip` (the catalog's convention) holds every table and figure."""
    proc = _run(
        clean_run, ["snakemake", "--report", "report.zip", "--configfile", "config/tiny.yaml"]
    )
    _assert_ok(proc)
    with zipfile.ZipFile(clean_run / "report.zip") as archive:
        names = {Path(n).name for n in archive.namelist()}
    expected = {
        "report.html",
        "bpb.csv",
        "bpb_table.md",
        "uncertainty_vs_error.png",
        "bpb_vs_steps.png",
        "adaptive_compute.png",
        "lambda_sweep.png",
        "uncertainty_gain.png",
        "memory_curve.md",
        "memory_curve.png",
    }
    assert expected <= names, expected - names
