"""Estimates over prompts with bootstrap standard errors: pooled bpb, paired mean differences,
correlations.

An SE is :func:`scipy.stats.bootstrap`'s ``standard_error`` (the standard deviation, ddof 1,
over ``n_boot`` resamples of prompts drawn from ``numpy.random.default_rng(seed)``), so every
statistic over the same prompts sees the same resamples (the draws of
:func:`testtime.statistics.resample_indices`); the byte-weighted paired differences, the % of
base and CIs are :mod:`testtime.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from testtime.bpb import bits_per_byte


def byte_weighted_bpb(nll: np.ndarray, n_bytes: np.ndarray) -> float:
    """``sum(nll) / (ln 2 * sum(n_bytes))`` (bits per byte over the pooled text; nll in nats).

    >>> ln2 = math.log(2)
    >>> round(byte_weighted_bpb(np.array([ln2 * 10, ln2 * 2]), np.array([4, 8])), 6)
    1.0
    """
    return float(bits_per_byte(np.sum(nll), np.sum(n_bytes)))


def rows_bpb(rows: pd.DataFrame) -> float:
    """:func:`byte_weighted_bpb` of a table's ``nll`` and ``n_bytes`` columns."""
    return byte_weighted_bpb(rows["nll"].to_numpy(float), rows["n_bytes"].to_numpy(float))


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
