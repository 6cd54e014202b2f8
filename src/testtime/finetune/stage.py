"""The finetune stage: read and check its inputs once, then fine-tune and score one shard.

:func:`read_finetune_inputs` reads ``prompts.parquet``, ``memory.parquet`` and
``selections/<method>.parquet`` (docs/pipeline.md sections 1 and 4) once, checks them (the
method is configured, every prompt of the shard selects ``select.n`` sequences), resolves the
device and decides the adaptive-SIFT stop steps; :func:`run_finetune` turns them into the jobs
:class:`testtime.finetune.Finetuner` runs and returns the shard's table (section 5). Bad input
fails loudly with the file and prompt named: a memory id not in the memory, a prompt without a
selection, an empty eval text.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from testtime.bpb import eval_token_ids, model_context
from testtime.finetune.finetuner import Finetuner
from testtime.finetune.jobs import STATUS_NAN, EvalRow, PromptJob, TrainSettings
from testtime.selection import adaptive_steps

RESULT_COLUMNS = ("prompt_id", "domain", "method", "steps", "nll", "n_bytes", "bpb", "status")


class FinetuneInputs(NamedTuple):
    """What the finetune stage read for one method and prompt shard, checked.

    Attributes:
        method: ``base`` or a configured selection variant.
        prompts: the shard's rows of ``prompts.parquet``.
        selection: per prompt id its selection rows (steps 0..n); None for ``base``.
        memory_ids: ``input_ids`` of the memory ids the selection uses; None for ``base``.
        stops: per prompt id the adaptive-SIFT stop steps to score too (one per
            ``select.adaptive_alphas`` value); None where the method has no adaptive rows.
        device: the resolved config ``device``.
        selection_path: the selection file, as named in errors.
    """

    method: str
    prompts: pd.DataFrame
    selection: dict[int, pd.DataFrame] | None
    memory_ids: dict[int, np.ndarray] | None
    stops: dict[int, tuple[int, ...]] | None
    device: torch.device
    selection_path: str


def read_finetune_inputs(
    cfg: Mapping[str, Any],
    *,
    method: str,
    prompts_path: str | Path,
    memory_path: str | Path,
    selection_path: str | Path | None,
    shard: int = 0,
    num_shards: int = 1,
) -> FinetuneInputs:
    """Read and check the finetune stage's inputs for ``method`` and one prompt shard."""
    from testtime.device import resolve_device
    from testtime.methods import variant_by_name
    from testtime.selection.pipeline import check_selection_steps

    if method != "base":
        variant_by_name(cfg, method)
    prompts = shard_prompts(pd.read_parquet(prompts_path), shard, num_shards)
    selection = memory_ids = stops = None
    if method != "base":
        if selection_path is None:
            raise ValueError(f"--selection is required for method {method!r}")
        table = pd.read_parquet(selection_path)
        where = f"--selection {str(selection_path)!r}"
        check_selection_steps(table, cfg["select"]["n"], where, prompts["prompt_id"])
        full = selection_by_prompt(table, selection_path)
        selection = {int(p): full[int(p)] for p in prompts["prompt_id"] if int(p) in full}
        needed = {int(m) for s in selection.values() for m in s["memory_id"] if m >= 0}
        memory_ids = load_memory_ids(memory_path, needed)
        # the adaptive-SIFT report rows come from the sift run (testtime.methods)
        alphas = cfg["select"]["adaptive_alphas"] if method == "sift" else []
        stops = adaptive_stops(selection, alphas) if alphas else None
    return FinetuneInputs(
        method,
        prompts,
        selection,
        memory_ids,
        stops,
        resolve_device(cfg["device"]),
        str(selection_path),
    )


def adaptive_stops(
    selection: Mapping[int, pd.DataFrame], alphas: Sequence[float]
) -> dict[int, tuple[int, ...]]:
    """Per prompt id the adaptive-SIFT stop step of each alpha (config order), from the
    selection's variance trace (:func:`testtime.selection.adaptive_steps`)."""
    return {
        pid: tuple(adaptive_steps(sel["variance"].to_numpy(), alphas).values())
        for pid, sel in selection.items()
    }


def read_selection(path: str | Path) -> dict[int, pd.DataFrame]:
    """The selection file ``path`` per prompt id (:func:`selection_by_prompt`)."""
    return selection_by_prompt(pd.read_parquet(path), path)


def selection_by_prompt(df: pd.DataFrame, path: str | Path) -> dict[int, pd.DataFrame]:
    """Selection rows per prompt id, sorted by step, checked to run 0..n with step 0 first
    (errors name ``path``)."""
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
    stops: Mapping[int, Sequence[int]] | None = None,
    selection_path: str = "selection",
) -> list[PromptJob]:
    """One job per prompt; ``selection=None`` means the base model (eval at step 0 only).

    ``stops`` adds each prompt's adaptive stop steps (:func:`adaptive_stops`) to its eval
    steps."""
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
        extra = stops.get(pid, ()) if stops is not None else ()
        jobs.append(
            PromptJob(
                pid,
                train,
                eval_ids,
                n_bytes,
                eval_steps_for(len(train), eval_at, extra),
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
    cfg: Mapping[str, Any], inputs: FinetuneInputs, *, model_dir: str | Path
) -> pd.DataFrame:
    """Fine-tune and score every prompt of ``inputs`` (one method and shard) with the base model
    in ``model_dir``; the result table."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from testtime.adapters import select_trainable, wrap_lora
    from testtime.seeding import derive_seed

    ft = cfg["finetune"]
    method, prompts = inputs.method, inputs.prompts
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    context = model_context(model)
    max_length = min(ft["max_length"] or context, context)
    jobs = build_jobs(
        prompts,
        tokenizer,
        selection=inputs.selection,
        memory_ids=inputs.memory_ids,
        max_length=max_length,
        eval_at=ft["eval_at"],
        stops=inputs.stops,
        selection_path=inputs.selection_path,
    )
    mode = ft["mode"]
    if mode == "lora" and method != "base":
        model = wrap_lora(model, ft["lora"], derive_seed(cfg["seed"], "lora"))
    trainable = select_trainable(model, mode if method != "base" else "full")
    tuner = Finetuner(
        model,
        trainable,
        TrainSettings.from_config(cfg),
        device=inputs.device,
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
