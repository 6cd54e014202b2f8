"""Input checks of the report: per-prompt result tables are whole, unique and comparable.

A per-prompt table has one row per (prompt_id, method, steps) with columns
``prompt_id, domain, method, steps, nll, n_bytes, bpb, status`` (nll in nats).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

KEY = ["prompt_id", "method", "steps"]


def validate_per_prompt(df: pd.DataFrame) -> None:
    """Reject duplicate (prompt_id, method, steps) rows and methods with prompts lacking base."""
    need = {"prompt_id", "domain", "method", "steps", "nll", "n_bytes", "bpb", "status"}
    if missing := need - set(df.columns):
        raise ValueError(f"per-prompt results lack columns {sorted(missing)}")
    dup = df[df.duplicated(KEY, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise ValueError(
            f"duplicate result rows for prompt {int(first.prompt_id)}, method "
            f"{first.method!r}, steps {int(first.steps)} ({len(dup)} rows in all): "
            "was a shard given twice?"
        )
    base = set(df.loc[df["method"] == "base", "prompt_id"])
    if not base:
        raise ValueError("per-prompt results have no 'base' rows (the 0-step model)")
    for method, grp in df[df["method"] != "base"].groupby("method"):
        lacking = sorted(set(grp["prompt_id"]) - base)
        if lacking:
            raise ValueError(f"method {method!r} has prompts without a base result: {lacking[:10]}")


def check_complete(
    df: pd.DataFrame,
    methods: Sequence[str],
    prompt_ids: Sequence[int] | None = None,
    *,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Check that ``df`` holds every method of ``methods`` for the same prompts.

    Every comparison of methods must be over one prompt set, so a method missing altogether, a
    method lacking prompts another method has (a shard left out), or (with ``prompt_ids``, all
    test prompts) a prompt no method has, is a ValueError naming them. With ``allow_partial``
    these are tolerated and returned instead (``missing_methods``, ``missing_prompts`` per
    method), for the caller to report; the comparison then uses the prompts all methods have.
    Methods that the config does not run are an error either way.
    """
    present = list(dict.fromkeys(df["method"]))
    extra = [m for m in present if m not in methods]
    if extra:
        raise ValueError(
            f"per-prompt results hold methods {extra} that this config does not run "
            f"(it runs {list(methods)}: base, select.methods and select.lam_sweep)"
        )
    sets = {m: set(df.loc[df["method"] == m, "prompt_id"].astype(int)) for m in present}
    universe = set().union(*sets.values()) if sets else set()
    if prompt_ids is not None:
        universe |= {int(p) for p in prompt_ids}
    missing_methods = [m for m in methods if m not in present]
    missing_prompts = {m: sorted(universe - s) for m, s in sets.items() if universe - s}
    if (missing_methods or missing_prompts) and not allow_partial:
        parts = []
        if missing_methods:
            parts.append(f"methods {missing_methods} have no results")
        for m, lacking in missing_prompts.items():
            shown = ", ".join(map(str, lacking[:10])) + (", ..." if len(lacking) > 10 else "")
            parts.append(
                f"method {m!r} lacks prompts [{shown}] ({len(lacking)} of {len(universe)})"
            )
        raise ValueError(
            "per-prompt results are incomplete: " + "; ".join(parts) + " (a shard or method "
            "left out?); methods are only compared over the same prompts: pass all shards, or "
            "--allow-partial to compare over the prompts every method has"
        )
    return {"missing_methods": missing_methods, "missing_prompts": missing_prompts}


def common_prompts(df: pd.DataFrame) -> set[int]:
    """The prompt ids every method present in ``df`` has (the one prompt set compared)."""
    present = list(dict.fromkeys(df["method"]))
    return set.intersection(
        *(set(df.loc[df["method"] == m, "prompt_id"].astype(int)) for m in present)
    )


def partial_record(partial: Mapping[str, Any], allowed: bool) -> dict[str, Any] | None:
    """What ``--allow-partial`` left out (None for complete results): metrics.json ``partial``."""
    if not (partial["missing_methods"] or partial["missing_prompts"]):
        return None
    return {
        "allowed": allowed,
        "missing_methods": list(partial["missing_methods"]),
        "missing_prompts": {m: list(p) for m, p in partial["missing_prompts"].items()},
    }


def aggregate(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate finetune shard tables, sorted by (method, prompt_id, steps), validated."""
    if not paths:
        raise ValueError("--inputs: no shard files given")
    frames = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"--inputs: {str(p)!r} does not exist")
        frames.append(pd.read_parquet(p))
    df = pd.concat(frames, ignore_index=True).sort_values(["method", "prompt_id", "steps"])
    df = df.reset_index(drop=True)
    validate_per_prompt(df)
    return df
