"""SIFT: greedy selection that minimises the posterior variance of the query; adaptive SIFT's
stop, computed from the variance trace.

Objective (Hübotter et al. 2024, arXiv 2410.08020, the SIFT rule; linear kernel
k(a, b) = <a, b>, noise lam = λ′):

    x_{n+1} = argmin_{x in candidates} σ²(x* | X_n ∪ {x}),
    σ²(x* | X) = k(x*, x*) − k_X(x*)ᵀ (K_XX + λ′ I)⁻¹ k_X(x*).

The argmin runs over all K candidates, already selected ones included: a repeat is one more
observation with noise λ′, so SIFT repeats an informative point only while that beats every
other point, and stops taking information duplicates once diverse points reduce σ² more.
λ′ sets that trade-off: observing x lowers σ_n²(x*) by k_n(x*, x)² / (k_n(x, x) + λ′), with k_n
the posterior kernel after the n points so far. A small λ′ makes a point (or its duplicate)
nearly useless once observed, so SIFT moves on to diverse points; as λ′ → ∞ an observation
barely changes k_n and SIFT re-selects the point most similar to x* again and again, like NN-F.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from testtime.selection._inputs import check_inputs, compute_dtype
from testtime.selection.posterior import (
    IncrementalPosterior,
    Selection,
    lowest_index_argmin,
    run_chunked,
)


def adaptive_stop_steps(variances: torch.Tensor, alpha: float) -> torch.Tensor:
    """Steps adaptive SIFT takes, ``(B,)`` long, from a full SIFT variance trace ``(B, n+1)``.

    Rule (activeft, ``activeft/sift.py`` ``Retriever.batch_search`` at commit 908e363 "Adaptive
    SIFT"): the n-th point (n = 1, 2, ...) is not taken when

        σ_n > 1 / (α · n),

    where σ_n is the standard deviation (not the variance) of the query after the first n
    selected points: activeft computes ``uncertainty = sqrt(-values)`` from VTL's acquisition
    values ``values[n-1] = −σ²(x* | x_1..x_n)`` and ``iteration = n``. Reasoning (paper,
    adaptive SIFT): σ_n(x*) measures what the model can still learn about the prompt and
    shrinks as steps are added; while it falls at least as fast as 1/(α n) each step still pays
    for its compute, and once α·n·σ_n > 1 further steps buy too little, so fine-tuning stops.
    Compute per prompt thus follows how much the model can still learn about it; a larger α
    stops earlier. activeft drops every flagged point; here the first flagged point ends the
    selection (fine-tuning order stays a prefix). The two agree whenever n·σ_n is
    non-decreasing, the usual case since σ_n decays slower than 1/n.

    Args:
        variances: ``(B, n+1)``, column i = σ²(x* | first i points) (column 0 is unused).
        alpha: α > 0.

    >>> v = torch.tensor([[1.0, 0.16, 0.09, 0.0625]])  # σ_n = 0.4, 0.3, 0.25
    >>> adaptive_stop_steps(v, 1.0), adaptive_stop_steps(v, 2.0), adaptive_stop_steps(v, 3.0)
    (tensor([3]), tensor([1]), tensor([0]))
    """
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if variances.dim() != 2 or variances.shape[1] < 1:
        raise ValueError(f"variances must have shape (B, n+1), got {tuple(variances.shape)}")
    n = variances.shape[1] - 1
    steps = torch.arange(1, n + 1, device=variances.device, dtype=torch.float64)
    sigma = variances[:, 1:].double().clamp_min(0).sqrt()
    flagged = sigma > 1.0 / (alpha * steps)  # (B, n)
    first = flagged.to(torch.uint8).argmax(dim=-1)
    return torch.where(flagged.any(dim=-1), first, n)


def adaptive_steps(variances: np.ndarray, alphas: Sequence[float]) -> dict[float, int]:
    """Adaptive-SIFT stop step per alpha for one prompt's variance trace ``(n + 1,)``
    (:func:`adaptive_stop_steps` of each alpha, in 0..n).

    >>> adaptive_steps(np.array([1.0, 0.16, 0.09, 0.0625]), [1.0, 2.0, 3.0])
    {1.0: 3, 2.0: 1, 3.0: 0}
    """
    if not alphas:
        return {}
    trace = torch.tensor(np.asarray(variances, dtype=np.float64))[None]
    n = trace.shape[1] - 1
    return {
        float(a): int(min(max(int(adaptive_stop_steps(trace, float(a))[0]), 0), n)) for a in alphas
    }


def _sift_choose(state: IncrementalPosterior, step: int) -> torch.Tensor:
    return lowest_index_argmin(state.scores(), state.rounding(state.query_var))


def sift(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float = 0.1,
    *,
    dtype: torch.dtype | None = None,
    gram: bool | None = None,
    chunk_size: int | None = None,
) -> Selection:
    """SIFT (exact, greedy, batched). Adaptive SIFT takes a prefix of this selection, of
    :func:`adaptive_stop_steps` (on the returned variance trace) points.

    Args:
        queries: ``(B, d)`` floating (fp16/bf16/fp32/fp64), on the device to compute on.
        candidates: ``(B, K, d)``; row b holds the candidates of query b.
        n: points to select per query (may exceed K: points repeat).
        lam: noise variance λ′ > 0. Small λ′ favours diversity (a point once observed
            explains little more); as λ′ → ∞ every observation is weak and SIFT keeps
            re-selecting the most similar point, like NN-F.
        dtype: compute dtype, float32 (default; float64 for float64 inputs) or float64.
        gram: force (True) or forbid (False) precomputing the ``(B, K, K)`` kernel matrix.
        chunk_size: queries per chunk (default: bounded memory).

    Returns:
        :class:`Selection`; ties within float rounding go to the lowest index.

    >>> c = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    >>> sel = sift(torch.tensor([[0.8, 0.6]]), c, n=2, lam=0.1)
    >>> sel.indices.tolist(), [round(v, 4) for v in sel.variances[0].tolist()]
    ([[0, 2]], [1.0, 0.4182, 0.0909])
    """
    check_inputs(queries, candidates, n, lam)
    return run_chunked(
        queries,
        candidates,
        n,
        lam,
        lambda rows: _sift_choose,
        dtype=compute_dtype(queries, dtype),
        gram=gram,
        chunk_size=chunk_size,
    )
