"""Test-time fine-tuning: per prompt, fine-tune the base model on its selected sequences.

Protocol (Hübotter et al. 2024, arXiv 2410.08020, after Hardt & Sun 2024): for each test prompt,
start from the base weights with a fresh optimizer, take one optimizer step of causal-LM loss per
selected sequence (batch size 1, selection order), and score the prompt's evaluation text in
bits per byte (:mod:`testtime.bpb`) after each step in the prompt's ``eval_steps``.

:class:`Finetuner` picks one of three engines and runs it with the one step loop
(:func:`testtime.finetune.driver.drive`); all three give the same rows:

* sequential (B = 1 at a time; the CPU default; :mod:`testtime.finetune.sequential`): trains
  the module in place with ``torch.optim.Adam/AdamW``, restoring the base weights per prompt.
* stacked (B prompts at once; for GPUs; :mod:`testtime.finetune.stacked`): the trainable
  parameters are stacked ``(B, *shape)``; per-prompt losses and gradients come from
  ``torch.func.vmap`` over ``functional_call``, and Adam runs on the stacked tensors, masked per
  prompt (a prompt that has run out of steps or hit a NaN loss stops updating).
* LoRA (B prompts at once, for a peft model with only LoRA trainable;
  :mod:`testtime.finetune.lora`): one forward through the frozen base for all B prompts,
  per-prompt adapters as batched matmuls. :meth:`Finetuner.run` takes it for such models.

All engines score a prompt's evaluation windows with :meth:`TuningModel.score` (summed NLL in
nats), and the driver turns nats into rows with :func:`testtime.bpb.bits_per_byte`.

With dropout off the engines give the same numbers (tested). With dropout on, the sequential
engine seeds torch per prompt with ``derive_seed(seed, prompt_id)``; the stacked engine draws
different masks per prompt from one seed per batch (deterministic, but not identical to the
sequential engine).

NaN handling (:mod:`testtime.finetune.driver`): a non-finite training loss or evaluation NLL
stops that prompt; its remaining eval steps get ``status = "nan_loss"`` and NaN values, and the
others carry on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from testtime.finetune.driver import Engine, drive
from testtime.finetune.jobs import EvalRow, PromptJob, TrainSettings, eval_row
from testtime.finetune.lora import LoraEngine, is_lora_model
from testtime.finetune.model import TuningModel
from testtime.finetune.sequential import SequentialEngine
from testtime.finetune.stacked import StackedEngine

__all__ = ["Finetuner"]


class Finetuner(TuningModel):
    """Test-time fine-tuning of one base model for many prompts.

    ``model``, ``trainable``, ``device``, ``autocast`` and ``context`` as
    :class:`TuningModel` (the base values of the trainable parameters are snapshotted here and
    restored before every prompt); ``settings`` the optimizer; ``seed`` the torch seed that
    each prompt's (sequential) or batch's (stacked) seed derives from.
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
        super().__init__(model, trainable, device=device, autocast=autocast, context=context)
        self.settings = settings
        self.seed = seed

    def engine(self, batched: bool) -> Engine:
        """The engine for this model: sequential (``batched`` False), else LoRA for a peft
        model with only LoRA trainable, else stacked."""
        if not batched:
            return SequentialEngine(self, self.settings, self.seed)
        if is_lora_model(self.model, self.trainable):
            return LoraEngine(self, self.settings)
        return StackedEngine(self, self.settings, self.seed)

    def score_base(self, jobs: Sequence[PromptJob]) -> list[EvalRow]:
        """bpb of each job's eval text under the base model (0 steps), batched over jobs."""
        self.restore()
        nll = self.score(*self.windows(jobs))
        return [eval_row(j, 0, v) for j, v in zip(jobs, nll, strict=True)]

    def run(self, jobs: Sequence[PromptJob], batch_prompts: int = 1) -> Iterator[list[EvalRow]]:
        """Yield each job's rows, ``batch_prompts`` prompts at a time (1 = sequential engine)."""
        if batch_prompts <= 1:
            for job in jobs:
                yield self.run_sequential(job)
            return
        for lo in range(0, len(jobs), batch_prompts):
            part = jobs[lo : lo + batch_prompts]
            yield from (o.rows for o in drive(self.engine(batched=True), part))

    def run_sequential(self, job: PromptJob) -> list[EvalRow]:
        """Fine-tune one prompt in place from the base weights; its rows in step order."""
        return drive(self.engine(batched=False), [job])[0].rows

    def run_batched(self, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
        """Fine-tune ``B = len(jobs)`` independent copies at once with the stacked (vmap)
        engine, whatever the model; rows per job, step order."""
        return [o.rows for o in drive(StackedEngine(self, self.settings, self.seed), jobs)]

    def run_lora(self, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
        """Fine-tune ``B = len(jobs)`` LoRA adapters at once with the LoRA engine; rows per
        job, step order."""
        return [o.rows for o in drive(LoraEngine(self, self.settings), jobs)]
