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


def slow_cpu_bf16(device: torch.device, bf16: bool) -> str | None:
    """Why bf16 autocast would be slow here, or None.

    CPUs without native bf16 (AVX512-BF16 or AMX) emulate it: on a 2-core AVX2 EPYC one demo
    pre-training step took 27x longer under bf16 autocast than in fp32 (docs/performance.md).
    The config is not switched behind the user's back, since results must follow the config
    alone; the caller prints this line.
    """
    if not bf16 or device.type != "cpu":
        return None
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return (
        "warning: bf16 autocast on a CPU without AVX512-BF16/AMX is emulated and can be 10-30x "
        "slower than fp32; set model.pretrain.bf16 and embed.bf16 to false for speed "
        "(the numbers then differ from the bf16 run's)"
    )
