"""Per-prompt rows of the report: one row per prompt and method (or adaptive row), in table
order, NaN-loss prompts split off.

A method's result for a prompt is its row at the prompt's final step (the largest ``steps``;
``base`` = 0); adaptive SIFT at α uses the sift row at that prompt's stop step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.methods import Variant, report_rows


def final_rows(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per prompt of ``method``: its row at the largest ``steps``."""
    rows = df[df["method"] == method]
    if rows.empty:
        raise ValueError(f"no results for method {method!r}")
    idx = rows.groupby("prompt_id")["steps"].idxmax()
    return rows.loc[idx].sort_values("prompt_id").reset_index(drop=True)


def rows_at_steps(df: pd.DataFrame, method: str, stops: Mapping[int, int]) -> pd.DataFrame:
    """One row per prompt of ``method`` at the prompt's step ``stops[prompt_id]`` (0 = base row)."""
    rows = df[df["method"] == method].set_index(["prompt_id", "steps"])
    base = df[df["method"] == "base"].set_index(["prompt_id", "steps"])
    out = []
    for pid, step in sorted(stops.items()):
        if step == 0 and (pid, 0) not in rows.index and (pid, 0) in base.index:
            # zero steps is the base model, scored once for all methods
            out.append(
                base.loc[(pid, 0)].to_dict() | {"prompt_id": pid, "steps": 0, "method": method}
            )
            continue
        if (pid, step) not in rows.index:
            raise ValueError(
                f"method {method!r} has no evaluation of prompt {pid} at step {step}: "
                "fine-tuning and report must use the same select.adaptive_alphas"
            )
        out.append(rows.loc[(pid, step)].to_dict() | {"prompt_id": pid, "steps": step})
    return pd.DataFrame(out)[list(df.columns)]


def ok_mask(rows: pd.DataFrame) -> pd.Series:
    """Rows with status ok and a finite bpb."""
    return (rows["status"] == "ok") & np.isfinite(rows["bpb"].to_numpy(dtype=float))


def split_ok(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """Rows with status ok, and the prompt ids left out (NaN loss)."""
    ok = ok_mask(rows)
    return rows[ok].reset_index(drop=True), sorted(int(p) for p in rows.loc[~ok, "prompt_id"])


def adaptive_stops(
    df: pd.DataFrame, sift_selection: pd.DataFrame | None, alphas: Sequence[float]
) -> dict[float, dict[int, int]]:
    """``alpha -> {prompt_id: stop step}`` of adaptive SIFT for the prompts sift has in ``df``,
    from the variance trace of SIFT's selection table."""
    from testtime.selection import adaptive_steps

    if sift_selection is None:
        raise ValueError("--selections: sift.parquet is needed for select.adaptive_alphas")
    sift_pids = set(df.loc[df["method"] == "sift", "prompt_id"])
    stops: dict[float, dict[int, int]] = {}
    for pid, grp in sift_selection.sort_values(["prompt_id", "step"]).groupby("prompt_id"):
        if int(pid) not in sift_pids:
            continue
        for a, stop in adaptive_steps(grp["variance"].to_numpy(), alphas).items():
            stops.setdefault(a, {})[int(pid)] = stop
    return stops


class Scored(NamedTuple):
    """Per method (and adaptive row): its ok rows, one per prompt, and its NaN-loss prompts."""

    results: dict[str, pd.DataFrame]
    nan_prompts: dict[str, list[int]]


def scored_rows(
    df: pd.DataFrame,
    methods: Sequence[str],
    sift_selection: pd.DataFrame | None,
    adaptive: Sequence[Variant],
) -> Scored:
    """The final rows of each of ``methods`` and the stop-step rows of each ``adaptive`` row
    (when sift ran), split into ok rows and NaN-loss prompt ids."""
    results: dict[str, pd.DataFrame] = {}
    nan_prompts: dict[str, list[int]] = {}
    for method in methods:
        results[method], nan_prompts[method] = split_ok(final_rows(df, method))
    if adaptive and "sift" in methods:
        stops = adaptive_stops(df, sift_selection, [v.alpha for v in adaptive])
        for v in adaptive:
            at_stop = rows_at_steps(df, "sift", stops[v.alpha])
            results[v.name], nan_prompts[v.name] = split_ok(at_stop)
    return Scored(results, nan_prompts)


def left_out(scored: Scored) -> set[int]:
    """Prompts with a NaN loss in any method: left out of every method's numbers."""
    return set().union(*scored.nan_prompts.values())


def compared(scored: Scored, rows: Sequence[Variant]) -> dict[str, pd.DataFrame]:
    """The rows of :func:`report_order`'s methods, in table order, without :func:`left_out`
    prompts (one prompt set for every comparison)."""
    excluded = left_out(scored)
    return {
        v.name: scored.results[v.name][
            ~scored.results[v.name]["prompt_id"].isin(excluded)
        ].reset_index(drop=True)
        for v in rows
    }


def mean_steps(rows: pd.DataFrame) -> float:
    """Mean steps taken over a method's rows (NaN for none)."""
    return float(rows["steps"].mean()) if len(rows) else math.nan


def report_order(methods: Sequence[str], cfg: Mapping[str, Any]) -> list[Variant]:
    """The report rows (:func:`testtime.methods.report_rows`) of ``methods``, in table order:
    base, us, nn, nn_f, sift, random, λ′ sweep, adaptive rows, memory-subset variants (smallest
    memory first). A method the config does not name is a ValueError."""
    rows = {v.name: v for v in report_rows(cfg)}
    if unknown := sorted(set(methods) - set(rows)):
        raise ValueError(f"methods {unknown} are not report rows of this config")
    return [v for name, v in rows.items() if name in methods]
