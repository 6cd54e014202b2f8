"""The LoRA engine: B prompts fine-tuned at once, each with its own adapter.

The multi-adapter pattern of Punica (Chen et al. 2023, arXiv 2310.18547) and S-LoRA (Sheng et
al. 2023, arXiv 2311.03285), used for training. A ``peft`` LoRA layer computes
``y = W x + s · B A x``. Here prompt b owns its factors ``A_b (r, d_in)`` and ``B_b (d_out, r)``,
stored stacked as ``(B, r, d_in)`` / ``(B, d_out, r)``, and a batch whose row i belongs to prompt
``rows[i]`` is computed as

    y = x W  (one GEMM over all B·L tokens, frozen base)  +  s · bmm(bmm(x, A_rowsᵀ), B_rowsᵀ)

with ``x (b, L, d_in)``. The training loss is Σ_b (mean token cross-entropy of row b); row b's
activations depend only on its own factors, so one backward pass yields every prompt's own
gradient. Adam runs per prompt on the stacked tensors
(:class:`testtime.finetune.optim.StackedAdam`, masked), so a prompt that stops early (adaptive
SIFT, a non-finite loss) simply leaves the batch: the rows still running are computed without
it and its factors and Adam state freeze.

Results equal the sequential engine's ``peft`` loop (:meth:`Finetuner.run_sequential`) within
float tolerance (tests/unit/test_lora_batched.py); the win is on a GPU, where one sequence
leaves the device mostly idle (``testtime bench lora``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from testtime.bpb import IGNORE
from testtime.finetune.jobs import PromptJob, TrainSettings
from testtime.finetune.model import TuningModel, pad_step
from testtime.finetune.optim import StackedAdam

__all__ = ["LoraEngine", "StackedLora", "is_lora_model", "lora_layers", "row_losses"]

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
            snapshot :attr:`TuningModel.base`); every prompt starts from it.
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


class LoraEngine:
    """:class:`testtime.finetune.driver.Engine` for B prompts' LoRA adapters, trained together.

    ``tuning`` supplies the peft-wrapped model, the LoRA initial values (its base snapshot of
    the trainable parameters), device and autocast; ``settings`` the optimizer. After a run,
    :meth:`adapter` gives each prompt's trained factors.
    """

    def __init__(self, tuning: TuningModel, settings: TrainSettings) -> None:
        if not is_lora_model(tuning.model, tuning.trainable):
            raise ValueError("batched LoRA needs a peft-wrapped model with only LoRA trainable")
        self.tuning = tuning
        self.settings = settings

    def start(self, jobs: Sequence[PromptJob]) -> None:
        self.lora = StackedLora(self.tuning.model, self.tuning.base, len(jobs))
        self.adam = StackedAdam(self.lora.params, self.settings)
        self.inputs, self.targets = self.tuning.windows(jobs)

    def step(self, seqs: Sequence[torch.Tensor | None]) -> list[bool]:
        n_b = self.lora.n_prompts
        if len(seqs) != n_b:
            raise ValueError(f"step got {len(seqs)} sequences for {n_b} prompts")
        rows = [b for b, s in enumerate(seqs) if s is not None]
        finite_out = [False] * n_b
        if not rows:
            return finite_out
        tm = self.tuning
        ids, valid = pad_step([seqs[b] for b in rows])
        ids, valid = ids.to(tm.device), valid.to(tm.device)
        tm.model.train()
        params = list(self.lora.params.values())
        with torch.enable_grad():
            # only the rows that take a step run: a stopped prompt leaves the batch
            with self.lora.applied(rows), tm.mixed_precision():
                losses = row_losses(tm.model(ids).logits, ids, valid)  # (b,)
            finite = torch.isfinite(losses.detach())
            grads = torch.autograd.grad(losses.masked_fill(~finite, 0.0).sum(), params)
        mask = torch.zeros(n_b, dtype=torch.bool, device=tm.device)
        mask[torch.tensor(rows, device=tm.device)[finite]] = True
        self.adam.step(dict(zip(self.lora.params, grads, strict=True)), mask)
        for b, f in zip(rows, finite.cpu().tolist(), strict=True):
            finite_out[b] = f
        return finite_out

    @torch.no_grad()
    def evaluate(self, rows: Sequence[int]) -> list[float]:
        rows = list(rows)
        # only the due rows are scored, each under its own prompt's adapter
        with self.lora.applied(rows):
            return self.tuning.score(self.inputs[rows], self.targets[rows])

    def adapter(self, slot: int) -> dict[str, torch.Tensor]:
        """Prompt ``slot``'s trained factors by parameter name (detached copies)."""
        return self.lora.adapter(slot)
