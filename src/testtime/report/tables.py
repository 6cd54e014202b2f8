"""The report's tables: bpb per domain and method, % of base, bpb against steps, uncertainty,
adaptive compute, the λ′ sweep and the memory-size curve.

``results`` maps a method (report row) to one ok row per prompt (columns prompt_id, domain,
steps, nll, n_bytes, bpb), in table order; bpb is byte-weighted over prompts
(:func:`testtime.report.estimates.byte_weighted_bpb`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from testtime.bpb import bits_per_byte
from testtime.methods import Variant, selection_variants
from testtime.report.estimates import (
    bootstrap_bpb_se,
    byte_weighted_bpb,
    paired_difference,
    rows_bpb,
)
from testtime.report.rows import mean_steps, ok_mask, split_ok
from testtime.statistics import RELATIVE_COLUMNS, relative_bpb_table, uncertainty_gain_frame

BPB_COLUMNS = ["domain", "method", "n", "bpb_mean", "bpb_se"]
STEPS_COLUMNS = ["method", "steps", "bpb_mean", "avg_steps"]
UNCERTAINTY_COLUMNS = ["prompt_id", "domain", "sigma", "bpb"]
ADAPTIVE_COLUMNS = ["alpha", "method", "avg_steps", "bpb_mean", "bpb_se"]
SWEEP_COLUMNS = ["lam", "method", "bpb_mean", "bpb_se"]
MEMORY_CURVE_COLUMNS = ["fraction", "sift", "nn", "n", "sift_bpb", "nn_bpb", "diff", "diff_se"]


def bpb_table(
    results: Mapping[str, pd.DataFrame], *, n_boot: int, seed: int, domains: Sequence[str]
) -> pd.DataFrame:
    """``domain, method, n, bpb_mean, bpb_se``: one row per (domain, method) plus ``all``.

    ``results`` maps a method to one ok row per prompt (columns domain, nll, n_bytes).
    """
    rows = []
    for domain in [*domains, "all"]:
        for method, res in results.items():
            sub = res if domain == "all" else res[res["domain"] == domain]
            if sub.empty:
                continue
            nll = sub["nll"].to_numpy(dtype=float)
            nb = sub["n_bytes"].to_numpy(dtype=float)
            rows.append(
                {
                    "domain": domain,
                    "method": method,
                    "n": len(sub),
                    "bpb_mean": byte_weighted_bpb(nll, nb),
                    "bpb_se": bootstrap_bpb_se(nll, nb, n_boot, seed),
                }
            )
    return pd.DataFrame(rows, columns=BPB_COLUMNS)


def all_domains(table: pd.DataFrame) -> pd.DataFrame:
    """The ``all`` rows of a :func:`bpb_table`, indexed by method."""
    return table[table["domain"] == "all"].set_index("method")


def relative_table(
    results: Mapping[str, pd.DataFrame], *, n_boot: int, seed: int, domains: Sequence[str]
) -> pd.DataFrame:
    """bpb in % of the base model (:func:`testtime.statistics.relative_bpb_table`); no rows
    without base results."""
    if "base" not in results:
        return pd.DataFrame(columns=RELATIVE_COLUMNS)
    return relative_bpb_table(results, n_boot=n_boot, seed=seed, domains=domains)


def steps_curve(df: pd.DataFrame, method: str, base: pd.DataFrame) -> pd.DataFrame:
    """``method, steps, bpb_mean, avg_steps``: byte-weighted bpb after t steps, t on the grid.

    The grid holds step 0 (the base model) and every step evaluated for at least half the
    method's prompts. A prompt not evaluated at t contributes its row at its largest evaluated
    step <= t (a prompt whose selection ended early has stopped training), so every point pools
    the same prompts; prompts with a NaN loss at any step are left out. ``avg_steps`` is the
    mean of the steps actually taken.
    """
    rows, bad = split_ok(df[df["method"] == method])
    rows = rows[~rows["prompt_id"].isin(bad)]  # a NaN-loss prompt leaves the whole curve
    prompts = sorted(set(rows["prompt_id"]))
    base_ok = base[base["prompt_id"].isin(prompts)].set_index("prompt_id")
    counts = rows.groupby("steps")["prompt_id"].nunique()
    grid = [0, *sorted(int(s) for s in counts.index[counts >= len(prompts) / 2] if s > 0)]
    by_prompt = {p: g.sort_values("steps") for p, g in rows.groupby("prompt_id")}
    out = []
    for t in grid:
        nll = nb = taken = 0.0
        for p in prompts:
            if t == 0:
                nll += base_ok.loc[p, "nll"]
                nb += base_ok.loc[p, "n_bytes"]
                continue
            g = by_prompt[p]
            g = g[g["steps"] <= t]
            if g.empty:
                r = base_ok.loc[p]
                step = 0
            else:
                r = g.iloc[-1]
                step = int(r["steps"])
            nll += float(r["nll"])
            nb += float(r["n_bytes"])
            taken += step
        out.append(
            {
                "method": method,
                "steps": t,
                "bpb_mean": bits_per_byte(nll, nb),
                "avg_steps": taken / len(prompts),
            }
        )
    return pd.DataFrame(out)


def steps_table(df: pd.DataFrame, methods: Sequence[str], left_out: set[int]) -> pd.DataFrame:
    """:func:`steps_curve` of each of ``methods`` but base over the prompts of ``df`` that have
    an ok row at every evaluated step of every method and are not ``left_out``."""
    bad = left_out | set(df.loc[~ok_mask(df), "prompt_id"].astype(int))
    rows = df[df["prompt_id"].isin(set(df["prompt_id"].astype(int)) - bad)]
    base = rows[rows["method"] == "base"]
    curves = [steps_curve(rows, m, base) for m in methods if m != "base"]
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=STEPS_COLUMNS)


def uncertainty_table(
    sift_selection: pd.DataFrame | None, sift_rows: pd.DataFrame | None
) -> pd.DataFrame:
    """``prompt_id, domain, sigma, bpb``: σ_N(x*) of SIFT's selection (the square root of its
    last variance) and SIFT's bpb after fine-tuning, over every prompt SIFT scored (a SIFT-only
    statistic, not a comparison of methods); no rows without either."""
    if sift_selection is None or sift_rows is None:
        return pd.DataFrame(columns=UNCERTAINTY_COLUMNS)
    last = sift_selection.sort_values("step").groupby("prompt_id").tail(1)
    sigma = last.set_index("prompt_id")["variance"].clip(lower=0).pow(0.5)
    res = sift_rows[sift_rows["prompt_id"].isin(sigma.index)]
    return pd.DataFrame(
        {
            "prompt_id": res["prompt_id"].to_numpy(),
            "domain": res["domain"].to_numpy(),
            "sigma": sigma.loc[res["prompt_id"]].to_numpy(dtype=float),
            "bpb": res["bpb"].to_numpy(dtype=float),
        }
    )


def gain_table(uncertainty: pd.DataFrame, results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """SIFT's σ_N, bpb and gain over base per prompt
    (:func:`testtime.statistics.uncertainty_gain_frame`); no rows without base or σ_N."""
    if "base" not in results or not len(uncertainty):
        return pd.DataFrame(columns=[*uncertainty.columns, "base_bpb", "gain", "relative_gain"])
    return uncertainty_gain_frame(uncertainty, results["base"])


def adaptive_table(
    table: pd.DataFrame, results: Mapping[str, pd.DataFrame], adaptive: Sequence[Variant]
) -> pd.DataFrame:
    """``alpha, method, avg_steps, bpb_mean, bpb_se`` of each adaptive row in the table."""
    rows = all_domains(table)
    return pd.DataFrame(
        [
            {
                "alpha": v.alpha,
                "method": v.name,
                "avg_steps": mean_steps(results[v.name]),
                "bpb_mean": rows.loc[v.name, "bpb_mean"],
                "bpb_se": rows.loc[v.name, "bpb_se"],
            }
            for v in adaptive
            if v.name in rows.index
        ],
        columns=ADAPTIVE_COLUMNS,
    )


def lambda_sweep_table(table: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """``lam, method, bpb_mean, bpb_se`` of SIFT on the whole memory per λ′, smallest first."""
    rows = all_domains(table)
    return pd.DataFrame(
        [
            {
                "lam": v.lam,
                "method": v.name,
                "bpb_mean": rows.loc[v.name, "bpb_mean"],
                "bpb_se": rows.loc[v.name, "bpb_se"],
            }
            for v in selection_variants(cfg)
            if v.selector == "sift" and v.memory_fraction == 1 and v.name in rows.index
        ],
        columns=SWEEP_COLUMNS,
    ).sort_values("lam")


def memory_size_curve(
    cfg: Mapping[str, Any], results: Mapping[str, pd.DataFrame], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """Paired SIFT − NN (bpb, mean over the same prompts ± bootstrap SE) per memory share.

    One row per ``select.memory_fractions`` value and the whole memory (fraction 1), where
    both methods ran; columns :data:`MEMORY_CURVE_COLUMNS` (``sift_bpb``/``nn_bpb`` are
    byte-weighted over the prompts), smallest memory first.
    """
    variants = selection_variants(cfg)
    # (selector, share) -> name, for the whole memory the plain selector (no λ′ sweep variant)
    by_share = {
        (v.selector, v.memory_fraction): v.name
        for v in variants
        if v.memory_fraction < 1 or v.name == v.selector
    }
    fractions = sorted({v.memory_fraction for v in variants if v.memory_fraction < 1})
    rows = []
    for f in [*fractions, 1.0] if fractions else []:
        sift, nn = by_share.get(("sift", f)), by_share.get(("nn", f))
        if sift not in results or nn not in results:
            continue
        d = paired_difference(results[sift], results[nn], n_boot=n_boot, seed=seed)
        rows.append(
            {
                "fraction": f,
                "sift": sift,
                "nn": nn,
                "n": d["n"],
                "sift_bpb": rows_bpb(results[sift]),
                "nn_bpb": rows_bpb(results[nn]),
                "diff": d["mean"],
                "diff_se": d["se"],
            }
        )
    return pd.DataFrame(rows, columns=MEMORY_CURVE_COLUMNS)
