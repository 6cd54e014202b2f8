"""Batched per-prompt LoRA: B prompts fine-tuned at once, each with its own adapter.

The multi-adapter pattern of Punica (Chen et al. 2023, arXiv 2310.18547) and S-LoRA (Sheng et
al. 2023, arXiv 2311.03285), used for training. A ``peft`` LoRA layer computes
``y = W x + s · B A x``. Here prompt b owns its factors ``A_b (r, d_in)`` and ``B_b (d_out, r)``,
stored stacked as ``(B, r, d_in)`` / ``(B, d_out, r)``, and a batch whose row i belongs to prompt
``rows[i]`` is computed as

    y = x W  (one GEMM over all B·L tokens, frozen base)  +  s · bmm(bmm(x, A_rowsᵀ), B_rowsᵀ)

with ``x (b, L, d_in)``. The training loss is Σ_b (mean token cross-entropy of row b); row b's
activations depend only on its own factors, so one backward pass yields every prompt's own
gradient. Adam runs per prompt on the stacked tensors
(:class:`testtime.finetune_batched.StackedAdam`, masked), so a prompt that stops early (adaptive
SIFT, a non-finite loss) simply leaves the batch: the rows still running are computed without
it and its factors and Adam state freeze.

Results equal the sequential ``peft`` loop (:meth:`Finetuner.run_sequential`) within float
tolerance (tests/unit/test_lora_batched.py); the win is on a GPU, where one sequence leaves the
device mostly idle (``testtime bench lora``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from testtime.bpb import IGNORE
from testtime.finetune import STATUS_OK, EvalRow, Finetuner, PromptJob, TrainSettings, _autocast
from testtime.finetune_batched import StackedAdam, pad_step

ADAPTER = "default"


def lora_layers(model: torch.nn.Module) -> dict[str, Any]:
    """The ``peft`` LoRA linear layers of ``model`` by module name (empty if none)."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or ADAPTER not in module.lora_A:
            continue
        if not isinstance(module, LoraLinear) or ADAPTER in module.lora_variant:
            raise ValueError(
                f"batched LoRA supports plain LoRA on linear layers; {name!r} is "
                f"{type(module).__name__} (use finetune.batch_prompts: 1)"
            )
        out[name] = module
    return out


def is_lora_model(model: torch.nn.Module, trainable: Sequence[str]) -> bool:
    """Whether ``model`` is ``peft``-wrapped and only LoRA factors are trained."""
    try:
        layers = lora_layers(model)
    except ValueError:
        return False
    return bool(layers) and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def row_losses(logits: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(b,)`` float32 mean next-token cross-entropy (nats/token) of each row.

    ``logits (b, L, V)``, ``ids (b, L)``, ``valid (b, L)`` bool (False = right padding). Row i
    equals :func:`testtime.lm.lm_loss` of row i alone.
    """
    b, length, v = logits.shape
    targets = ids[:, 1:].masked_fill(~valid[:, 1:], IGNORE)
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, v).float(),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(b, length - 1)
    return nll.sum(1) / valid[:, 1:].sum(1).clamp_min(1)


class StackedLora:
    """Per-prompt copies of a ``peft`` model's LoRA factors, applied by batch row.

    Args:
        model: a model wrapped by :func:`testtime.adapters.wrap_lora`.
        init: the initial value of each LoRA parameter by its name in ``model`` (e.g. the
            snapshot ``Finetuner._base``); every prompt starts from it.
        n_prompts: B, the number of adapter slots.

    ``params`` maps each parameter name to a leaf tensor ``(B, *shape)`` (``(B, r, d_in)`` for
    ``lora_A``, ``(B, d_out, r)`` for ``lora_B``); the wrapped model's own factors are not used.
    """

    def __init__(
        self, model: torch.nn.Module, init: Mapping[str, torch.Tensor], n_prompts: int
    ) -> None:
        if n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
        self.model = model
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError("the model has no peft LoRA layers (wrap it with wrap_lora first)")
        names = {id(p): n for n, p in model.named_parameters()}
        self.names: dict[str, tuple[str, str]] = {}
        self.params: dict[str, torch.Tensor] = {}
        for layer_name, layer in self.layers.items():
            pair = (
                names[id(layer.lora_A[ADAPTER].weight)],
                names[id(layer.lora_B[ADAPTER].weight)],
            )
            self.names[layer_name] = pair
            for n in pair:
                if n not in init:
                    raise ValueError(f"no initial value for LoRA parameter {n!r}")
                value = init[n].detach()
                self.params[n] = value.unsqueeze(0).repeat(n_prompts, 1, 1).requires_grad_(True)
        self.n_prompts = n_prompts
        self._rows: torch.Tensor | None = None

    def _forward(self, layer: Any, a_name: str, b_name: str):
        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = layer.base_layer(x, *args, **kwargs)
            a, b = self.params[a_name], self.params[b_name]
            if self._rows is not None:
                a, b = a.index_select(0, self._rows), b.index_select(0, self._rows)
            if x.shape[0] != a.shape[0]:
                raise ValueError(
                    f"batch has {x.shape[0]} rows but {a.shape[0]} adapters are applied"
                )
            h = layer.lora_dropout[ADAPTER](x.to(a.dtype))
            h = h.reshape(h.shape[0], -1, h.shape[-1])  # (b, L, d_in)
            delta = torch.bmm(torch.bmm(h, a.transpose(1, 2)), b.transpose(1, 2))  # (b, L, d_out)
            delta = delta * layer.scaling[ADAPTER]
            return (result + delta.reshape(result.shape)).to(result.dtype)

        return forward

    @contextlib.contextmanager
    def applied(self, rows: torch.Tensor | Sequence[int] | None = None) -> Iterator[None]:
        """Within the block, batch row i of every forward uses the adapter of prompt ``rows[i]``
        (``None``: row i uses prompt i, all B rows)."""
        device = next(iter(self.params.values())).device
        self._rows = None if rows is None else torch.as_tensor(rows, device=device).long()
        for layer_name, layer in self.layers.items():
            layer.forward = self._forward(layer, *self.names[layer_name])
        try:
            yield
        finally:
            for layer in self.layers.values():
                del layer.forward  # back to the class's peft forward
            self._rows = None

    def adapter(self, slot: int) -> dict[str, torch.Tensor]:
        """Prompt ``slot``'s factors by parameter name (detached copies, peft's shapes)."""
        return {n: p[slot].detach().clone() for n, p in self.params.items()}


class StepResult(NamedTuple):
    """One training step of a batch: ``loss (B,)`` float (NaN where a prompt took no step) and
    ``finite (B,)`` bool (False where it took none or its loss was not finite)."""

    loss: torch.Tensor
    finite: torch.Tensor


class BatchedLoraTrainer:
    """Fine-tunes B prompts' adapters together; the engine of :func:`run_lora_batched`.

    ``finetuner`` supplies the peft-wrapped model, the LoRA initial values (its snapshot of the
    trainable parameters), the optimizer settings, device and autocast. Call :meth:`step` once
    per training step with each prompt's sequence (None once a prompt is done).
    """

    def __init__(self, finetuner: Finetuner, n_prompts: int) -> None:
        if not is_lora_model(finetuner.model, finetuner.trainable):
            raise ValueError("batched LoRA needs a peft-wrapped model with only LoRA trainable")
        self.ft = finetuner
        self.lora = StackedLora(finetuner.model, finetuner._base, n_prompts)
        self.adam = StackedAdam(self.lora.params, finetuner.settings)
        self.steps_taken = 0

    @property
    def settings(self) -> TrainSettings:
        return self.ft.settings

    def step(self, seqs: Sequence[torch.Tensor | None]) -> StepResult:
        """One optimizer step for every prompt whose entry in ``seqs`` (length B) is a ``(L_b,)``
        int64 sequence; prompts with ``None`` (or a non-finite loss) are left unchanged."""
        n_b = self.lora.n_prompts
        if len(seqs) != n_b:
            raise ValueError(f"step got {len(seqs)} sequences for {n_b} prompts")
        loss_out = torch.full((n_b,), float("nan"))
        finite_out = torch.zeros(n_b, dtype=torch.bool)
        rows = [b for b, s in enumerate(seqs) if s is not None]
        if not rows:
            return StepResult(loss_out, finite_out)
        device = self.ft.device
        ids, valid = pad_step([seqs[b] for b in rows])
        ids, valid = ids.to(device), valid.to(device)
        model = self.ft.model
        model.train()
        params = list(self.lora.params.values())
        with torch.enable_grad():
            with self.lora.applied(rows), _autocast(device, self.ft.autocast):
                losses = row_losses(model(ids).logits, ids, valid)  # (b,)
            finite = torch.isfinite(losses.detach())
            grads = torch.autograd.grad(losses.masked_fill(~finite, 0.0).sum(), params)
        self.steps_taken += 1
        mask = torch.zeros(n_b, dtype=torch.bool, device=device)
        mask[torch.tensor(rows, device=device)[finite]] = True
        self.adam.step(dict(zip(self.lora.params, grads, strict=True)), mask)
        loss_out[rows] = losses.detach().float().cpu()
        finite_out[rows] = finite.cpu()
        return StepResult(loss_out, finite_out)

    @torch.no_grad()
    def score(
        self, rows: Sequence[int], inputs: torch.Tensor, targets: torch.Tensor
    ) -> list[float]:
        """Summed NLL (nats) of windows ``inputs/targets (b, W, L)`` (row i under prompt
        ``rows[i]``'s adapter), as :meth:`testtime.finetune.Finetuner.score`."""
        with self.lora.applied(rows):
            return self.ft.score(inputs, targets)


def run_lora_batched(finetuner: Finetuner, jobs: Sequence[PromptJob]) -> list[list[EvalRow]]:
    """The batched path of :meth:`Finetuner.run` for LoRA: same rows as ``run_sequential``.

    Each job trains its own adapter from the LoRA initial values, one selected sequence per
    step; a job is scored after each step in its ``eval_steps`` (only the due jobs' rows run);
    a non-finite loss or score ends that job with ``nan_loss`` rows and the others carry on.
    """
    n_b = len(jobs)
    trainer = BatchedLoraTrainer(finetuner, n_b)
    inputs, targets = finetuner._make_windows(jobs)
    rows: list[list[EvalRow]] = [[] for _ in jobs]
    alive = [True] * n_b

    def evaluate(due: list[int], step: int) -> None:
        values = trainer.score(due, inputs[due], targets[due])
        for b, v in zip(due, values, strict=True):
            rows[b].append(finetuner._row(jobs[b], step, v))
            if rows[b][-1].status != STATUS_OK:
                alive[b] = False
                rows[b] += finetuner._nan_rest(jobs[b], step)

    due = [b for b, j in enumerate(jobs) if 0 in j.eval_steps]
    if due:
        evaluate(due, 0)
    for step in range(1, max(len(j.train_ids) for j in jobs) + 1):
        take = [alive[b] and step <= len(j.train_ids) for b, j in enumerate(jobs)]
        if not any(take):
            break
        result = trainer.step(
            [j.train_ids[step - 1] if take[b] else None for b, j in enumerate(jobs)]
        )
        for b in range(n_b):
            if take[b] and not bool(result.finite[b]):
                alive[b] = False
                rows[b] += finetuner._nan_rest(jobs[b], step - 1)
        due = [b for b in range(n_b) if alive[b] and take[b] and step in jobs[b].eval_steps]
        if due:
            evaluate(due, step)
    return rows
