"""What fine-tuning works on and returns: :class:`PromptJob` in, :class:`EvalRow` out.

The bottom of :mod:`testtime.finetune`: plain data (optimizer settings, one prompt's work, one
scored row) and the two row builders every engine's results go through. No model code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from testtime.bpb import bits_per_byte

__all__ = [
    "STATUS_NAN",
    "STATUS_OK",
    "EvalRow",
    "PromptJob",
    "TrainSettings",
    "eval_row",
    "nan_rows",
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


def eval_row(job: PromptJob, steps: int, nll: float) -> EvalRow:
    """``job``'s row after ``steps`` steps from its summed eval NLL (nats); a non-finite NLL
    gives a ``nan_loss`` row with NaN values."""
    if not math.isfinite(nll):
        return EvalRow(job.prompt_id, steps, math.nan, job.n_bytes, math.nan, STATUS_NAN)
    bpb = bits_per_byte(nll, job.n_bytes)
    return EvalRow(job.prompt_id, steps, nll, job.n_bytes, bpb, STATUS_OK)


def nan_rows(job: PromptJob, after: int) -> list[EvalRow]:
    """``nan_loss`` rows for ``job``'s eval steps later than ``after`` (a stopped job's rest)."""
    return [
        EvalRow(job.prompt_id, s, math.nan, job.n_bytes, math.nan, STATUS_NAN)
        for s in job.eval_steps
        if s > after
    ]
