"""The model being tuned, as the engines see it: :class:`TuningModel`, and :func:`pad_step`.

:class:`TuningModel` holds the module, the names of its trainable parameters and their base
values (snapshotted once, restored before every prompt), and the one evaluation every engine
uses (:meth:`TuningModel.score`, summed NLL in nats over :func:`testtime.bpb.make_windows`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from testtime.bpb import make_windows, model_context, score_windows
from testtime.finetune.jobs import PromptJob

__all__ = ["TuningModel", "pad_step"]


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


class TuningModel:
    """A causal LM with a set of trainable parameters and their base values.

    ``model`` is a Hugging Face causal LM (already wrapped by :func:`testtime.adapters.wrap_lora`
    for ``lora``), moved to ``device``; ``trainable`` names the parameters that are updated.
    ``autocast`` (default: on for CUDA) runs forwards under bf16 autocast; ``context`` is the
    model's window length in tokens (default: read from its config).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        trainable: Sequence[str],
        *,
        device: torch.device | str = "cpu",
        autocast: bool | None = None,
        context: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.autocast = self.device.type == "cuda" if autocast is None else autocast
        self.context = context or model_context(model)
        params = dict(model.named_parameters())
        missing = [n for n in trainable if n not in params]
        if missing:
            raise ValueError(f"trainable parameters not in the model: {missing[:3]}")
        self.trainable = list(trainable)
        #: base value of each trainable parameter by name (detached copies on ``device``)
        self.base = {n: params[n].detach().clone() for n in self.trainable}

    def restore(self) -> None:
        """Copy the base values back into the module's trainable parameters."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, value in self.base.items():
                params[n].copy_(value)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The module's trainable parameters, in :attr:`trainable` order."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.trainable]

    def mixed_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the device when :attr:`autocast` is set, else a no-op."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def windows(self, jobs: Sequence[PromptJob]) -> tuple[torch.Tensor, torch.Tensor]:
        """The jobs' scored windows: ``inputs (B, W, L)`` on the device, ``targets (B, W, L)``
        (unscored context and padding masked), as :func:`testtime.bpb.make_windows`."""
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
        (from :meth:`windows`): the one evaluation every engine uses.

        ``logits_fn`` maps ``(B, L)`` ids to logits (default: the module itself; the batched
        engines pass their per-prompt forward). Runs with the module in eval mode (dropout off)
        under :meth:`mixed_precision`, without gradients, and puts the mode back after.
        """
        model = self.model
        fn = logits_fn if logits_fn is not None else (lambda x: model(x).logits)
        was_training = model.training
        model.eval()
        try:
            with self.mixed_precision():
                return score_windows(fn, inputs, targets).tolist()
        finally:
            model.train(was_training)
