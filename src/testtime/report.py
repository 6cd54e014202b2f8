"""Aggregation and statistics behind the bits-per-byte table, metrics and figures.

Conventions (docs/pipeline.md section 6):

* a method's result for a prompt is its row at the prompt's final step (the largest ``steps``;
  ``base`` = 0); adaptive SIFT at alpha uses the sift row at that prompt's stop step;
* ``bpb_mean`` of a set of prompts is byte-weighted: ``sum(nll) / (ln 2 * sum(n_bytes))``;
* ``bpb_se`` is the bootstrap standard error of that ratio over prompts
  (:func:`scipy.stats.bootstrap`, ``standard_error``: the standard deviation, ddof 1, over
  ``report.bootstrap`` resamples of prompts drawn from ``numpy.random.default_rng(seed)``; the
  same resamples for every method with the same prompts, so SEs of different methods are
  comparable);
* paired differences are means of per-prompt bpb differences with a bootstrap SE (the two
  methods' bpb resampled together, ``paired=True``);
* the paper's unit (bpb in % of the base model), byte-weighted paired differences and the
  uncertainty-gain correlations are :mod:`testtime.statistics`;
* every comparison is over one prompt set: a configured method without results, or a method
  lacking prompts that others have, is an error (``--allow-partial`` compares over the prompts
  all methods have and records what is missing in metrics.json ``partial``); prompts whose
  fine-tuning hit a NaN loss in any method are left out of every method's numbers and listed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.bpb import bits_per_byte
from testtime.methods import (
    Variant,
    adaptive_variants,
    finetuned_method_names,
    report_rows,
    selection_variants,
)
from testtime.statistics import paper_statistics

KEY = ["prompt_id", "method", "steps"]


# ----------------------------------------------------------------------------- aggregation
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


# ------------------------------------------------------------------------------ selection
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


def split_ok(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """Rows with status ok, and the prompt ids left out (NaN loss)."""
    ok = (rows["status"] == "ok") & np.isfinite(rows["bpb"].to_numpy(dtype=float))
    return rows[ok].reset_index(drop=True), sorted(int(p) for p in rows.loc[~ok, "prompt_id"])


# ------------------------------------------------------------------------------ statistics
def byte_weighted_bpb(nll: np.ndarray, n_bytes: np.ndarray) -> float:
    """``sum(nll) / (ln 2 * sum(n_bytes))`` (bits per byte over the pooled text).

    >>> ln2 = math.log(2)
    >>> round(byte_weighted_bpb(np.array([ln2 * 10, ln2 * 2]), np.array([4, 8])), 6)
    1.0
    """
    return float(bits_per_byte(np.sum(nll), np.sum(n_bytes)))


def _pooled_bpb(nll: np.ndarray, n_bytes: np.ndarray, axis: int = -1) -> np.ndarray:
    """:func:`byte_weighted_bpb` along ``axis`` (for every bootstrap resample at once)."""
    return bits_per_byte(np.sum(nll, axis=axis), np.sum(n_bytes, axis=axis))


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def _bootstrap_se(samples: Sequence[np.ndarray], statistic, n_boot: int, seed: int) -> float:
    """Bootstrap standard error (ddof 1) of ``statistic`` over prompts, the samples resampled
    together (paired: one resample of prompts for all); NaN for < 2 prompts.

    The resamples come from ``numpy.random.default_rng(seed)``, so they are the same for every
    statistic over the same number of prompts (:func:`scipy.stats.bootstrap` draws them as
    ``rng.integers(0, P, (n_boot, P))``).
    """
    from scipy import stats

    if len(samples[0]) < 2:
        return math.nan
    res = stats.bootstrap(
        tuple(samples),
        statistic,
        n_resamples=n_boot,
        vectorized=True,
        paired=True,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.standard_error)


def bootstrap_bpb_se(nll: np.ndarray, n_bytes: np.ndarray, n_boot: int, seed: int) -> float:
    """Bootstrap SE (ddof 1) of :func:`byte_weighted_bpb` over prompts; NaN for < 2 prompts."""
    return _bootstrap_se((nll, n_bytes), _pooled_bpb, n_boot, seed)


def bootstrap_paired_se(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> float:
    """Bootstrap SE (ddof 1) of the mean of ``a - b`` (paired per prompt); NaN for < 2."""
    return _bootstrap_se((a, b), _mean_difference, n_boot, seed)


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
    return pd.DataFrame(rows, columns=["domain", "method", "n", "bpb_mean", "bpb_se"])


def paired_difference(
    a: pd.DataFrame, b: pd.DataFrame, *, n_boot: int, seed: int
) -> dict[str, float | int]:
    """Mean over shared prompts of ``bpb_a - bpb_b``, its bootstrap SE, n and P(a better)."""
    m = a[["prompt_id", "bpb"]].merge(b[["prompt_id", "bpb"]], on="prompt_id")
    bpb_a, bpb_b = m["bpb_x"].to_numpy(dtype=float), m["bpb_y"].to_numpy(dtype=float)
    d = bpb_a - bpb_b
    if len(d) == 0:
        raise ValueError("paired difference over no shared prompts")
    return {
        "mean": float(d.mean()),
        "se": bootstrap_paired_se(bpb_a, bpb_b, n_boot, seed),
        "n": len(d),
        "frac_better": float((d < 0).mean()),
    }


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and Spearman rho of ``x`` and ``y``; NaN with fewer than 3 points."""
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    return float(stats.pearsonr(x, y)[0]), float(stats.spearmanr(x, y)[0])


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


# -------------------------------------------------------------------------------- report
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


def report_order(methods: Sequence[str], cfg: Mapping[str, Any]) -> list[Variant]:
    """The report rows (:func:`testtime.methods.report_rows`) of ``methods``, in table order:
    base, us, nn, nn_f, sift, random, λ′ sweep, adaptive rows, memory-subset variants (smallest
    memory first). A method the config does not name is a ValueError."""
    rows = {v.name: v for v in report_rows(cfg)}
    if unknown := sorted(set(methods) - set(rows)):
        raise ValueError(f"methods {unknown} are not report rows of this config")
    return [v for name, v in rows.items() if name in methods]


def _nan_to_none(x: Any) -> Any:
    """JSON-ready copy: NaN/inf floats become None, numpy scalars Python numbers."""
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _partial_record(partial: Mapping[str, Any], allowed: bool) -> dict[str, Any] | None:
    """What ``--allow-partial`` left out (None for complete results)."""
    if not (partial["missing_methods"] or partial["missing_prompts"]):
        return None
    return {
        "allowed": allowed,
        "missing_methods": list(partial["missing_methods"]),
        "missing_prompts": {m: list(p) for m, p in partial["missing_prompts"].items()},
    }


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
    from testtime.selection import adaptive_steps

    validate_per_prompt(per_prompt)
    n_boot = int(cfg["report"]["bootstrap"])
    seed = int(cfg["seed"])
    adaptive_rows = adaptive_variants(cfg)
    alphas = [v.alpha for v in adaptive_rows]
    configured = finetuned_method_names(cfg)
    partial = check_complete(per_prompt, configured, allow_partial=allow_partial)
    present = list(dict.fromkeys(per_prompt["method"]))
    common = set.intersection(
        *(set(per_prompt.loc[per_prompt["method"] == m, "prompt_id"].astype(int)) for m in present)
    )
    per_prompt = per_prompt[per_prompt["prompt_id"].isin(common)]
    results: dict[str, pd.DataFrame] = {}
    nan_prompts: dict[str, list[int]] = {}
    for method in present:
        results[method], nan_prompts[method] = split_ok(final_rows(per_prompt, method))

    sift_sel = selections.get("sift")
    stops_by_alpha: dict[float, dict[int, int]] = {}
    if alphas and "sift" in present:
        if sift_sel is None:
            raise ValueError("--selections: sift.parquet is needed for select.adaptive_alphas")
        sift_pids = set(per_prompt.loc[per_prompt["method"] == "sift", "prompt_id"])
        for pid, grp in sift_sel.sort_values(["prompt_id", "step"]).groupby("prompt_id"):
            if int(pid) not in sift_pids:
                continue
            for a, stop in adaptive_steps(grp["variance"].to_numpy(), alphas).items():
                stops_by_alpha.setdefault(a, {})[int(pid)] = stop
        for v in adaptive_rows:
            at_stop = rows_at_steps(per_prompt, "sift", stops_by_alpha[v.alpha])
            results[v.name], nan_prompts[v.name] = split_ok(at_stop)

    # one prompt set for every comparison: a NaN loss anywhere leaves the prompt out everywhere
    excluded = set().union(*nan_prompts.values())
    sift_ok = results.get("sift")
    results = {
        m: r[~r["prompt_id"].isin(excluded)].reset_index(drop=True) for m, r in results.items()
    }
    avg_steps = {m: float(r["steps"].mean()) if len(r) else math.nan for m, r in results.items()}
    rows = report_order(list(results), cfg)
    order = [v.name for v in rows]
    results = {m: results[m] for m in order}
    domains = list(dict.fromkeys(per_prompt.sort_values("prompt_id")["domain"]))
    table = bpb_table(results, n_boot=n_boot, seed=seed, domains=domains)

    # uncertainty: sigma_N(x*) of SIFT's selection vs SIFT's bpb after fine-tuning
    unc = pd.DataFrame(columns=["prompt_id", "domain", "sigma", "bpb"])
    pearson = spearman = math.nan
    if sift_sel is not None and sift_ok is not None:
        # a SIFT-only statistic: over every prompt SIFT scored (not a comparison of methods)
        last = sift_sel.sort_values("step").groupby("prompt_id").tail(1)
        sigma = last.set_index("prompt_id")["variance"].clip(lower=0).pow(0.5)
        res = sift_ok
        res = res[res["prompt_id"].isin(sigma.index)]
        unc = pd.DataFrame(
            {
                "prompt_id": res["prompt_id"].to_numpy(),
                "domain": res["domain"].to_numpy(),
                "sigma": sigma.loc[res["prompt_id"]].to_numpy(dtype=float),
                "bpb": res["bpb"].to_numpy(dtype=float),
            }
        )
        pearson, spearman = correlations(unc["sigma"].to_numpy(), unc["bpb"].to_numpy())

    curve_methods = [m for m in order if m in present and m != "base"]
    ok = (per_prompt["status"] == "ok") & np.isfinite(per_prompt["bpb"].to_numpy(dtype=float))
    curve_prompts = common - excluded - set(per_prompt.loc[~ok, "prompt_id"].astype(int))
    curve_rows = per_prompt[per_prompt["prompt_id"].isin(curve_prompts)]
    base = curve_rows[curve_rows["method"] == "base"]
    curves = [steps_curve(curve_rows, m, base) for m in curve_methods]
    steps = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame(columns=["method", "steps", "bpb_mean", "avg_steps"])
    )
    all_rows = table[table["domain"] == "all"].set_index("method")
    adaptive = pd.DataFrame(
        [
            {
                "alpha": v.alpha,
                "method": v.name,
                "avg_steps": avg_steps[v.name],
                "bpb_mean": all_rows.loc[v.name, "bpb_mean"],
                "bpb_se": all_rows.loc[v.name, "bpb_se"],
            }
            for v in adaptive_rows
            if v.name in all_rows.index
        ],
        columns=["alpha", "method", "avg_steps", "bpb_mean", "bpb_se"],
    )
    sweep = pd.DataFrame(
        [
            {
                "lam": v.lam,
                "method": v.name,
                "bpb_mean": all_rows.loc[v.name, "bpb_mean"],
                "bpb_se": all_rows.loc[v.name, "bpb_se"],
            }
            for v in selection_variants(cfg)
            if v.selector == "sift" and v.memory_fraction == 1 and v.name in all_rows.index
        ],
        columns=["lam", "method", "bpb_mean", "bpb_se"],
    ).sort_values("lam")
    memory_curve = memory_size_curve(cfg, results, n_boot=n_boot, seed=seed)

    paired: dict[str, Any] = {}
    if "base" in results:
        for m in order:
            if m != "base":
                paired[f"{m}-base"] = paired_difference(
                    results[m], results["base"], n_boot=n_boot, seed=seed
                )
    if "sift" in results and "nn" in results:
        paired["sift-nn"] = paired_difference(
            results["sift"], results["nn"], n_boot=n_boot, seed=seed
        )
    metrics = {
        "bpb": {m: float(all_rows.loc[m, "bpb_mean"]) for m in order if m in all_rows.index},
        "bpb_se": {m: float(all_rows.loc[m, "bpb_se"]) for m in order if m in all_rows.index},
        "sigma_bpb_pearson": pearson,
        "sigma_bpb_spearman": spearman,
        "avg_steps": {m: avg_steps[m] for m in order},
        "paired": paired,
        "memory_curve": memory_curve.to_dict("records"),
        "n_prompts": {m: len(results[m]) for m in order},
        "nan_loss_prompts": {m: v for m, v in nan_prompts.items() if v},
        "partial": _partial_record(partial, allow_partial),
    }
    paper = paper_statistics(results, unc, domains, n_boot=n_boot, seed=seed)
    metrics |= paper.metrics
    return Report(
        table,
        unc,
        steps,
        adaptive,
        sweep,
        memory_curve,
        _nan_to_none(metrics),
        nan_prompts,
        rows,
        paper.relative,
        paper.gain,
    )


MEMORY_CURVE_COLUMNS = ["fraction", "sift", "nn", "n", "sift_bpb", "nn_bpb", "diff", "diff_se"]


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
                "sift_bpb": byte_weighted_bpb(
                    results[sift]["nll"].to_numpy(float), results[sift]["n_bytes"].to_numpy(float)
                ),
                "nn_bpb": byte_weighted_bpb(
                    results[nn]["nll"].to_numpy(float), results[nn]["n_bytes"].to_numpy(float)
                ),
                "diff": d["mean"],
                "diff_se": d["se"],
            }
        )
    return pd.DataFrame(rows, columns=MEMORY_CURVE_COLUMNS)
