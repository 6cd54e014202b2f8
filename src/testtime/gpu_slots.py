"""One GPU per job on a multi-GPU machine: an exclusive slot per device, taken before CUDA starts.

Snakemake counts a ``gpu`` resource but assigns no device ids (snakemake#281). The workflow
(``common.smk``) therefore caps ``gpu`` at the number of GPUs present and, for local runs, sets
:data:`SLOTS_ENV` to a directory under the run's ``.snakemake/``. A job that will use a GPU calls
:func:`claim` before anything initialises CUDA: it takes the first free device with an exclusive
``flock`` on ``<dir>/gpu-<id>.lock`` and narrows ``CUDA_VISIBLE_DEVICES`` to that device. The lock
lives as long as the process: a job that exits or is killed (even with SIGKILL) frees its slot,
because the kernel drops the lock with the last open descriptor. A job that finds every slot
taken waits.

The device pool is ``CUDA_VISIBLE_DEVICES`` when set (so a fake list such as ``0,1`` exercises
all of this on a CPU-only machine), else the GPUs ``nvidia-smi -L`` lists. Under Slurm
(``SLURM_JOB_ID`` set) nothing is claimed: Slurm binds GPUs to jobs itself.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SLOTS_ENV = "TESTTIME_GPU_SLOTS"
"""Directory of the slot lock files; claiming is off unless it is set (the workflow sets it)."""

_HELD: list[Slot] = []  # slots of this process, kept open until it exits


@dataclass(frozen=True)
class Slot:
    """A held GPU slot: the device id (as CUDA_VISIBLE_DEVICES names it) and its lock's fd."""

    device: str
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def visible_devices(env: Mapping[str, str] = os.environ) -> list[str]:
    """Device ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``.

    As CUDA does, the list stops at the first ``-1``.

    >>> visible_devices({"CUDA_VISIBLE_DEVICES": "2, 3,-1,4"}), visible_devices({"CUDA_VISIBLE_DEVICES": ""})
    (['2', '3'], [])
    """  # noqa: E501
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        devices = []
        for item in (part.strip() for part in listed.split(",")):
            if not item or item == "-1":
                break
            devices.append(item)
        return devices
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def try_acquire(devices: Sequence[str], directory: Path) -> Slot | None:
    """The first free slot among ``devices`` (held until released or the process ends), or None."""
    directory.mkdir(parents=True, exist_ok=True)
    for device in devices:
        fd = os.open(directory / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(device, fd)
    return None


def acquire(devices: Sequence[str], directory: Path, poll_seconds: float = 0.5) -> Slot:
    """Wait for a free slot among ``devices`` and take it (says once on stderr that it waits)."""
    if not devices:
        raise ValueError("no GPU to take a slot on")
    said = False
    while (slot := try_acquire(devices, directory)) is None:
        if not said:
            print(
                f"testtime: all {len(devices)} GPU slots in {directory} are taken; waiting",
                file=sys.stderr,
            )
            said = True
        time.sleep(poll_seconds)
    return slot


def claim(device_setting: str, env: Mapping[str, str] | None = None) -> str | None:
    """Take a GPU slot for this job and set ``CUDA_VISIBLE_DEVICES`` to it; return the device.

    Does nothing (None) unless :data:`SLOTS_ENV` is set, outside Slurm, for the config values
    ``auto`` and ``cuda`` (``cpu`` needs no GPU; ``cuda:N`` names its device itself), and only
    where a GPU is listed. Call it before torch touches CUDA.
    """
    env = os.environ if env is None else env
    directory = env.get(SLOTS_ENV)
    if not directory or "SLURM_JOB_ID" in env or device_setting not in ("auto", "cuda"):
        return None
    devices = visible_devices(env)
    if not devices:
        return None
    slot = acquire(devices, Path(directory))
    _HELD.append(slot)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
    return slot.device


def gpu_budget(requested: int | None, present: int) -> int | None:
    """The ``gpu`` resource of a local run: ``requested`` if given (at most ``present``), else
    every GPU present (None where there is none: GPU jobs then fail on their device check).

    >>> gpu_budget(None, 8), gpu_budget(2, 8), gpu_budget(None, 0)
    (8, 2, None)
    >>> gpu_budget(3, 2)
    Traceback (most recent call last):
    ...
    ValueError: --resources gpu=3 asks for 3 GPUs but this machine has 2 (CUDA_VISIBLE_DEVICES or nvidia-smi -L); use --resources gpu=2 or fewer
    """  # noqa: E501
    if requested is None:
        return present or None
    if requested > present:
        raise ValueError(
            f"--resources gpu={requested} asks for {requested} GPU{'s' * (requested != 1)} but"
            " this machine has"
            f" {present} (CUDA_VISIBLE_DEVICES or nvidia-smi -L);"
            f" use --resources gpu={present} or fewer"
        )
    return requested
