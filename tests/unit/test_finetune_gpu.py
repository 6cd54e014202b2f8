"""Fine-tuning on CUDA agrees with the CPU (marked gpu: skipped without a CUDA device).

The batched (vmap) path and the one-prompt path on the GPU give the CPU one-prompt loop's bits
per byte in float32; under bf16 autocast they stay close to float32; the fused stacked Adam
update on the GPU equals the CPU one.
"""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_finetune import mode_model, three_jobs
from testtime.adapters import select_trainable
from testtime.finetune import Finetuner, TrainSettings
from testtime.finetune.optim import StackedAdam

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SETTINGS = TrainSettings(optimizer="adamw", lr=5e-3, weight_decay=0.01, grad_clip=1.0)


def _nll(rows):
    return [[r.nll for r in job_rows] for job_rows in rows]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_cuda_paths_equal_cpu_loop_in_float32(mode):
    cpu = Finetuner(mode_model(mode), select_trainable(mode_model(mode), mode), SETTINGS)
    expected = [cpu.run_sequential(j) for j in three_jobs()]
    model = mode_model(mode)
    gpu = Finetuner(model, select_trainable(model, mode), SETTINGS, device="cuda", autocast=False)
    sequential = [gpu.run_sequential(j) for j in three_jobs()]
    batched = gpu.run_batched(three_jobs())
    for got in (sequential, batched):
        assert [[r.steps for r in rows] for rows in got] == [
            [r.steps for r in rows] for rows in expected
        ]
        for g, e in zip(_nll(got), _nll(expected), strict=True):
            assert g == pytest.approx(e, rel=1e-4)


def test_bf16_autocast_on_cuda_stays_close_to_float32():
    model = mode_model("full")
    f32 = Finetuner(model, select_trainable(model, "full"), SETTINGS, device="cuda")
    f32.autocast = False
    reference = f32.run_batched(three_jobs())
    f32.autocast = True  # the CUDA default
    for got in (f32.run_batched(three_jobs()), [f32.run_sequential(j) for j in three_jobs()]):
        assert all(r.status == "ok" for rows in got for r in rows)
        for g, e in zip(_nll(got), _nll(reference), strict=True):
            assert g == pytest.approx(e, rel=2e-2)


def test_stacked_adam_update_on_cuda_equals_cpu():
    gen = torch.Generator().manual_seed(0)
    shapes = {"w": (3, 6, 5), "b": (3, 5)}
    mask = torch.tensor([True, False, True])
    results = {}
    for device in ("cpu", "cuda"):
        params = {
            n: torch.randn(s, generator=torch.Generator().manual_seed(1)) for n, s in shapes.items()
        }
        params = {n: v.to(device) for n, v in params.items()}
        adam = StackedAdam(params, SETTINGS)
        gen.manual_seed(2)
        for _ in range(3):
            grads = {
                "w": torch.randn(3, 5, 6, generator=gen).transpose(1, 2).to(device),
                "b": torch.randn(3, 5, generator=gen).to(device),
            }
            adam.step(grads, mask.to(device))
        results[device] = params
    for n in shapes:
        torch.testing.assert_close(results["cuda"][n].cpu(), results["cpu"][n])
