"""Which parameters test-time fine-tuning updates (config ``finetune.mode``).

| mode | trains | paper setting |
|---|---|---|
| ``full`` | every weight | GPT-2 family (Hübotter et al. 2024, Hardt & Sun 2024) |
| ``lora`` | low-rank adapters from ``peft`` (rank / alpha / targets from config) | Phi-3 |
| ``head`` | last block, final norm, an *untied* LM head | "transfer learning" TTT |

In ``head`` mode an LM head tied to the input embeddings (GPT-2) stays frozen: training it would
also move the input embeddings, i.e. more than the head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

MODES = ("full", "lora", "head")
_BLOCK_RE = re.compile(r"(?:^|\.)(?:h|layers|blocks|layer)\.(\d+)\.")
_FINAL_NORMS = ("ln_f", "norm", "final_layernorm", "final_layer_norm", "norm_f")


def wrap_lora(model: torch.nn.Module, lora: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """Return ``model`` wrapped in fresh ``peft`` LoRA adapters (init seeded by ``seed``)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=lora.get("target_modules"),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, cfg)
        except ValueError as exc:  # e.g. no default targets for the architecture
            raise ValueError(f"config key 'finetune.lora.target_modules': {exc}") from exc


def _head_names(model: torch.nn.Module) -> set[str]:
    names = [n for n, _ in model.named_parameters()]
    blocks = [int(m.group(1)) for n in names if (m := _BLOCK_RE.search(n))]
    if not blocks:
        raise ValueError("finetune.mode 'head': cannot find numbered transformer blocks")
    last = max(blocks)
    chosen = set()
    for n in names:
        m = _BLOCK_RE.search(n)
        if m and int(m.group(1)) == last:
            chosen.add(n)
        elif any(f".{norm}." in f".{n}" for norm in _FINAL_NORMS) and not m:
            chosen.add(n)
    out_emb = model.get_output_embeddings()
    in_emb = model.get_input_embeddings()
    if out_emb is not None and out_emb.weight is not in_emb.weight:
        ids = {id(p): n for n, p in model.named_parameters()}
        for p in out_emb.parameters():
            chosen.add(ids[id(p)])
    return chosen


def select_trainable(model: torch.nn.Module, mode: str) -> list[str]:
    """Set ``requires_grad`` for ``mode`` and return the trainable parameter names, in order.

    For ``lora`` the model must already be wrapped by :func:`wrap_lora`.
    """
    if mode not in MODES:
        raise ValueError(f"config key 'finetune.mode': unknown mode {mode!r}; use one of {MODES}")
    if mode == "full":
        chosen = {n for n, _ in model.named_parameters()}
    elif mode == "lora":
        chosen = {n for n, _ in model.named_parameters() if "lora_" in n}
        if not chosen:
            raise ValueError("finetune.mode 'lora': the model has no LoRA parameters")
    else:
        chosen = _head_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen)
    return [n for n, _ in model.named_parameters() if n in chosen]
