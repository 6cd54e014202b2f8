"""Baseline selectors of the paper: NN, NN-F, uncertainty sampling, random.

Each returns a :class:`~testtime.selection.posterior.Selection` whose variance trace is the
query's posterior σ² after that method's points (same kernel, same noise lam, repeats counted
as observations), so its uncertainty can be compared with SIFT's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from testtime.selection._inputs import check_inputs, compute_dtype
from testtime.selection.posterior import (
    Chooser,
    IncrementalPosterior,
    Selection,
    lowest_index_argmin,
    run_chunked,
)


def _fixed_order(order: torch.Tensor) -> Callable[[slice], Chooser]:
    """Chooser factory replaying precomputed indices ``(B, n)``."""

    def chooser_for(rows: slice) -> Chooser:
        part = order[rows]
        return lambda state, step: part[:, step].to(state.candidates.device)

    return chooser_for


def _by_relevance(
    queries: torch.Tensor, candidates: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Candidate indices ``(B, K)`` by descending inner product k(x, x*) in the compute dtype
    (ties: lowest index first; cast 256 rows at a time)."""
    scores = torch.cat(
        [
            torch.bmm(c.to(dtype), q.to(dtype).unsqueeze(-1)).squeeze(-1)
            for c, q in zip(candidates.split(256), queries.split(256), strict=True)
        ]
    )
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def _nearest(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float,
    dtype: torch.dtype | None,
    *,
    repeat: bool,
) -> Selection:
    """The top-n candidates by inner product (``repeat``: the top-1 n times)."""
    check_inputs(queries, candidates, n, lam, distinct=not repeat)
    dt = compute_dtype(queries, dtype)
    ranked = _by_relevance(queries, candidates, dt)
    order = ranked[:, :1].expand(-1, n) if repeat else ranked[:, :n]
    return run_chunked(queries, candidates, n, lam, _fixed_order(order), dtype=dt)


def nearest_neighbors(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float = 0.1,
    *,
    dtype: torch.dtype | None = None,
) -> Selection:
    """NN: the n distinct candidates with the largest inner product, descending (ties: lowest
    index). Requires n <= K. Shapes as in :func:`testtime.selection.sift`.

    >>> c = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    >>> nearest_neighbors(torch.tensor([[1.0, 0.0]]), c, n=2).indices.tolist()
    [[1, 2]]
    """
    return _nearest(queries, candidates, n, lam, dtype, repeat=False)


def nearest_neighbors_fixed(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float = 0.1,
    *,
    dtype: torch.dtype | None = None,
) -> Selection:
    """NN-F: nearest-neighbour retrieval allowed to repeat, i.e. the single nearest candidate
    (largest inner product, ties: lowest index) n times; shows what information duplication
    does. n may exceed K.

    >>> c = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> nearest_neighbors_fixed(torch.tensor([[1.0, 0.0]]), c, n=3).indices.tolist()
    [[1, 1, 1]]
    """
    return _nearest(queries, candidates, n, lam, dtype, repeat=True)


def _us_choose(state: IncrementalPosterior, step: int) -> torch.Tensor:
    return lowest_index_argmin(-state.var, state.rounding(state.var.amax(dim=-1)))


def uncertainty_sampling(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float = 0.1,
    *,
    dtype: torch.dtype | None = None,
) -> Selection:
    """US: each step takes the candidate with the largest own posterior variance σ²(x | X)
    given the points so far (ignores the query; repeats allowed, ties: lowest index).

    >>> c = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    >>> uncertainty_sampling(torch.tensor([[1.0, 0.0]]), c, n=2, lam=1.0).indices.tolist()
    [[0, 1]]
    """
    check_inputs(queries, candidates, n, lam)
    return run_chunked(
        queries, candidates, n, lam, lambda rows: _us_choose, dtype=compute_dtype(queries, dtype)
    )


def random_selection(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float = 0.1,
    *,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    dtype: torch.dtype | None = None,
) -> Selection:
    """Random: uniform over the K candidates, without replacement while n <= K (a random
    permutation's prefix); beyond K a fresh permutation follows, so every candidate is used
    equally often.

    ``generator`` is one CPU torch.Generator per query (a sequence of length B; the pipeline
    seeds each with ``derive_seed(seed, prompt_id, method)``), or one shared by the batch, or
    None for torch's global RNG. Draws happen on the CPU, so results do not depend on device.
    """
    check_inputs(queries, candidates, n, lam)
    b, k, _ = candidates.shape
    if isinstance(generator, Sequence):
        if len(generator) != b:
            raise ValueError(f"generator has {len(generator)} entries for a batch of {b} queries")
        gens = list(generator)
    else:
        gens = [generator] * b
    reps = -(-n // k)
    order = torch.stack(
        [torch.cat([torch.randperm(k, generator=g) for _ in range(reps)])[:n] for g in gens]
    )
    order = order.to(candidates.device)
    return run_chunked(
        queries, candidates, n, lam, _fixed_order(order), dtype=compute_dtype(queries, dtype)
    )
