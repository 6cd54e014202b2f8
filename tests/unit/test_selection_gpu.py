"""CPU and CUDA selections agree (marked gpu: skipped without a CUDA device).

Same float32 inputs on both devices, every selector: identical indices and variance traces
within float32 rounding; also fp16 inputs and the adaptive stop on the traces.
"""

from __future__ import annotations

import pytest
import torch

from testtime.selection import SELECTORS, adaptive_stop_steps, sift

pytestmark = pytest.mark.gpu


def inputs(b: int = 16, k: int = 100, d: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    noise = torch.nn.functional.normalize(torch.randn(b, k, d, generator=g), dim=-1)
    c = torch.nn.functional.normalize(0.6 * q.unsqueeze(1) + noise, dim=-1)
    return q, c


@pytest.mark.parametrize("name", ["sift", "nn", "nn_f", "us", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_and_cuda_selections_agree(name: str, dtype: torch.dtype) -> None:
    q, c = inputs()
    q, c = q.to(dtype), c.to(dtype)
    kwargs = {}
    if name == "random":
        kwargs = {"generator": [torch.Generator().manual_seed(i) for i in range(q.shape[0])]}
    cpu = SELECTORS[name](q, c, 20, lam=0.1, **kwargs)
    if name == "random":
        kwargs = {"generator": [torch.Generator().manual_seed(i) for i in range(q.shape[0])]}
    gpu = SELECTORS[name](q.cuda(), c.cuda(), 20, lam=0.1, **kwargs)
    assert gpu.indices.device.type == "cuda"
    assert torch.equal(cpu.indices, gpu.indices.cpu())
    assert torch.allclose(cpu.variances, gpu.variances.cpu(), atol=1e-5)


@pytest.mark.parametrize("gram", [True, False])
def test_adaptive_sift_agrees_across_devices(gram: bool) -> None:
    q, c = inputs(seed=1)
    cpu = sift(q, c, 30, lam=0.1, gram=gram)
    gpu = sift(q.cuda(), c.cuda(), 30, lam=0.1, gram=gram)
    stops = adaptive_stop_steps(cpu.variances, 0.5)
    assert torch.equal(stops, adaptive_stop_steps(gpu.variances, 0.5).cpu())
    assert 0 < stops.min() and stops.max() < 30  # the rule stops these rows mid-selection
    assert torch.equal(cpu.indices, gpu.indices.cpu())


def test_tf32_products_of_half_inputs_are_exact() -> None:
    """fp16 inputs: the TF32 kernel products (posterior.HALF_INPUTS_TF32) give the selection
    and variances of plain float32 products, with and without the kernel matrix."""
    from testtime.selection import posterior

    q, c = inputs(b=64, k=300, d=384, seed=2)
    q, c = q.half().cuda(), c.half().cuda()
    for gram in (True, False):
        posterior.HALF_INPUTS_TF32 = False
        try:
            plain = sift(q, c, 40, lam=0.1, gram=gram)
        finally:
            posterior.HALF_INPUTS_TF32 = True
        tf32 = sift(q, c, 40, lam=0.1, gram=gram)
        assert torch.equal(plain.indices, tf32.indices)
        assert torch.allclose(plain.variances, tf32.variances, atol=1e-6)
