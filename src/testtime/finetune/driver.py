"""The one per-step loop of test-time fine-tuning, over any :class:`Engine`.

:func:`drive` runs B jobs together: job b takes step t (its t-th selected sequence) while it is
alive and has a t-th sequence, so jobs with fewer steps (adaptive SIFT stops, shorter
selections) leave the batch and the others go on. A job is scored after every step in its
``eval_steps`` (0 = before training). A non-finite training loss at step t stops the job: its
eval steps from t on become ``nan_loss`` rows. A non-finite score at step t stops it too: that
row and the later ones are ``nan_loss``. The other jobs are unaffected.

The engines (:mod:`~testtime.finetune.sequential`, :mod:`~testtime.finetune.stacked`,
:mod:`~testtime.finetune.lora`) only train and score; the bookkeeping is here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from testtime.finetune.jobs import STATUS_OK, EvalRow, PromptJob, eval_row, nan_rows

__all__ = ["Engine", "Outcome", "drive"]


class Engine(Protocol):
    """B jobs' copies of the trainable parameters, trained and scored together."""

    def start(self, jobs: Sequence[PromptJob]) -> None:
        """Set up B = ``len(jobs)`` copies at the base values (fresh optimizer state)."""
        ...

    def step(self, seqs: Sequence[torch.Tensor | None]) -> list[bool]:
        """One optimizer step for each job b with a ``(L_b,)`` sequence in ``seqs`` (length B;
        ``None``: no step). Per job: whether it took a step with a finite loss (a job with a
        non-finite loss is left unchanged)."""
        ...

    def evaluate(self, rows: Sequence[int]) -> list[float]:
        """Summed NLL (nats) of the eval text of each job in ``rows``, in that order."""
        ...


class Outcome(NamedTuple):
    """One job's result: its rows in step order, and the step at which a non-finite training
    loss or score stopped it (None: it ran to the end)."""

    rows: list[EvalRow]
    nan_step: int | None


def drive(engine: Engine, jobs: Sequence[PromptJob]) -> list[Outcome]:
    """Fine-tune and score ``jobs`` together with ``engine``; one :class:`Outcome` per job."""
    n_b = len(jobs)
    rows: list[list[EvalRow]] = [[] for _ in jobs]
    nan_step: list[int | None] = [None] * n_b
    engine.start(jobs)

    def stop(b: int, step: int, after: int) -> None:
        nan_step[b] = step
        rows[b] += nan_rows(jobs[b], after)

    def evaluate(due: list[int], step: int) -> None:
        for b, nll in zip(due, engine.evaluate(due), strict=True):
            rows[b].append(eval_row(jobs[b], step, nll))
            if rows[b][-1].status != STATUS_OK:
                stop(b, step, step)

    due = [b for b, j in enumerate(jobs) if 0 in j.eval_steps]
    if due:
        evaluate(due, 0)
    for step in range(1, max((len(j.train_ids) for j in jobs), default=0) + 1):
        take = [nan_step[b] is None and step <= len(j.train_ids) for b, j in enumerate(jobs)]
        if not any(take):
            break
        finite = engine.step(
            [j.train_ids[step - 1] if take[b] else None for b, j in enumerate(jobs)]
        )
        for b in range(n_b):
            if take[b] and not finite[b]:
                stop(b, step, step - 1)
        alive = [b for b in range(n_b) if take[b] and nan_step[b] is None]
        due = [b for b in alive if step in jobs[b].eval_steps]
        if due:
            evaluate(due, step)
    return [Outcome(r, s) for r, s in zip(rows, nan_step, strict=True)]
