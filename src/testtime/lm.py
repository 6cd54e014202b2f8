"""The base causal LM: GPT-2 config, pre-training with resumable checkpoints, and the loader.

Demo: a small GPT-2 (``model.*``) is pre-trained on the pretrain split only with AdamW, linear
warm-up then cosine decay, bf16 autocast on CPU. Every ``checkpoint_every`` steps the state is
saved atomically into ``<checkpoint-dir>/step-NNNNNN/``: ``model.safetensors`` (via
``save_pretrained``), ``trainer.pt`` (optimizer, scheduler and RNG state: tensors and plain
containers only, read back with ``torch.load(weights_only=True)``) and ``meta.json``. A killed
run resumes from the newest complete checkpoint; the data order is a function of (seed, step) so
the resumed run sees the same batches. Paper: :func:`load_causal_lm` loads ``gpt2``,
``gpt2-large``, ``microsoft/Phi-3-mini-4k-instruct`` or a local directory.

Loss unit: mean token cross-entropy in nats.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from testtime.bpb import IGNORE
from testtime.io import atomic_path, write_json
from testtime.locations import resolve_model_location
from testtime.provenance import config_hash
from testtime.seeding import derive_seed
from testtime.tokenizer import load_tokenizer

__all__ = [
    "PretrainResult",
    "batch_indices",
    "gpt2_config",
    "latest_checkpoint",
    "lm_loss",
    "load_causal_lm",
    "load_tokenizer",
    "pad_batch",
    "pretrain",
]

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")
KEEP_CHECKPOINTS = 2


class PretrainResult(NamedTuple):
    """Final model, per-step losses (nats/token) of all steps so far, step resumed from."""

    model: Any
    losses: list[float]
    resumed_from: int


def gpt2_config(model_cfg: Mapping[str, Any], tokenizer: Any) -> Any:
    """``GPT2Config`` from ``model.*``; dropout off (pre-training sees < 1 epoch; TTFT wants
    deterministic steps). Special ids come from the tokenizer."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=model_cfg["n_positions"],
        n_embd=model_cfg["n_embd"],
        n_layer=model_cfg["n_layer"],
        n_head=model_cfg["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def load_causal_lm(
    path_or_id: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """``AutoModelForCausalLM`` from a local directory or hub id, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    where, local = resolve_model_location(path_or_id, "causal LM directory")
    if local:  # never looked up on the hub
        kwargs["local_files_only"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a causal LM from {str(path_or_id)!r}: {exc}") from exc
    return model.to(device).eval()


def pretrained_context(path_or_id: str | os.PathLike[str]) -> int:
    """Context length (tokens) of a pretrained causal LM, read from its config file only."""
    from transformers import AutoConfig

    from testtime.bpb import model_context

    where, local = resolve_model_location(path_or_id, "config key 'model.name_or_path':")
    try:
        cfg = AutoConfig.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"config key 'model.name_or_path': cannot load {str(path_or_id)!r}: {exc}"
        ) from exc
    return model_context(SimpleNamespace(config=cfg))


def check_pretrained_context(config: Mapping[str, Any]) -> int | None:
    """ConfigError unless ``data.seq_len`` and the scored prompt fit the pretrained model's
    context (a cheap check the corpus stage runs before it streams anything). Returns the
    context, or None for ``model.source: train`` (checked at config validation)."""
    from testtime.config import ConfigError, check_prompt_fits

    model, data = config["model"], config["data"]
    if model["source"] != "pretrained":
        return None
    context = pretrained_context(model["name_or_path"])
    where = f"model {model['name_or_path']!r}"
    if data["seq_len"] > context:
        raise ConfigError(
            f"config key 'data.seq_len': {data['seq_len']} exceeds the context of {context} "
            f"tokens of {where}"
        )
    check_prompt_fits(data, context, where)
    return context


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Row indices of the batch at ``step``: epochs of seeded permutations, concatenated.

    Depends only on (n, batch_size, step, seed), so a resumed run sees the same batches.

    >>> b = [batch_indices(5, 2, s, 0) for s in range(5)]
    >>> sorted(np.concatenate(b)[:5].tolist())
    [0, 1, 2, 3, 4]
    """
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng(derive_seed(seed, "pretrain", epoch)).permutation(n)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: ``input_ids`` and ``attention_mask``, both ``(B, T)``.

    >>> ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[1, 2, 3], [4, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    rows = [torch.as_tensor(np.asarray(s, dtype=np.int64)) for s in seqs]
    ids = pad_sequence(rows, batch_first=True, padding_value=pad_id)
    mask = pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0)
    return ids, mask


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) over real positions, computed in float32.

    ``logits (..., L, V)``, ``input_ids (..., L)``, ``valid (..., L)`` bool or 0/1 (False / 0 =
    padding, e.g. an ``attention_mask``). Equals Hugging Face's ``model(x, labels=x).loss`` for
    an unpadded sequence. The one causal-LM loss of the package: pre-training (:func:`pretrain`)
    and test-time fine-tuning (:mod:`testtime.finetune`) both use it.
    """
    targets = input_ids[..., 1:].masked_fill(valid[..., 1:] == 0, IGNORE)
    return torch.nn.functional.cross_entropy(
        logits[..., :-1, :].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
    )


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor of step ``step`` (0-based): linear warm-up ``(step + 1) / warmup``, then cosine
    decay to 0 at ``total`` (held at 0 beyond).

    Not ``transformers.get_cosine_schedule_with_warmup``: its warm-up is ``step / warmup``, so
    its first step has lr 0 and every warm-up step is one step behind ours (ours(s) = HF(s + 1)
    for s < warmup); the cosine phase is the same formula. Switching would change every
    pre-trained model and hence every result; tests/unit/test_lm.py pins both facts.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def latest_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    """Newest complete ``step-NNNNNN`` directory (atomic renames: present means complete)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := CHECKPOINT_RE.match(p.name)) and (p / "meta.json").is_file()
    ]
    return max(steps)[1] if steps else None


def _save_checkpoint(
    root: Path, step: int, model: Any, opt: Any, sched: Any, meta: dict[str, Any]
) -> None:
    with atomic_path(root / f"step-{step:06d}", is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, tmp / "trainer.pt")
        write_json(tmp / "meta.json", {**meta, "step": step})
    done = sorted(p for p in root.iterdir() if CHECKPOINT_RE.match(p.name))
    for old in done[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def pretrain(
    sequences: Sequence[Sequence[int]],
    tokenizer: Any,
    model_cfg: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> PretrainResult:
    """Pre-train a GPT-2 on ``sequences`` (token id lists) for ``model.pretrain.steps`` steps.

    Resumes from the newest checkpoint in ``checkpoint_dir`` when its fingerprint (model and
    pretrain config, seed, number of sequences) matches; a mismatch is a ValueError naming the
    directory, so a stale checkpoint is never continued silently.
    """
    from tqdm.auto import tqdm
    from transformers import GPT2LMHeadModel

    pcfg = model_cfg["pretrain"]
    if not sequences:
        raise ValueError("pretrain split is empty: no sequences to train on")
    fingerprint = config_hash(
        {"model": dict(model_cfg), "seed": seed, "n_sequences": len(sequences)}
    )
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(root)
    torch.manual_seed(derive_seed(seed, "pretrain-init"))
    if ckpt is not None:
        meta = json.loads((ckpt / "meta.json").read_text())
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"--checkpoint-dir {str(root)!r} holds {ckpt.name} of a different config or "
                "pretrain split; delete it to start over"
            )
        model = GPT2LMHeadModel.from_pretrained(ckpt)
        start, losses_before = int(meta["step"]), meta.get("losses", [])
    else:
        model = GPT2LMHeadModel(gpt2_config(model_cfg, tokenizer))
        start, losses_before = 0, []
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": pcfg["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=pcfg["lr"],
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(pcfg["warmup_steps"], pcfg["steps"]))
    if ckpt is not None:
        state = torch.load(ckpt / "trainer.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
    device_type = torch.device(device).type
    losses: list[float] = []
    bar = tqdm(
        range(start, pcfg["steps"]),
        initial=start,
        total=pcfg["steps"],
        desc="pretrain",
        disable=not progress,
    )
    for step in bar:
        idx = batch_indices(len(sequences), pcfg["batch_size"], step, seed)
        ids, mask = pad_batch([sequences[i] for i in idx], tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=pcfg["bf16"]):
            loss = lm_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretrain loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if done % pcfg["checkpoint_every"] == 0 or done == pcfg["steps"]:
            meta = {"fingerprint": fingerprint, "losses": losses_before + losses}
            _save_checkpoint(root, done, model, opt, sched, meta)
    model.eval()
    return PretrainResult(model, losses_before + losses, start)
