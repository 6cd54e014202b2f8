"""The bf16 speed warning: only for bf16 on a CPU without native bf16 instructions."""

from __future__ import annotations

import pytest
import torch

from testtime.device import slow_cpu_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _cpu_flags(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_warns_for_emulated_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_flags(monkeypatch, avx512_bf16=False, amx=False)
    message = slow_cpu_bf16(CPU, bf16=True)
    assert message is not None
    assert "model.pretrain.bf16" in message and "embed.bf16" in message


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (True, True)])
def test_silent_with_native_bf16(monkeypatch: pytest.MonkeyPatch, avx512_bf16, amx) -> None:
    _cpu_flags(monkeypatch, avx512_bf16=avx512_bf16, amx=amx)
    assert slow_cpu_bf16(CPU, bf16=True) is None


def test_silent_for_fp32_and_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_flags(monkeypatch, avx512_bf16=False, amx=False)
    assert slow_cpu_bf16(CPU, bf16=False) is None
    assert slow_cpu_bf16(CUDA, bf16=True) is None
