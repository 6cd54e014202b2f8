"""Test-time fine-tuning: per prompt, fine-tune the base model on its selected sequences.

Layers, each importing only those below it (tests/unit/test_finetune_imports.py):

* :mod:`~testtime.finetune.jobs`: :class:`PromptJob` in, :class:`EvalRow` out, settings;
* :mod:`~testtime.finetune.optim`: the Adam/AdamW choice and its stacked form;
* :mod:`~testtime.finetune.model`: :class:`~testtime.finetune.model.TuningModel`, the model
  side the engines share (base snapshot, restore, eval windows, scoring);
* engines: :mod:`~testtime.finetune.sequential`, :mod:`~testtime.finetune.stacked` (vmap),
  :mod:`~testtime.finetune.lora` (batched LoRA);
* :mod:`~testtime.finetune.driver`: the one per-step loop over an engine;
* :mod:`~testtime.finetune.finetuner`: :class:`Finetuner`, which picks the engine;
* :mod:`~testtime.finetune.stage`: the workflow's finetune stage (files in, result table out).
"""

from __future__ import annotations

from testtime.finetune.finetuner import Finetuner
from testtime.finetune.jobs import STATUS_NAN, STATUS_OK, EvalRow, PromptJob, TrainSettings

__all__ = ["STATUS_NAN", "STATUS_OK", "EvalRow", "Finetuner", "PromptJob", "TrainSettings"]
