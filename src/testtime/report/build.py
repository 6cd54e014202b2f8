""":func:`build_report`: every table and metric of the report stage from per-prompt results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

import testtime.report.tables as tables
from testtime.methods import Variant, adaptive_variants, finetuned_method_names
from testtime.report.checks import (
    check_complete,
    common_prompts,
    partial_record,
    validate_per_prompt,
)
from testtime.report.metrics import Tables, metrics_json
from testtime.report.rows import compared, left_out, report_order, scored_rows


class Report(NamedTuple):
    """Everything the report stage writes (tables are pandas DataFrames)."""

    bpb: pd.DataFrame
    uncertainty: pd.DataFrame
    steps: pd.DataFrame
    adaptive: pd.DataFrame
    lambda_sweep: pd.DataFrame
    memory_curve: pd.DataFrame
    metrics: dict[str, Any]
    nan_prompts: dict[str, list[int]]
    rows: list[Variant]
    """The report rows (methods) in table order, with their labels."""
    relative: pd.DataFrame
    """bpb in % of the base model (:func:`testtime.statistics.relative_bpb_table`)."""
    gain: pd.DataFrame
    """SIFT's σ_N and gain per prompt (:func:`testtime.statistics.uncertainty_gain_frame`)."""


def build_report(
    cfg: Mapping[str, Any],
    per_prompt: pd.DataFrame,
    selections: Mapping[str, pd.DataFrame],
    *,
    allow_partial: bool = False,
) -> Report:
    """Compute every table and metric from per-prompt results and sift selections.

    ``selections`` maps a variant name (``sift``, ``sift_lam0.1``) to its selection table;
    ``sift`` is needed for the uncertainty plot and adaptive rows. Every method is scored over
    one prompt set: results lacking a configured method or some method's prompts are an error
    (:func:`check_complete`) unless ``allow_partial``, which compares over the prompts all
    methods have and records what was left out in ``metrics["partial"]``; a prompt with a NaN
    loss in any method is left out of every method's numbers (and listed).
    """
    validate_per_prompt(per_prompt)
    n_boot, seed = int(cfg["report"]["bootstrap"]), int(cfg["seed"])
    partial = check_complete(per_prompt, finetuned_method_names(cfg), allow_partial=allow_partial)
    present = list(dict.fromkeys(per_prompt["method"]))
    per_prompt = per_prompt[per_prompt["prompt_id"].isin(common_prompts(per_prompt))]
    sift_selection = selections.get("sift")
    adaptive = adaptive_variants(cfg)
    scored = scored_rows(per_prompt, present, sift_selection, adaptive)
    rows = report_order(list(scored.results), cfg)
    results = compared(scored, rows)
    order = [v.name for v in rows]
    domains = list(dict.fromkeys(per_prompt.sort_values("prompt_id")["domain"]))
    stats = {"n_boot": n_boot, "seed": seed}
    bpb = tables.bpb_table(results, domains=domains, **stats)
    uncertainty = tables.uncertainty_table(sift_selection, scored.results.get("sift"))
    memory_curve = tables.memory_size_curve(cfg, results, **stats)
    relative = tables.relative_table(results, domains=domains, **stats)
    gain = tables.gain_table(uncertainty, results)
    computed = Tables(
        results=results,
        bpb=bpb,
        uncertainty=uncertainty,
        relative=relative,
        gain=gain,
        memory_curve=memory_curve,
        nan_prompts=scored.nan_prompts,
        partial=partial_record(partial, allow_partial),
        domains=domains,
        **stats,
    )
    return Report(
        bpb=bpb,
        uncertainty=uncertainty,
        steps=tables.steps_table(per_prompt, [m for m in order if m in present], left_out(scored)),
        adaptive=tables.adaptive_table(bpb, results, adaptive),
        lambda_sweep=tables.lambda_sweep_table(bpb, cfg),
        memory_curve=memory_curve,
        metrics=metrics_json(computed),
        nan_prompts=scored.nan_prompts,
        rows=rows,
        relative=relative,
        gain=gain,
    )
