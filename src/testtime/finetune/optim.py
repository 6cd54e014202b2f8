"""The optimizer of test-time fine-tuning: Adam or AdamW (config ``finetune.optimizer``).

:func:`make_optimizer` is the one place that maps :class:`TrainSettings` to a ``torch.optim``
optimizer; :class:`StackedAdam` runs it over stacked ``(B, *shape)`` tensors, one row per
prompt, for the batched engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from testtime.finetune.jobs import TrainSettings

__all__ = ["StackedAdam", "make_optimizer"]


def make_optimizer(
    params: Iterable[torch.Tensor], settings: TrainSettings, *, fused: bool | None = None
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``adam``) or ``AdamW`` (``adamw``) over ``params`` with the
    settings' lr, betas, eps and weight decay; ``fused`` as torch's (None: torch's default)."""
    s = settings
    cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay, fused=fused)


class StackedAdam:
    """:func:`make_optimizer` (``fused=True``) over stacked ``(B, *shape)`` leaves.

    Adam is elementwise, so one optimizer over the stacked tensors updates row b exactly as a
    per-prompt optimizer over prompt b's parameters would: the class calls the same fused
    kernel (``torch.optim.adam.adam``) with the same arguments, in one pass over memory instead
    of the dozen passes of unfused elementwise ops (the update is memory-bound: on an H200 the
    fused kernel took 1.0 ms per prompt and step of a 124M model, 9% of the batched step's GPU
    time). The optimizer's step count is one scalar per stacked tensor, shared by all rows:
    all prompts start together and a stopped prompt never resumes.

    What torch.optim cannot express is added around :meth:`step`: per-prompt gradient clipping
    (each row's gradients scaled by its own norm, as ``clip_grad_norm_`` on prompt b alone)
    and per-prompt masking (rows outside ``mask`` -- stopped prompts, whose gradients may be
    NaN -- are saved before the update and written back after it, parameters and Adam moments
    alike).
    """

    def __init__(self, params: Mapping[str, torch.Tensor], settings: TrainSettings) -> None:
        self.params = dict(params)
        self.settings = settings
        self.optimizer = make_optimizer(list(self.params.values()), settings, fused=True)

    @torch.no_grad()
    def step(self, grads: Mapping[str, torch.Tensor], mask: torch.Tensor) -> None:
        """One step with ``grads`` (by parameter name, ``(B, *shape)``), only where ``mask``
        ``(B,)`` bool is True."""
        s = self.settings
        if s.grad_clip is not None:
            sq = sum(g.float().pow(2).flatten(1).sum(1) for g in grads.values())
            coef = (s.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
            grads = {n: g * coef.view(-1, *([1] * (g.dim() - 1))) for n, g in grads.items()}
        frozen_rows = (~mask).nonzero().squeeze(1)
        params = list(self.params.values())
        moments = ("exp_avg", "exp_avg_sq")
        if len(frozen_rows):
            kept = [p[frozen_rows].clone() for p in params]
            # optimizer state is created by the first step: the moments start at 0
            kept_state = [
                {k: self.optimizer.state[p][k][frozen_rows].clone() for k in moments}
                if self.optimizer.state[p]
                else {}
                for p in params
            ]
        for n, p in self.params.items():
            # contiguous: vmap returns some gradients with transposed strides, and the fused
            # kernel walks raw memory, so it would pair them with the wrong elements
            p.grad = grads[n].to(p.dtype).contiguous()
        self.optimizer.step()
        for p in params:
            p.grad = None
        if len(frozen_rows):
            for p, rows, state in zip(params, kept, kept_state, strict=True):
                p[frozen_rows] = rows
                for k in moments:
                    self.optimizer.state[p][k][frozen_rows] = state.get(k, 0.0)
