"""The stacked engine: B prompts fine-tuned at once with ``torch.func.vmap`` (for GPUs).

The trainable parameters are stacked ``(B, *shape)``, one row per prompt, every row starting
from the base values. Per-prompt losses and gradients come from ``torch.func.vmap`` over
``functional_call`` (one sequence per prompt and step, right-padded to a common length and
masked in the loss); :class:`~testtime.finetune.optim.StackedAdam` then takes one Adam/AdamW
step on the stacked tensors, masked per prompt (a prompt that has run out of steps or hit a NaN
loss stops updating). Scoring goes through :meth:`TuningModel.score`, the evaluation every
engine shares.

With dropout off the rows equal the sequential engine's prompt by prompt
(tests/unit/test_finetune.py); with dropout on, the masks come from one seed per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from testtime.finetune.jobs import PromptJob, TrainSettings
from testtime.finetune.model import TuningModel, pad_step
from testtime.finetune.optim import StackedAdam
from testtime.lm import lm_loss
from testtime.seeding import derive_seed

__all__ = ["StackedEngine"]


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


class StackedEngine:
    """:class:`testtime.finetune.driver.Engine` for B prompts: ``tuning``'s trainable
    parameters stacked ``(B, *shape)`` and trained with ``settings``; torch is seeded once per
    batch from ``seed`` and the batch's prompt ids."""

    def __init__(self, tuning: TuningModel, settings: TrainSettings, seed: int = 0) -> None:
        self.tuning = tuning
        self.settings = settings
        self.seed = seed

    def start(self, jobs: Sequence[PromptJob]) -> None:
        from torch.func import functional_call, grad_and_value, vmap

        tm = self.tuning
        n_b = len(jobs)
        model = tm.model
        tm.restore()
        train_names = set(tm.trainable)
        frozen = {n: p.detach() for n, p in model.named_parameters() if n not in train_names}
        frozen.update(dict(model.named_buffers()))
        self.stacked = {n: v.unsqueeze(0).repeat(n_b, *([1] * v.dim())) for n, v in tm.base.items()}
        self.adam = StackedAdam(self.stacked, self.settings)
        torch.manual_seed(derive_seed(self.seed, *[j.prompt_id for j in jobs]))

        def loss_fn(p, x, valid):
            with tm.mixed_precision():
                logits = functional_call(model, (p, frozen), (x[None],)).logits[0]
            return lm_loss(logits, x, valid)

        self.grad_fn = vmap(grad_and_value(loss_fn), randomness="different")
        self.forward = vmap(
            lambda p, x: functional_call(model, (p, frozen), (x[None],)).logits[0],
            randomness="different",
        )
        self.inputs, self.targets = tm.windows(jobs)
        model.train()

    def step(self, seqs: Sequence[torch.Tensor | None]) -> list[bool]:
        device = self.tuning.device
        ids, valid = pad_step(seqs)
        with _no_padding_check(self.tuning.model):
            grads, loss = self.grad_fn(self.stacked, ids.to(device), valid.to(device))
        finite = torch.isfinite(loss).cpu().tolist()
        # all B rows are computed (vmap); only those with a sequence and a finite loss update
        take = [s is not None and f for s, f in zip(seqs, finite, strict=True)]
        self.adam.step(grads, torch.tensor(take, device=device))
        return take

    def evaluate(self, rows: Sequence[int]) -> list[float]:
        # every row is scored and the requested ones returned: one vmap over the whole batch,
        # whose shape, and so whose float rounding, does not depend on which rows are due
        with _no_padding_check(self.tuning.model):
            values = self.tuning.score(
                self.inputs, self.targets, lambda x: self.forward(self.stacked, x)
            )
        return [values[b] for b in rows]
