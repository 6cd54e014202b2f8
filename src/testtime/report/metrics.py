"""metrics.json: one short named function per key, and :func:`metrics_json` to assemble them.

Each function takes the report's computed tables (:class:`Tables`) and returns one key's value;
bpb values are bits per byte over the ``all`` row (byte-weighted), SEs bootstrap SEs
(:mod:`testtime.report.estimates`), ``*_pct`` values % of the base model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.report.estimates import correlations, paired_difference
from testtime.report.rows import mean_steps
from testtime.report.tables import all_domains
from testtime.statistics import PAPER_ALL_ROW_PCT, byte_weighted_difference, uncertainty_gain


class Tables(NamedTuple):
    """What the metrics are computed from."""

    results: Mapping[str, pd.DataFrame]
    """Method (report row) -> one ok row per prompt, in table order, one prompt set."""
    bpb: pd.DataFrame
    """:func:`testtime.report.tables.bpb_table` of ``results``."""
    uncertainty: pd.DataFrame
    """:func:`testtime.report.tables.uncertainty_table`."""
    relative: pd.DataFrame
    """:func:`testtime.report.tables.relative_table`."""
    gain: pd.DataFrame
    """:func:`testtime.report.tables.gain_table`."""
    memory_curve: pd.DataFrame
    """:func:`testtime.report.tables.memory_size_curve`."""
    nan_prompts: Mapping[str, list[int]]
    """Method -> prompts left out for a NaN loss."""
    partial: dict[str, Any] | None
    """:func:`testtime.report.checks.partial_record`."""
    domains: list[str]
    n_boot: int
    seed: int


def _pairs(t: Tables) -> list[tuple[str, str]]:
    """The paired comparisons: every method against base, then SIFT against NN."""
    pairs = [(m, "base") for m in t.results if m != "base"] if "base" in t.results else []
    return pairs + ([("sift", "nn")] if "sift" in t.results and "nn" in t.results else [])


def bpb(t: Tables) -> dict[str, float]:
    rows = all_domains(t.bpb)
    return {m: float(rows.loc[m, "bpb_mean"]) for m in t.results if m in rows.index}


def bpb_se(t: Tables) -> dict[str, float]:
    rows = all_domains(t.bpb)
    return {m: float(rows.loc[m, "bpb_se"]) for m in t.results if m in rows.index}


def sigma_bpb_pearson(t: Tables) -> float:
    """Pearson r of SIFT's σ_N(x*) and its bpb after fine-tuning, over prompts."""
    return correlations(t.uncertainty["sigma"].to_numpy(), t.uncertainty["bpb"].to_numpy())[0]


def sigma_bpb_spearman(t: Tables) -> float:
    """Spearman ρ of SIFT's σ_N(x*) and its bpb after fine-tuning, over prompts."""
    return correlations(t.uncertainty["sigma"].to_numpy(), t.uncertainty["bpb"].to_numpy())[1]


def avg_steps(t: Tables) -> dict[str, float]:
    return {m: mean_steps(r) for m, r in t.results.items()}


def paired(t: Tables) -> dict[str, dict[str, float | int]]:
    """``<a>-<b>``: the mean of per-prompt bpb differences (:func:`paired_difference`)."""
    return {
        f"{a}-{b}": paired_difference(t.results[a], t.results[b], n_boot=t.n_boot, seed=t.seed)
        for a, b in _pairs(t)
    }


def memory_curve(t: Tables) -> list[dict[str, Any]]:
    return t.memory_curve.to_dict("records")


def n_prompts(t: Tables) -> dict[str, int]:
    return {m: len(r) for m, r in t.results.items()}


def nan_loss_prompts(t: Tables) -> dict[str, list[int]]:
    return {m: v for m, v in t.nan_prompts.items() if v}


def partial(t: Tables) -> dict[str, Any] | None:
    return t.partial


def bpb_relative_pct(t: Tables) -> dict[str, float]:
    """bpb in % of base over all domains (the paper's unit)."""
    return t.relative[t.relative["domain"] == "all"].set_index("method")["rel_pct"].to_dict()


def bpb_relative_se_pct(t: Tables) -> dict[str, float]:
    return t.relative[t.relative["domain"] == "all"].set_index("method")["rel_se_pct"].to_dict()


def paper_all_row_pct(t: Tables) -> dict[str, float]:
    """The paper's All row (:data:`testtime.statistics.PAPER_ALL_ROW_PCT`), for comparison."""
    return dict(PAPER_ALL_ROW_PCT)


def paired_byte_weighted(t: Tables) -> dict[str, dict[str, Any]]:
    """``<a>-<b>``: the table's statistic as a paired difference
    (:func:`testtime.statistics.byte_weighted_difference`)."""
    return {
        f"{a}-{b}": byte_weighted_difference(
            t.results[a], t.results[b], n_boot=t.n_boot, seed=t.seed
        )
        for a, b in _pairs(t)
    }


def uncertainty(t: Tables) -> dict[str, dict[str, Any]]:
    """Correlations of σ_N with bpb and gain (:func:`testtime.statistics.uncertainty_gain`)."""
    return uncertainty_gain(t.gain, t.domains, n_boot=t.n_boot, seed=t.seed)


Metric = Callable[[Tables], Any]
METRICS: dict[str, Metric] = {
    f.__name__: f
    for f in (
        bpb,
        bpb_se,
        sigma_bpb_pearson,
        sigma_bpb_spearman,
        avg_steps,
        paired,
        memory_curve,
        n_prompts,
        nan_loss_prompts,
        partial,
    )
}
"""The keys every metrics.json has, in file order."""
RELATIVE_METRICS: dict[str, Metric] = {
    f.__name__: f
    for f in (bpb_relative_pct, bpb_relative_se_pct, paper_all_row_pct, paired_byte_weighted)
}
"""The keys written when the results have base (the paper's unit), after :data:`METRICS`;
then ``uncertainty`` (:func:`uncertainty`) when SIFT's σ_N is known too."""


def json_ready(x: Any) -> Any:
    """JSON-ready copy: NaN/inf floats become None, numpy scalars Python numbers."""
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_ready(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def metrics_json(t: Tables) -> dict[str, Any]:
    """Every metrics.json key, in file order, JSON-ready (NaN -> None)."""
    out = {key: fn(t) for key, fn in METRICS.items()}
    if "base" in t.results:
        out |= {key: fn(t) for key, fn in RELATIVE_METRICS.items()}
        if len(t.uncertainty):
            out["uncertainty"] = uncertainty(t)
    return json_ready(out)
