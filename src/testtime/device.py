"""Device selection from the config value ``device`` (auto | cpu | cuda | cuda:N)."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device' is {name!r} but no CUDA device is available")
    return device


def uses_gpu(name: str = "auto") -> bool:
    """Whether jobs with config ``device: name`` run on a GPU here (``auto``: CUDA present).

    The workflow declares a ``gpu`` resource only for such jobs: with ``auto`` on a CPU-only
    machine, a ``gpu=1`` claim would make the local ``--resources gpu=1`` cap run CPU jobs one
    at a time.

    >>> uses_gpu("cpu"), uses_gpu("cuda:1")
    (False, True)
    """
    if name == "auto":
        return torch.cuda.is_available()
    return torch.device(name).type == "cuda"
