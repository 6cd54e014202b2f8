"""The one step loop of test-time fine-tuning (testtime.finetune.driver.drive) over a fake engine.

Checks, against bookkeeping worked out by hand: which jobs take each step (short jobs leave,
stopped jobs stay out), which jobs are scored when (at their eval steps only, step 0 before any
training), that a non-finite training loss marks the job's eval steps from that step on as
``nan_loss``, that a non-finite score marks that row and the later ones, and that the loop
ends once no job takes a step.

Run: .venv/bin/pytest tests/unit/test_finetune_driver.py
"""

from __future__ import annotations

import math

import torch

from testtime.finetune.driver import drive
from testtime.finetune.jobs import PromptJob

N_BYTES = 5


class FakeEngine:
    """Records every call; the training loss of (job, step) in ``nan_loss`` is non-finite,
    and so is the score of (job, step) in ``nan_eval``; other scores are 10 + 100 b + step."""

    def __init__(self, nan_loss: set[tuple[int, int]], nan_eval: set[tuple[int, int]]):
        self.nan_loss, self.nan_eval = nan_loss, nan_eval
        self.calls: list[tuple] = []

    def start(self, jobs):
        self.jobs, self.step_no = list(jobs), 0
        self.calls.append(("start", len(jobs)))

    def step(self, seqs):
        self.step_no += 1
        takers = [b for b, s in enumerate(seqs) if s is not None]
        for b in takers:  # each job gets its own t-th sequence
            assert seqs[b] is self.jobs[b].train_ids[self.step_no - 1]
        self.calls.append(("step", self.step_no, takers))
        return [
            s is not None and (b, self.step_no) not in self.nan_loss for b, s in enumerate(seqs)
        ]

    def evaluate(self, rows):
        self.calls.append(("eval", self.step_no, list(rows)))
        return [
            math.inf if (b, self.step_no) in self.nan_eval else 10.0 + 100 * b + self.step_no
            for b in rows
        ]


def _job(pid: int, n_steps: int, eval_steps: tuple[int, ...]) -> PromptJob:
    train = [torch.tensor([pid, t]) for t in range(n_steps)]
    return PromptJob(pid, train, torch.zeros(4, dtype=torch.long), N_BYTES, eval_steps)


def _ok(pid: int, steps: int, nll: float) -> tuple:
    return (pid, steps, nll, N_BYTES, nll / (math.log(2) * N_BYTES), "ok")


def _nan(pid: int, steps: int) -> tuple:
    return (pid, steps, "nan", N_BYTES, "nan", "nan_loss")


def _plain(row) -> tuple:
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)


def test_drive_bookkeeping_by_hand():
    jobs = [
        _job(0, 3, (0, 1, 3)),  # clean; trains 3 steps
        _job(1, 4, (2, 4)),  # non-finite training loss at step 3
        _job(2, 1, (0, 1)),  # one step only: leaves the batch after step 1
        _job(3, 4, (0, 2, 3, 4)),  # non-finite score after step 2
    ]
    engine = FakeEngine(nan_loss={(1, 3)}, nan_eval={(3, 2)})
    outcomes = drive(engine, jobs)
    assert engine.calls == [
        ("start", 4),
        ("eval", 0, [0, 2, 3]),  # step 0: the jobs with 0 in eval_steps, before training
        ("step", 1, [0, 1, 2, 3]),
        ("eval", 1, [0, 2]),
        ("step", 2, [0, 1, 3]),  # job 2 has no second sequence
        ("eval", 2, [1, 3]),
        ("step", 3, [0, 1]),  # job 3 stopped on its score
        ("eval", 3, [0]),  # job 1's loss was not finite: not scored
        # step 4: job 0 is done, jobs 1 and 3 stopped, job 2 done: the loop ends
    ]
    assert [[_plain(r) for r in o.rows] for o in outcomes] == [
        [_ok(0, 0, 10.0), _ok(0, 1, 11.0), _ok(0, 3, 13.0)],
        [_ok(1, 2, 112.0), _nan(1, 4)],
        [_ok(2, 0, 210.0), _ok(2, 1, 211.0)],
        [_ok(3, 0, 310.0), _nan(3, 2), _nan(3, 3), _nan(3, 4)],
    ]
    assert [o.nan_step for o in outcomes] == [None, 3, None, 2]


def test_non_finite_score_before_training_stops_the_job():
    """A job whose base score (step 0) is not finite takes no step at all."""
    engine = FakeEngine(nan_loss=set(), nan_eval={(1, 0)})
    outcomes = drive(engine, [_job(0, 2, (0, 2)), _job(1, 2, (0, 1, 2))])
    assert engine.calls == [
        ("start", 2),
        ("eval", 0, [0, 1]),
        ("step", 1, [0]),
        ("step", 2, [0]),
        ("eval", 2, [0]),
    ]
    assert [_plain(r) for r in outcomes[1].rows] == [_nan(1, 0), _nan(1, 1), _nan(1, 2)]
    assert outcomes[1].nan_step == 0 and outcomes[0].nan_step is None


def test_jobs_without_eval_steps_train_and_are_never_scored():
    """The API's adaptation: no eval steps, so only training; a bad loss is reported by step."""
    engine = FakeEngine(nan_loss={(0, 2)}, nan_eval=set())
    outcomes = drive(engine, [_job(0, 3, ()), _job(1, 2, ()), _job(2, 0, ())])
    assert engine.calls == [("start", 3), ("step", 1, [0, 1]), ("step", 2, [0, 1])]
    assert [o.rows for o in outcomes] == [[], [], []]
    assert [o.nan_step for o in outcomes] == [2, None, None]
