"""vmap-batched attention (testtime.vmap_attention): the same values and gradients as plain
SDPA per sample, and no per-sample fallback loop in the batched fine-tuning path."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from tests.unit.test_finetune import V, _job
from tests.unit.tiny_lm import tiny_gpt2
from testtime.adapters import select_trainable
from testtime.finetune import Finetuner, TrainSettings
from testtime.vmap_attention import batched_sdpa


@pytest.mark.parametrize("masked", [False, True])
def test_vmap_grad_equals_per_sample_grad(masked):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)  # one weight per "prompt"
    x = torch.randn(3, 1, 2, 5, 8, generator=g, dtype=torch.float64)  # (B, batch, heads, L, d)
    mask = torch.ones(5, 5, dtype=torch.bool).tril() if masked else None

    def loss(w, x):
        q, k, v = x @ w, x @ w.T, x * 2
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not masked)
        return out.square().sum()

    expected = torch.stack([grad(loss)(w[b], x[b]) for b in range(3)])
    with batched_sdpa():
        got = vmap(grad(loss))(w, x)
    assert F.scaled_dot_product_attention.__module__.startswith("torch")  # restored
    torch.testing.assert_close(got, expected)


def test_batched_finetuning_runs_attention_without_the_fallback_loop():
    model = tiny_gpt2(V)
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings(lr=5e-3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.run_batched([_job(0, 2, 4), _job(1, 2, 5)])
    fallbacks = [str(w.message) for w in caught if "batching rule" in str(w.message)]
    assert not fallbacks, fallbacks[0]
