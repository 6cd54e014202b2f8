"""Scaled-dot-product attention that ``torch.func.vmap`` runs as one batched call.

The batched fine-tuning path (:meth:`testtime.finetune.Finetuner.run_batched`) computes every
prompt's gradient with ``vmap(grad(loss))``. PyTorch has vmap batching rules for the forward
kernels of ``F.scaled_dot_product_attention`` on CUDA but none for their backward kernels (nor
for the CPU kernels), so vmap ran the attention backward once per prompt and layer
("There is a performance drop because we have not yet implemented the batching rule for
aten::_scaled_dot_product_efficient_attention_backward"). Measured on an H200 (GPT-2 124M,
context 1,024, 8 prompts): 12.7 ms per prompt-step, about eight times the arithmetic.

Here attention is an autograd.Function whose forward and backward each carry a ``vmap``
rule that folds the vmapped dimension into the batch dimension and makes one ordinary call:
the forward is plain SDPA, the backward recomputes SDPA under autograd and differentiates it
(one extra attention forward, the usual recompute trade). Attention has no parameters, so
folding the prompts into the batch changes nothing but the kernel count. :func:`batched_sdpa`
installs it as ``torch.nn.functional.scaled_dot_product_attention`` for the duration of a
``with`` block (Hugging Face models look the function up at call time); calls with dropout or
grouped-query attention go to the original function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_ORIGINAL = F.scaled_dot_product_attention


def _fold(t: torch.Tensor | None, bdim: int | None, size: int) -> torch.Tensor | None:
    """Move the vmapped dim to the front and fold it into the next (the batch) dim."""
    if t is None or bdim is None:
        return t  # unbatched: broadcasts (masks are (1, 1, L, L) or (L, L))
    return t.movedim(bdim, 0).flatten(0, 1)


def _fold_all(tensors, in_dims, size):
    folded = []
    for t, d in zip(tensors, in_dims, strict=True):
        if t is not None and d is None and t.dim() == 4:  # q/k/v shared by all prompts
            t, d = t.unsqueeze(0).expand(size, *t.shape), 0
        folded.append(_fold(t, d, size))
    return folded


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(q, k, v, mask, scale, is_causal):
        return _ORIGINAL(q, k, v, attn_mask=mask, scale=scale, is_causal=is_causal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, scale, is_causal = inputs
        ctx.has_mask = mask is not None
        ctx.save_for_backward(q, k, v, *([mask] if ctx.has_mask else []))
        ctx.scale, ctx.is_causal = scale, is_causal

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *rest = ctx.saved_tensors
        mask = rest[0] if ctx.has_mask else None
        dq, dk, dv = _AttentionBackward.apply(q, k, v, grad_out, mask, ctx.scale, ctx.is_causal)
        return dq, dk, dv, None, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, mask, scale, is_causal):
        q, k, v, mask = _fold_all((q, k, v, mask), in_dims[:4], info.batch_size)
        out = _Attention.apply(q, k, v, mask, scale, is_causal)
        return out.unflatten(0, (info.batch_size, -1)), 0


class _AttentionBackward(torch.autograd.Function):
    @staticmethod
    def forward(q, k, v, grad_out, mask, scale, is_causal):
        with torch.enable_grad():
            q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
            out = _ORIGINAL(q, k, v, attn_mask=mask, scale=scale, is_causal=is_causal)
            return torch.autograd.grad(out, (q, k, v), grad_out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("second derivatives of batched_sdpa attention are not supported")

    @staticmethod
    def vmap(info, in_dims, q, k, v, grad_out, mask, scale, is_causal):
        q, k, v, grad_out, mask = _fold_all((q, k, v, grad_out, mask), in_dims[:5], info.batch_size)
        grads = _AttentionBackward.apply(q, k, v, grad_out, mask, scale, is_causal)
        return tuple(g.unflatten(0, (info.batch_size, -1)) for g in grads), (0, 0, 0)


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    if dropout_p or kw.get("enable_gqa"):
        return _ORIGINAL(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kw)
    return _Attention.apply(query, key, value, attn_mask, scale, is_causal)


@contextlib.contextmanager
def batched_sdpa() -> Iterator[None]:
    """Within the block, ``F.scaled_dot_product_attention`` is the vmap-batched version."""
    F.scaled_dot_product_attention = _sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _ORIGINAL
