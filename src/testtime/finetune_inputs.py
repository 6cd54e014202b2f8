"""Inputs of the finetune stage: validated selections, eval steps and :class:`PromptJob` lists.

Turns ``prompts.parquet``, ``memory.parquet`` and ``selections/<method>.parquet``
(docs/pipeline.md sections 1 and 4) into the jobs :class:`testtime.finetune.Finetuner` runs, and
runs them for one method and prompt shard (section 5). Bad input fails loudly with the file and
prompt named: a memory id not in the memory, a prompt without a selection, an empty eval text.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from testtime.bpb import eval_token_ids, model_context
from testtime.finetune import STATUS_NAN, EvalRow, Finetuner, PromptJob, TrainSettings
from testtime.selection import adaptive_steps

RESULT_COLUMNS = ("prompt_id", "domain", "method", "steps", "nll", "n_bytes", "bpb", "status")


def read_selection(path: str | Path) -> dict[int, pd.DataFrame]:
    """Selection rows per prompt id, sorted by step, checked to run 0..n with step 0 first."""
    df = pd.read_parquet(path)
    missing = {"prompt_id", "step", "memory_id", "variance"} - set(df.columns)
    if missing:
        raise ValueError(f"selection {str(path)!r} lacks columns {sorted(missing)}")
    out: dict[int, pd.DataFrame] = {}
    for pid, grp in df.sort_values(["prompt_id", "step"]).groupby("prompt_id", sort=True):
        steps = grp["step"].to_numpy()
        if not np.array_equal(steps, np.arange(len(steps))):
            raise ValueError(
                f"selection {str(path)!r}: prompt {pid} has steps {steps.tolist()[:8]}..., "
                "expected 0, 1, 2, ... without gaps"
            )
        out[int(pid)] = grp.reset_index(drop=True)
    return out


def eval_steps_for(
    n_selected: int,
    eval_at: Sequence[int],
    extra: Sequence[int] = (),
) -> tuple[int, ...]:
    """Steps to evaluate for a prompt with ``n_selected`` steps.

    ``eval_at`` (empty = every step 1..n) capped at what the prompt has, plus the final step and
    any ``extra`` steps (adaptive stops).

    >>> eval_steps_for(4, [2, 10])
    (2, 4)
    >>> eval_steps_for(3, [], extra=[0])
    (0, 1, 2, 3)
    """
    steps = (
        set(range(1, n_selected + 1)) if not eval_at else {s for s in eval_at if s <= n_selected}
    )
    steps.add(n_selected)
    steps.update(int(s) for s in extra if 0 <= s <= n_selected)
    return tuple(sorted(steps))


def shard_prompts(prompts: pd.DataFrame, shard: int, num_shards: int) -> pd.DataFrame:
    """Rows of shard ``shard`` of ``num_shards``: ``prompt_id % num_shards == shard``."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard {shard} must be in 0..{num_shards - 1}")
    return prompts[prompts["prompt_id"] % num_shards == shard].reset_index(drop=True)


def build_jobs(
    prompts: pd.DataFrame,
    tokenizer: Any,
    *,
    selection: Mapping[int, pd.DataFrame] | None,
    memory_ids: Mapping[int, np.ndarray] | None,
    max_length: int,
    eval_at: Sequence[int],
    alphas: Sequence[float] = (),
    selection_path: str = "selection",
) -> list[PromptJob]:
    """One job per prompt; ``selection=None`` means the base model (eval at step 0 only)."""
    jobs = []
    for row in prompts.itertuples(index=False):
        pid = int(row.prompt_id)
        if not isinstance(row.eval_text, str) or not row.eval_text:
            raise ValueError(f"prompts.parquet: prompt {pid} has an empty eval_text")
        context = getattr(row, "context_text", "")
        if not isinstance(context, str):
            raise ValueError(f"prompts.parquet: prompt {pid} has a non-string context_text")
        eval_ids, n_context = eval_token_ids(tokenizer, row.eval_text, context)
        n_bytes = len(row.eval_text.encode("utf-8"))
        if selection is None:
            jobs.append(PromptJob(pid, [], eval_ids, n_bytes, (0,), n_context))
            continue
        sel = selection.get(pid)
        if sel is None or len(sel) < 2:
            raise ValueError(f"{selection_path}: prompt {pid} has no selected sequences")
        train = []
        for mid in sel["memory_id"].to_numpy()[1:]:
            ids = memory_ids.get(int(mid)) if memory_ids is not None else None
            if ids is None:
                raise ValueError(
                    f"{selection_path}: prompt {pid} selects memory_id {int(mid)}, "
                    "which is not in memory.parquet"
                )
            if len(ids) < 2:
                raise ValueError(f"memory.parquet: memory_id {int(mid)} has fewer than 2 tokens")
            train.append(torch.as_tensor(np.asarray(ids[:max_length], dtype=np.int64)))
        stops = adaptive_steps(sel["variance"].to_numpy(), alphas).values()
        jobs.append(
            PromptJob(
                pid,
                train,
                eval_ids,
                n_bytes,
                eval_steps_for(len(train), eval_at, stops),
                n_context,
            )
        )
    return jobs


def load_memory_ids(path: str | Path, needed: set[int]) -> dict[int, np.ndarray]:
    """``input_ids`` of the ``needed`` memory ids (others are not kept in RAM)."""
    df = pd.read_parquet(path, columns=["seq_id", "input_ids"])
    keep = df[df["seq_id"].isin(needed)]
    return {
        int(i): np.asarray(ids) for i, ids in zip(keep["seq_id"], keep["input_ids"], strict=True)
    }


def rows_to_frame(rows: Sequence[EvalRow], domains: Mapping[int, str], method: str) -> pd.DataFrame:
    """Result rows as the finetune shard table (docs/pipeline.md section 5), typed."""
    df = pd.DataFrame(rows, columns=list(EvalRow._fields))
    df.insert(1, "domain", [domains[int(p)] for p in df["prompt_id"]])
    df.insert(2, "method", method)
    return df.astype(
        {
            "prompt_id": "int64",
            "domain": "string",
            "method": "string",
            "steps": "int32",
            "nll": "float64",
            "n_bytes": "int64",
            "bpb": "float64",
            "status": "string",
        }
    )[list(RESULT_COLUMNS)]


def run_finetune(
    cfg: Mapping[str, Any],
    *,
    method: str,
    model_dir: str | Path,
    prompts_path: str | Path,
    memory_path: str | Path,
    selection_path: str | Path | None,
    shard: int = 0,
    num_shards: int = 1,
    device: torch.device | None = None,
) -> pd.DataFrame:
    """Fine-tune and score every prompt of one shard for ``method``; the result table."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from testtime.adapters import select_trainable, wrap_lora
    from testtime.device import resolve_device
    from testtime.seeding import derive_seed

    ft = cfg["finetune"]
    device = device or resolve_device(cfg["device"])
    prompts = shard_prompts(pd.read_parquet(prompts_path), shard, num_shards)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    context = model_context(model)
    max_length = min(ft["max_length"] or context, context)
    if method == "base":
        selection, memory_ids, alphas = None, None, []
    else:
        if selection_path is None:
            raise ValueError(f"--selection is required for method {method!r}")
        full = read_selection(selection_path)
        selection = {int(p): full.get(int(p)) for p in prompts["prompt_id"]}
        selection = {p: s for p, s in selection.items() if s is not None}
        needed = {int(m) for s in selection.values() for m in s["memory_id"] if m >= 0}
        memory_ids = load_memory_ids(memory_path, needed)
        alphas = cfg["select"]["adaptive_alphas"] if method == "sift" else []
    jobs = build_jobs(
        prompts,
        tokenizer,
        selection=selection,
        memory_ids=memory_ids,
        max_length=max_length,
        eval_at=ft["eval_at"],
        alphas=alphas,
        selection_path=str(selection_path),
    )
    mode = ft["mode"]
    if mode == "lora" and method != "base":
        model = wrap_lora(model, ft["lora"], derive_seed(cfg["seed"], "lora"))
    trainable = select_trainable(model, mode if method != "base" else "full")
    tuner = Finetuner(
        model,
        trainable,
        TrainSettings.from_config(cfg),
        device=device,
        seed=cfg["seed"],
        context=context,
    )
    rows: list[EvalRow] = []
    bar = tqdm(total=len(jobs), desc=f"finetune {method}", unit="prompt", file=sys.stderr)
    if method == "base":
        for lo in range(0, len(jobs), 8):
            rows += tuner.score_base(jobs[lo : lo + 8])
            bar.update(len(jobs[lo : lo + 8]))
    else:
        for job_rows in tuner.run(jobs, ft["batch_prompts"]):
            rows += job_rows
            bar.update(1)
    bar.close()
    bad = sorted({r.prompt_id for r in rows if r.status == STATUS_NAN})
    if bad:
        print(
            f"warning: {method}: NaN loss for prompts {bad}; recorded as nan_loss", file=sys.stderr
        )
    return rows_to_frame(
        rows, dict(zip(prompts["prompt_id"], prompts["domain"], strict=True)), method
    )
