"""Statistics in the paper's terms: bpb relative to the base model, byte-weighted paired
differences, and correlations of SIFT's uncertainty with the error and the gain, with CIs.

Conventions (those of :mod:`testtime.report`, docs/pipeline.md section 6; the report assembles
these into its tables and metrics.json in :mod:`testtime.report.tables` and
:mod:`testtime.report.metrics`):

* bits per byte (bpb) of a set of prompts is byte-weighted: ``sum(nll) / (ln 2 * sum(n_bytes))``
  (nll in nats);
* the bootstrap resamples prompts: ``numpy.random.default_rng(seed).integers(0, P, (n_boot, P))``,
  the draws :func:`scipy.stats.bootstrap` makes, so a statistic over the same P prompts sees the
  same resamples as the table's SEs; paired statistics resample the prompts of both methods
  together; an SE is the standard deviation (ddof 1) over resamples, a CI the 2.5 and 97.5
  percentiles (resamples where the statistic is undefined, e.g. a constant σ, are left out).

The paper's Table 1 reports bpb relative to the base model in %: tttlm prints ``100 * after /
before`` and its GPT-2 DM Mathematics NN result, 1.076 / 1.547 = 69.6 %, is the paper's DM Math
NN cell. :data:`PAPER_ALL_ROW_PCT` is the paper's All row in that unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.bpb import bits_per_byte

PAPER_ALL_ROW_PCT: dict[str, float] = {"us": 80.2, "nn": 78.3, "nn_f": 133.3, "sift": 73.5}
"""The paper's All row (Hübotter et al. 2024, Table 1, GPT-2): bpb in % of the base model."""

CI_LEVEL = 0.95


class Estimate(NamedTuple):
    """A statistic over prompts with its bootstrap SE and percentile CI (NaN when undefined)."""

    value: float
    se: float
    low: float
    high: float
    n: int


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` prompt indices drawn with replacement, as :func:`scipy.stats.bootstrap`
    draws them (so the resamples match the table's SEs over the same prompts)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def bootstrap(
    statistic: Callable[..., np.ndarray],
    samples: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
) -> Estimate:
    """``statistic(*samples)`` and its paired bootstrap SE and 95 % percentile CI.

    ``statistic`` reduces along the last axis (it is called once on the ``(n_boot, P)``
    resamples); every sample has one entry per prompt and all are resampled together.
    With fewer than 2 prompts the SE and CI are NaN.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    n = len(arrays[0])
    value = float(statistic(*arrays)) if n else math.nan
    if n < 2:
        return Estimate(value, math.nan, math.nan, math.nan, n)
    idx = resample_indices(n, n_boot, seed)
    dist = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=float)
    dist = dist[np.isfinite(dist)]
    if len(dist) < 2:
        return Estimate(value, math.nan, math.nan, math.nan, n)
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(dist, [tail, 100 - tail])
    return Estimate(value, float(np.std(dist, ddof=1)), float(low), float(high), n)


# ------------------------------------------------------------------- bpb relative to base
def relative_bpb_pct(
    nll: np.ndarray, n_bytes: np.ndarray, base_nll: np.ndarray, base_bytes: np.ndarray
) -> np.ndarray:
    """Byte-weighted bpb of a method in % of the base model's over the same prompts (last axis).

    >>> ln2 = math.log(2)
    >>> float(relative_bpb_pct(np.array([ln2 * 3]), np.array([4]), np.array([ln2 * 4]),
    ...                        np.array([4])))
    75.0
    """
    bpb = bits_per_byte(np.sum(nll, axis=-1), np.sum(n_bytes, axis=-1))
    base = bits_per_byte(np.sum(base_nll, axis=-1), np.sum(base_bytes, axis=-1))
    return 100.0 * bpb / base


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``a`` and ``b`` for their shared prompts (suffixes ``_a``, ``_b``), by prompt id."""
    cols = ["prompt_id", "nll", "n_bytes"]
    m = a[cols].merge(b[cols], on="prompt_id", suffixes=("_a", "_b"))
    return m.sort_values("prompt_id").reset_index(drop=True)


def relative_to_base(a: pd.DataFrame, base: pd.DataFrame, *, n_boot: int, seed: int) -> Estimate:
    """bpb of ``a`` in % of ``base`` over their shared prompts, with the bootstrap of the ratio
    (paired: each resample of prompts recomputes both byte-weighted bpbs)."""
    m = _paired(a, base)
    cols = (m["nll_a"], m["n_bytes_a"], m["nll_b"], m["n_bytes_b"])
    return bootstrap(relative_bpb_pct, [c.to_numpy(float) for c in cols], n_boot, seed)


RELATIVE_COLUMNS = ["domain", "method", "n", "rel_pct", "rel_se_pct"]


def relative_bpb_table(
    results: Mapping[str, pd.DataFrame],
    *,
    n_boot: int,
    seed: int,
    domains: Sequence[str],
    base: str = "base",
) -> pd.DataFrame:
    """:data:`RELATIVE_COLUMNS`: bpb in % of ``base`` per (domain, method) plus ``all``, with
    the paired bootstrap SE (percentage points); ``base`` itself is 100 with SE 0.

    ``results`` maps a method to one ok row per prompt (columns prompt_id, domain, nll,
    n_bytes), as for :func:`testtime.report.tables.bpb_table`.
    """
    rows = []
    ref = results[base]
    for domain in [*domains, "all"]:
        ref_d = ref if domain == "all" else ref[ref["domain"] == domain]
        for method, res in results.items():
            sub = res if domain == "all" else res[res["domain"] == domain]
            if sub.empty or ref_d.empty:
                continue
            est = relative_to_base(sub, ref_d, n_boot=n_boot, seed=seed)
            se = 0.0 if method == base else est.se
            rows.append(
                {
                    "domain": domain,
                    "method": method,
                    "n": est.n,
                    "rel_pct": est.value,
                    "rel_se_pct": se,
                }
            )
    return pd.DataFrame(rows, columns=RELATIVE_COLUMNS)


# ------------------------------------------------------------------- paired differences
def _pooled_difference(
    nll_a: np.ndarray, bytes_a: np.ndarray, nll_b: np.ndarray, bytes_b: np.ndarray
) -> np.ndarray:
    return bits_per_byte(np.sum(nll_a, axis=-1), np.sum(bytes_a, axis=-1)) - bits_per_byte(
        np.sum(nll_b, axis=-1), np.sum(bytes_b, axis=-1)
    )


def byte_weighted_difference(
    a: pd.DataFrame, b: pd.DataFrame, *, n_boot: int, seed: int
) -> dict[str, float | int]:
    """The table's statistic as a paired difference: byte-weighted bpb of ``a`` minus that of
    ``b`` over their shared prompts (bits per byte), its paired bootstrap SE and 95 % CI, n.

    Equal to the difference of the two methods' entries in the bpb table's row over the same
    prompts; unlike the mean of per-prompt differences it weights each prompt by its bytes.
    """
    m = _paired(a, b)
    if m.empty:
        raise ValueError("paired difference over no shared prompts")
    cols = (m["nll_a"], m["n_bytes_a"], m["nll_b"], m["n_bytes_b"])
    est = bootstrap(_pooled_difference, [c.to_numpy(float) for c in cols], n_boot, seed)
    return {"mean": est.value, "se": est.se, "ci": [est.low, est.high], "n": est.n}


# --------------------------------------------------------------------------- correlations
def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (NaN where x or y is constant)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis: Pearson r of the ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


def correlation(x: np.ndarray, y: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Pearson r and Spearman ρ of ``x`` and ``y`` (paired per prompt) with bootstrap 95 % CIs;
    NaN with fewer than 3 prompts or a constant variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out: dict[str, Any] = {"n": len(x)}
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        if len(x) < 3:
            est = Estimate(math.nan, math.nan, math.nan, math.nan, len(x))
        else:
            est = bootstrap(fn, [x, y], n_boot, seed)
        out[name] = est.value
        out[f"{name}_ci"] = [est.low, est.high]
    return out


GAIN_TARGETS = {
    "bpb": "bpb after N steps",
    "gain": "gain bpb_0 - bpb_N",
    "relative_gain": "relative gain (bpb_0 - bpb_N) / bpb_0",
}
"""What σ_N is correlated with (metrics.json ``uncertainty`` keys -> description)."""


def uncertainty_gain_frame(unc: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: ``prompt_id, domain, sigma, bpb, base_bpb, gain, relative_gain``.

    ``unc`` holds SIFT's σ_N(x*) and bpb after N steps per prompt (the report's uncertainty
    table), ``base`` the base model's rows; gain = base bpb − bpb (bits per byte), relative gain
    = gain / base bpb (a fraction).
    """
    m = unc.merge(base[["prompt_id", "bpb"]].rename(columns={"bpb": "base_bpb"}), on="prompt_id")
    m["gain"] = m["base_bpb"] - m["bpb"]
    m["relative_gain"] = m["gain"] / m["base_bpb"]
    return m.sort_values("prompt_id").reset_index(drop=True)


def uncertainty_gain(
    frame: pd.DataFrame, domains: Sequence[str], *, n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Correlations of σ_N with each of :data:`GAIN_TARGETS`, over all prompts (``all``) and
    within each domain (a domain mix alone can correlate pooled quantities)."""
    out = {}
    for domain in ["all", *domains]:
        sub = frame if domain == "all" else frame[frame["domain"] == domain]
        sigma = sub["sigma"].to_numpy(float)
        out[domain] = {
            target: correlation(sigma, sub[target].to_numpy(float), n_boot=n_boot, seed=seed)
            for target in GAIN_TARGETS
        }
    return out
