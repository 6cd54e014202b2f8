"""GPU slots (testtime.gpu_slots) with real processes and real flock, on CPU with fake device ids.

* Concurrent jobs never share a slot; N+1 jobs on N devices: the last one waits until a slot
  frees; a SIGKILLed job's slot is taken by the next job.
* The CLI claims only under the workflow (TESTTIME_GPU_SLOTS set), never under Slurm, and takes
  its slot before the stage runs (a `testtime finetune` waits while the only slot is held).
* The workflow refuses `--resources gpu=N` above the GPUs present, and the slurm profile's
  placeholder account, each with one line (Snakemake dry runs, a few seconds each).

Run: `.venv/bin/pytest tests/unit/test_gpu_slots.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testtime import gpu_slots

REPO = Path(__file__).resolve().parents[2]

# A job: take a slot, report the device it sees, hold the slot until its stdin closes.
JOB = textwrap.dedent(
    """
    import os, sys
    from testtime import gpu_slots
    device = gpu_slots.claim("auto")
    print(device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.read()
    """
)


def _start_job(slots: Path, devices: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB],
        env=os.environ | {gpu_slots.SLOTS_ENV: str(slots), "CUDA_VISIBLE_DEVICES": devices} | env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _device(job: subprocess.Popen) -> str:
    device, visible = job.stdout.readline().split()
    assert device == visible, "CUDA_VISIBLE_DEVICES must name the claimed device"
    return device


def _finish(job: subprocess.Popen) -> None:
    job.stdin.close()
    job.wait(timeout=30)


def test_concurrent_jobs_never_share_and_the_extra_one_waits(tmp_path: Path) -> None:
    jobs = [_start_job(tmp_path, "3,5,7") for _ in range(3)]
    devices = [_device(job) for job in jobs]
    assert sorted(devices) == ["3", "5", "7"], "each job has a device of its own"
    extra = _start_job(tmp_path, "3,5,7")
    time.sleep(1.0)
    assert extra.poll() is None
    assert gpu_slots.try_acquire(["3", "5", "7"], tmp_path) is None, "every slot is held"
    _finish(jobs[1])
    assert _device(extra) == devices[1], "the waiting job takes the slot that was freed"
    for job in [jobs[0], jobs[2], extra]:
        _finish(job)


def test_a_sigkilled_jobs_slot_is_reused(tmp_path: Path) -> None:
    first = _start_job(tmp_path, "0")
    assert _device(first) == "0"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    second = _start_job(tmp_path, "0")
    assert _device(second) == "0", "the kernel must have dropped the killed job's lock"
    _finish(second)


def test_no_claim_outside_the_workflow_under_slurm_or_for_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {gpu_slots.SLOTS_ENV: str(tmp_path), "CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpu_slots.claim("auto", {"CUDA_VISIBLE_DEVICES": "0,1"}) is None
    assert gpu_slots.claim("auto", env | {"SLURM_JOB_ID": "7"}) is None
    assert gpu_slots.claim("cpu", env) is None
    assert gpu_slots.claim("cuda:1", env) is None
    assert gpu_slots.claim("auto", env | {"CUDA_VISIBLE_DEVICES": ""}) is None
    assert not list(tmp_path.iterdir()), "nothing may be locked"


def test_the_cli_waits_for_a_slot_before_the_stage_runs(tmp_path: Path) -> None:
    """`testtime finetune` with a device in its config slice takes its slot first: while the
    only slot is held it waits; once freed it runs (and fails on the missing files)."""
    held = gpu_slots.try_acquire(["0"], tmp_path)
    assert held is not None
    cli = Path(sys.executable).parent / "testtime"
    args = [cli, "finetune", "--config-json", '{"device": "auto"}', "--method", "base"]
    args += ["--model", "m", "--prompts", "p", "--memory", "x", "--out", str(tmp_path / "o")]
    job = subprocess.Popen(
        args,
        env=os.environ | {gpu_slots.SLOTS_ENV: str(tmp_path), "CUDA_VISIBLE_DEVICES": "0"},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    assert job.poll() is None, "the stage ran although its GPU slot was taken"
    held.release()
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2
    assert "GPU slots" in err and "--model 'm' does not exist" in err, err


def _dry_run(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [bin_dir / "snakemake", "-n", "--configfile", "tests/workflow/tiny.yaml", *args],
        cwd=workdir,
        env=os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"} | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in log, log[-3000:]
    assert any(text in line for line in log.splitlines()), log[-3000:]


def test_more_gpus_requested_than_present_is_one_line() -> None:
    proc = _dry_run(REPO, "--cores", "1", "--resources", "gpu=3", CUDA_VISIBLE_DEVICES="0,1")
    _one_line_error(proc, "--resources gpu=3 asks for 3 GPUs but this machine has 2")


def test_placeholder_slurm_account_is_refused_before_anything_runs() -> None:
    proc = _dry_run(REPO, "--workflow-profile", "workflow/profiles/slurm")
    _one_line_error(proc, "slurm_account is still the placeholder 'your_account'")
