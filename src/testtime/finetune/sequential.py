"""The sequential engine: one prompt at a time, trained in place (the CPU default).

The module's own trainable parameters are restored to their base values, torch is seeded with
``derive_seed(seed, prompt_id)`` (dropout masks follow the prompt, not the batch), and
``torch.optim.Adam/AdamW`` takes one step per selected sequence. After the run the module holds
the prompt's fine-tuned weights (:class:`testtime.tuner.TestTimeTuner` reads them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from testtime.finetune.jobs import PromptJob, TrainSettings
from testtime.finetune.model import TuningModel
from testtime.finetune.optim import make_optimizer
from testtime.lm import lm_loss
from testtime.seeding import derive_seed

__all__ = ["SequentialEngine"]


class SequentialEngine:
    """:class:`testtime.finetune.driver.Engine` for B = 1: ``tuning``'s module trained in
    place with ``settings``; ``seed`` derives the per-prompt torch seed."""

    def __init__(self, tuning: TuningModel, settings: TrainSettings, seed: int = 0) -> None:
        self.tuning = tuning
        self.settings = settings
        self.seed = seed

    def start(self, jobs: Sequence[PromptJob]) -> None:
        if len(jobs) != 1:
            raise ValueError(f"the sequential engine runs one job at a time, got {len(jobs)}")
        tm = self.tuning
        tm.restore()
        torch.manual_seed(derive_seed(self.seed, jobs[0].prompt_id))
        self.params = tm.trainable_parameters()
        self.optimizer = make_optimizer(self.params, self.settings)
        tm.model.train()
        self.inputs, self.targets = tm.windows(jobs)

    def step(self, seqs: Sequence[torch.Tensor | None]) -> list[bool]:
        (seq,) = seqs
        if seq is None:
            return [False]
        tm = self.tuning
        x = seq.to(tm.device)[None]
        with tm.mixed_precision():
            loss = lm_loss(tm.model(x).logits, x, torch.ones_like(x, dtype=torch.bool))
        if not torch.isfinite(loss):
            return [False]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        self.optimizer.step()
        return [True]

    def evaluate(self, rows: Sequence[int]) -> list[float]:
        return self.tuning.score(self.inputs, self.targets)  # rows is [0]: the one job
