"""The SLURM profile against a real Slurm cluster (marked `slurm`; skipped where none answers).

Needs the one-node test cluster of scripts/slurm-cluster.sh (as root on Debian)::

    scripts/slurm-cluster.sh up
    .venv/bin/pytest -m slurm tests/workflow/test_slurm.py     # 30 min on 2 cores shared at load 9
    scripts/slurm-cluster.sh down

* tests/workflow/tiny.yaml runs through `--workflow-profile workflow/profiles/slurm`, overlaid
  with only the cluster's account and partitions; while it runs, the pre-training job is
  cancelled with scancel. Every job of every rule ran as a Slurm job (sacct lists each rule
  COMPLETED), the cancelled one was retried (the profile's `retries`), fine-tuning jobs got the
  profile's `cpus_per_gpu: 8` CPUs, and every artifact
  (selections, fine-tuning shards, per_prompt.parquet, bpb.csv, metrics.json, figures) is
  byte-identical to the local run of the same config.
* Bad input reaches the user as one readable line before or at the first submission: an
  unknown account or partition (Slurm's own message), the profile's placeholder account.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.workflow.test_workflow import (
    REPO,
    _artifacts,
    _assert_ok,
    _env,
    _job_counts,
    _run,
    _workdir,
)

ACCOUNT = "testtime"  # what scripts/slurm-cluster.sh creates
PARTITIONS = {"cpu": "cpu", "gpu": "gpu"}  # profile partition -> the cluster's
# status polling: the plugin waits 40 s before its first check by default
FAST_POLLING = [
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
]


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return False
    try:
        info = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return info.returncode == 0 and acct.returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _cluster_answers(), reason="no Slurm cluster with accounting answers"),
]


def _overlay_profile(root: Path, account: str = ACCOUNT, partitions: dict | None = None) -> Path:
    """workflow/profiles/slurm with only slurm_account and slurm_partition replaced."""
    partitions = PARTITIONS if partitions is None else partitions
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    profile["default-resources"]["slurm_account"] = account
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in resources:
            resources["slurm_partition"] = partitions[resources["slurm_partition"]]
    path = root / "profiles" / "slurm-test"
    path.mkdir(parents=True)
    (path / "profile.yaml").write_text(yaml.safe_dump(profile))
    return path


def _snakemake_slurm(profile: Path) -> list[str]:
    return [
        "snakemake",
        "--workflow-profile",
        str(profile),
        "--configfile",
        "config/tiny.yaml",
        *FAST_POLLING,
    ]


def _sacct(start: str) -> list[dict[str, str]]:
    """Allocations (no steps) since ``start``: id, state, cpus, comment (rule_<name>_...)."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", start, "-o", "JobID,State,AllocCPUS,Comment%200"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
    return [{"id": r[0], "state": r[1].split()[0], "cpus": r[2], "comment": r[3]} for r in rows]


def _running_job(rule: str) -> str | None:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        job, comment = line.split("|", 1)
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return job
    return None


def _rule(comment: str) -> str:
    name = comment.removeprefix("rule_")
    return name.split("_wildcards_")[0]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = _workdir(tmp_path_factory.mktemp("local"))
    _assert_ok(
        _run(workdir, ["snakemake", "--cores", "2", "--configfile", "config/tiny.yaml"], 1800)
    )
    return workdir


def test_tiny_run_on_slurm_matches_local_and_survives_scancel(
    local_run: Path, tmp_path: Path
) -> None:
    workdir = _workdir(tmp_path / "wf")
    profile = _overlay_profile(tmp_path)
    dry = _run(workdir, [*_snakemake_slurm(profile), "-n"])
    _assert_ok(dry)
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    proc = subprocess.Popen(
        _snakemake_slurm(profile),
        cwd=workdir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cancelled = None
    deadline = time.monotonic() + 1200
    while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
        cancelled = _running_job("pretrain")
        time.sleep(0.2)
    assert cancelled is not None, "the pre-training job was never seen running"
    subprocess.run(["scancel", cancelled], check=True)
    output, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, output[-6000:]

    jobs = _sacct(start)
    completed = {}
    for job in jobs:
        if job["state"] == "COMPLETED":
            completed[job["comment"]] = completed.get(job["comment"], 0) + 1
    by_rule = {}
    for comment in completed:
        by_rule[_rule(comment)] = by_rule.get(_rule(comment), 0) + 1
    expected = {
        name: count
        for name, count in _job_counts(dry.stdout).items()
        if name not in ("all",)  # a target without a command: Snakemake runs nothing
    }
    assert by_rule == expected, f"COMPLETED Slurm jobs per rule {by_rule} != the DAG's {expected}"
    states = {job["id"]: job["state"] for job in jobs}
    assert states[cancelled] == "CANCELLED", states[cancelled]
    assert "rule_pretrain" in completed, "the cancelled pre-training job was not retried"
    finetune_cpus = {job["cpus"] for job in jobs if _rule(job["comment"]) == "finetune"}
    assert finetune_cpus == {"8"}, f"finetune jobs got {finetune_cpus} CPUs, not cpus_per_gpu: 8"

    got, want = _artifacts(workdir), _artifacts(local_run)
    assert sorted(got) == sorted(want)
    for name in ("selections/sift.parquet", "per_prompt.parquet", "bpb.csv", "metrics.json"):
        assert any(path.endswith(name) for path in want), name
    differ = sorted(name for name in want if got[name] != want[name])
    assert not differ, f"artifacts differ between the Slurm and the local run: {differ}"


def _first_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log, log[-4000:]
    return log


@pytest.mark.parametrize(
    ("account", "partitions", "slurm_says"),
    [
        ("nosuchaccount", None, "nosuchaccount"),
        (ACCOUNT, {"cpu": "nosuchpartition", "gpu": "gpu"}, "invalid partition"),
    ],
)
def test_unknown_account_or_partition_reports_slurms_error(
    tmp_path: Path, account: str, partitions: dict | None, slurm_says: str
) -> None:
    workdir = _workdir(tmp_path / "wf")
    profile = _overlay_profile(tmp_path, account, partitions)
    proc = _run(workdir, _snakemake_slurm(profile), timeout=300)
    log = _first_error(proc)
    lines = [line for line in log.splitlines() if slurm_says in line.lower()]
    assert lines, log[-4000:]
    assert not (workdir / "data" / "tiny" / "documents.parquet").exists()


def test_placeholder_account_is_refused_before_submission(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path / "wf")
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    proc = _run(
        workdir,
        [
            "snakemake",
            "--workflow-profile",
            "workflow/profiles/slurm",
            "--configfile",
            "config/tiny.yaml",
        ],
    )
    log = _first_error(proc)
    assert "slurm_account is still the placeholder 'your_account'" in log
    assert not [job for job in _sacct(start) if job["comment"].startswith("rule_")], (
        "a job was submitted"
    )
