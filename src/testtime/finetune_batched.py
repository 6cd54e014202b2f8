"""The batched path of :class:`testtime.finetune.Finetuner`: B prompts fine-tuned at once.

The trainable parameters are stacked ``(B, *shape)``, one row per prompt, every row starting
from the finetuner's base snapshot. Per-prompt losses and gradients come from
``torch.func.vmap`` over ``functional_call`` (one sequence per prompt and step, right-padded to
a common length and masked in the loss); :class:`StackedAdam` then takes one Adam/AdamW step on
the stacked tensors, masked per prompt (a prompt that has run out of steps or hit a NaN loss
stops updating). Scoring goes through :meth:`Finetuner.score`, the evaluation every path
shares. :mod:`testtime.lora_batched` (LoRA adapters) uses :func:`pad_step` and
:class:`StackedAdam` from here too.

With dropout off the rows equal :meth:`Finetuner.run_sequential` prompt by prompt
(tests/unit/test_finetune.py); with dropout on, the masks come from one seed per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from testtime.finetune import (
    STATUS_OK,
    EvalRow,
    Finetuner,
    PromptJob,
    TrainSettings,
    _autocast,
    lm_loss,
)
from testtime.seeding import derive_seed

__all__ = ["StackedAdam", "pad_step", "run_batched"]


def pad_step(seqs: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad one step's sequences to ``(B, L)`` ids and a ``(B, L)`` validity mask
    (``None``: a prompt that takes no step, all padding)."""
    length = max((len(s) for s in seqs if s is not None), default=2)
    ids = torch.zeros((len(seqs), length), dtype=torch.long)
    valid = torch.zeros((len(seqs), length), dtype=torch.bool)
    for b, s in enumerate(seqs):
        if s is not None:
            ids[b, : len(s)] = s
            valid[b, : len(s)] = True
    return ids, valid


@contextlib.contextmanager
def _no_padding_check(model: torch.nn.Module) -> Iterator[None]:
    """Hide ``config.pad_token_id`` while the model runs under ``vmap``.

    Without an attention mask, Hugging Face models test whether the first or last input id is
    the pad token (``warn_if_padding_and_no_attention_mask``: ``pad_id in ids[:, [-1, 0]]``,
    a ``.item()``), which vmap cannot batch: every model whose config names a pad token (the
    workflow's own tokenizer sets one; so does Phi-3) failed in the batched path. The check
    only decides whether to warn; padding is masked in the loss here, and with causal attention
    right padding never reaches earlier positions.
    """
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        yield
        return
    config.pad_token_id = None
    try:
        yield
    finally:
        config.pad_token_id = pad


class StackedAdam:
    """``torch.optim.Adam`` / ``AdamW`` (``fused=True``) over stacked ``(B, *shape)`` leaves.

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
        self.settings = s = settings
        cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = cls(
            list(self.params.values()),
            lr=s.lr,
            betas=s.betas,
            eps=s.eps,
            weight_decay=s.weight_decay,
            fused=True,
        )

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


def run_batched(finetuner: Finetuner, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
    """Fine-tune ``B = len(jobs)`` independent copies of ``finetuner``'s trainable parameters
    at once (:meth:`Finetuner.run_batched`); rows per job, in step order."""
    with _no_padding_check(finetuner.model):
        return _run_batched(finetuner, jobs)


def _run_batched(ft: Finetuner, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
    from torch.func import functional_call, grad_and_value, vmap

    n_b = len(jobs)
    model = ft.model
    ft._restore()
    train_names = set(ft.trainable)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in train_names}
    frozen.update(dict(model.named_buffers()))
    stacked = {n: v.unsqueeze(0).repeat(n_b, *([1] * v.dim())) for n, v in ft._base.items()}
    adam = StackedAdam(stacked, ft.settings)
    torch.manual_seed(derive_seed(ft.seed, *[j.prompt_id for j in jobs]))

    def loss_fn(p, x, valid):
        with _autocast(ft.device, ft.autocast):
            logits = functional_call(model, (p, frozen), (x[None],)).logits[0]
        return lm_loss(logits, x, valid)

    grad_fn = vmap(grad_and_value(loss_fn), randomness="different")
    fwd = vmap(
        lambda p, x: functional_call(model, (p, frozen), (x[None],)).logits[0],
        randomness="different",
    )
    inputs, targets = ft._make_windows(jobs)

    def evaluate() -> list[float]:
        return ft.score(inputs, targets, lambda x: fwd(stacked, x))

    rows: list[list[EvalRow]] = [[] for _ in jobs]
    alive = [True] * n_b
    if any(0 in j.eval_steps for j in jobs):
        for b, v in enumerate(evaluate()):
            if 0 in jobs[b].eval_steps:
                rows[b].append(ft._row(jobs[b], 0, v))
    model.train()
    n_steps = max(len(j.train_ids) for j in jobs)
    for step in range(1, n_steps + 1):
        take = [alive[b] and step <= len(j.train_ids) for b, j in enumerate(jobs)]
        if not any(take):
            break
        ids, valid = pad_step(
            [j.train_ids[step - 1] if take[b] else None for b, j in enumerate(jobs)]
        )
        grads, loss = grad_fn(stacked, ids.to(ft.device), valid.to(ft.device))
        finite = torch.isfinite(loss).cpu().tolist()
        for b in range(n_b):
            if take[b] and not finite[b]:
                alive[b] = take[b] = False
                rows[b] += ft._nan_rest(jobs[b], step - 1)
        adam.step(grads, torch.tensor(take, device=ft.device))
        due = [take[b] and step in jobs[b].eval_steps for b in range(n_b)]
        if any(due):
            values = evaluate()
            for b in range(n_b):
                if due[b]:
                    rows[b].append(ft._row(jobs[b], step, values[b]))
                    if rows[b][-1].status != STATUS_OK:
                        alive[b] = False
                        rows[b] += ft._nan_rest(jobs[b], step)
    return rows
