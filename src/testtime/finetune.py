"""Test-time fine-tuning: per prompt, fine-tune the base model on its selected sequences.

Protocol (Hübotter et al. 2024, arXiv 2410.08020, after Hardt & Sun 2024): for each test prompt,
start from the base weights with a fresh optimizer, take one optimizer step of causal-LM loss per
selected sequence (batch size 1, selection order), and score the prompt's evaluation text in
bits per byte (:mod:`testtime.bpb`) after each step in the prompt's ``eval_steps``.

Two paths with one result:

* :meth:`Finetuner.run_sequential` (B = 1 at a time; the CPU default; this module): trains the
  module in place with ``torch.optim.Adam/AdamW``, restoring the base weights from a snapshot
  per prompt.
* :meth:`Finetuner.run_batched` (B prompts at once; for GPUs; :mod:`testtime.finetune_batched`):
  the trainable parameters are stacked ``(B, *shape)``; per-prompt losses and gradients come
  from ``torch.func.vmap`` over ``functional_call``, and Adam runs on the stacked tensors,
  masked per prompt (a prompt that has run out of steps or hit a NaN loss stops updating). For
  ``lora`` (a peft model with only LoRA trainable) :meth:`Finetuner.run` uses
  :mod:`testtime.lora_batched` instead: one forward through the frozen base for all B prompts,
  per-prompt adapters as batched matmuls.

All paths score a prompt's evaluation windows with :meth:`Finetuner.score` (summed NLL in nats)
and turn nats into rows with :func:`testtime.bpb.bits_per_byte`.

With dropout off both give the same numbers (tested). With dropout on, the sequential path seeds
torch per prompt with ``derive_seed(seed, prompt_id)``; the batched path draws different masks
per prompt from one seed per batch (deterministic, but not identical to the sequential path).

NaN handling: a non-finite training loss or evaluation NLL stops that prompt; its remaining eval
steps get ``status = "nan_loss"`` and NaN values, and the others carry on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from testtime.bpb import bits_per_byte, make_windows, model_context, score_windows
from testtime.lm import lm_loss
from testtime.seeding import derive_seed

__all__ = [
    "STATUS_NAN",
    "STATUS_OK",
    "EvalRow",
    "Finetuner",
    "PromptJob",
    "TrainSettings",
    "lm_loss",
]

STATUS_OK = "ok"
STATUS_NAN = "nan_loss"


@dataclass(frozen=True)
class TrainSettings:
    """Optimizer settings (config ``finetune.*``); lr in units of parameter change per step."""

    optimizer: str = "adam"
    lr: float = 5e-5
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainSettings:
        """From a config loaded through the schema (which limits the optimizer to adam/adamw)."""
        ft = cfg["finetune"]
        return cls(
            optimizer=ft["optimizer"],
            lr=float(ft["lr"]),
            eps=float(ft["eps"]),
            weight_decay=float(ft["weight_decay"]),
            grad_clip=None if ft["grad_clip"] is None else float(ft["grad_clip"]),
        )


@dataclass
class PromptJob:
    """One prompt's work: ``train_ids`` are the selected sequences in selection order, each
    ``(L_i,)`` int64 already truncated to the training length; ``eval_ids`` is ``(1 + C + T,)``
    (bos, ``n_context`` = C unscored context tokens, the T scored eval tokens); ``n_bytes`` the
    UTF-8 bytes of the scored text; ``eval_steps`` the step counts after which to score
    (0 = base)."""

    prompt_id: int
    train_ids: list[torch.Tensor]
    eval_ids: torch.Tensor
    n_bytes: int
    eval_steps: tuple[int, ...] = field(default=())
    n_context: int = 0

    def __post_init__(self) -> None:
        steps = tuple(sorted(set(int(s) for s in self.eval_steps)))
        if steps and (steps[0] < 0 or steps[-1] > len(self.train_ids)):
            raise ValueError(
                f"prompt {self.prompt_id}: eval steps {steps} outside 0..{len(self.train_ids)}"
            )
        if self.n_bytes <= 0:
            raise ValueError(f"prompt {self.prompt_id}: evaluation text has no bytes")
        self.eval_steps = steps


class EvalRow(NamedTuple):
    """bpb of one prompt after ``steps`` gradient steps; ``nll`` in nats, ``bpb`` in bits/byte."""

    prompt_id: int
    steps: int
    nll: float
    n_bytes: int
    bpb: float
    status: str


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Finetuner:
    """Test-time fine-tuning of one base model for many prompts.

    ``model`` is a Hugging Face causal LM (already wrapped by :func:`testtime.adapters.wrap_lora`
    for ``lora``); ``trainable`` names the parameters that are updated. The base values of those
    parameters are snapshotted here and restored before every prompt.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        trainable: Sequence[str],
        settings: TrainSettings,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        autocast: bool | None = None,
        context: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.settings = settings
        self.seed = seed
        self.autocast = self.device.type == "cuda" if autocast is None else autocast
        self.context = context or model_context(model)
        params = dict(model.named_parameters())
        missing = [n for n in trainable if n not in params]
        if missing:
            raise ValueError(f"trainable parameters not in the model: {missing[:3]}")
        self.trainable = list(trainable)
        self._base = {n: params[n].detach().clone() for n in self.trainable}

    # ----------------------------------------------------------------------------- shared
    def _restore(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, value in self._base.items():
                params[n].copy_(value)

    def _row(self, job: PromptJob, steps: int, nll: float) -> EvalRow:
        if not math.isfinite(nll):
            return EvalRow(job.prompt_id, steps, math.nan, job.n_bytes, math.nan, STATUS_NAN)
        bpb = bits_per_byte(nll, job.n_bytes)
        return EvalRow(job.prompt_id, steps, nll, job.n_bytes, bpb, STATUS_OK)

    @staticmethod
    def _nan_rest(job: PromptJob, after: int) -> list[EvalRow]:
        return [
            EvalRow(job.prompt_id, s, math.nan, job.n_bytes, math.nan, STATUS_NAN)
            for s in job.eval_steps
            if s > after
        ]

    def _make_windows(self, jobs: Sequence[PromptJob]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = make_windows(
            [j.eval_ids for j in jobs], self.context, unscored=[j.n_context for j in jobs]
        )
        return inputs.to(self.device), targets

    def score(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        logits_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> list[float]:
        """Summed NLL (nats) of each prompt's scored windows ``inputs/targets (B, W, L)``
        (from :meth:`_make_windows`): the one evaluation every path uses.

        ``logits_fn`` maps ``(B, L)`` ids to logits (default: the module itself; the batched
        paths pass their per-prompt forward). Runs with the module in eval mode (dropout off)
        under the finetuner's autocast, without gradients, and puts the mode back after.
        """
        model = self.model
        fn = logits_fn if logits_fn is not None else (lambda x: model(x).logits)
        was_training = model.training
        model.eval()
        try:
            with _autocast(self.device, self.autocast):
                return score_windows(fn, inputs, targets).tolist()
        finally:
            model.train(was_training)

    def score_base(self, jobs: Sequence[PromptJob]) -> list[EvalRow]:
        """bpb of each job's eval text under the base model (0 steps), batched over jobs."""
        self._restore()
        nll = self.score(*self._make_windows(jobs))
        return [self._row(j, 0, v) for j, v in zip(jobs, nll, strict=True)]

    def run(self, jobs: Sequence[PromptJob], batch_prompts: int = 1) -> Iterator[list[EvalRow]]:
        """Yield each job's rows, ``batch_prompts`` prompts at a time (1 = sequential path)."""
        if batch_prompts <= 1:
            for job in jobs:
                yield self.run_sequential(job)
            return
        from testtime.finetune_batched import run_batched
        from testtime.lora_batched import is_lora_model, run_lora_batched

        # LoRA: per-prompt adapters as batched matmuls over one frozen-base forward
        run_part = run_lora_batched if is_lora_model(self.model, self.trainable) else run_batched
        for lo in range(0, len(jobs), batch_prompts):
            yield from run_part(self, jobs[lo : lo + batch_prompts])

    # ------------------------------------------------------------------------- sequential
    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        s = self.settings
        cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)

    def _eval_one(self, job: PromptJob) -> float:
        return self.score(*self._make_windows([job]))[0]

    def run_sequential(self, job: PromptJob) -> list[EvalRow]:
        """Fine-tune one prompt in place from the base weights; its rows in step order."""
        self._restore()
        torch.manual_seed(derive_seed(self.seed, job.prompt_id))
        params = dict(self.model.named_parameters())
        trainable = [params[n] for n in self.trainable]
        opt = self._optimizer(trainable)
        self.model.train()
        rows: list[EvalRow] = []
        if 0 in job.eval_steps:
            rows.append(self._row(job, 0, self._eval_one(job)))
        for step, seq in enumerate(job.train_ids, start=1):
            x = seq.to(self.device)[None]
            with _autocast(self.device, self.autocast):
                loss = lm_loss(self.model(x).logits, x, torch.ones_like(x, dtype=torch.bool))
            if not torch.isfinite(loss):
                return rows + self._nan_rest(job, step - 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(trainable, self.settings.grad_clip)
            opt.step()
            if step in job.eval_steps:
                rows.append(self._row(job, step, self._eval_one(job)))
                if rows[-1].status != STATUS_OK:
                    return rows + self._nan_rest(job, step)
        return rows

    # ---------------------------------------------------------------------------- batched
    def run_batched(self, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
        """Fine-tune ``B = len(jobs)`` independent copies at once; rows per job, step order
        (:func:`testtime.finetune_batched.run_batched`)."""
        from testtime.finetune_batched import run_batched

        return run_batched(self, jobs)
