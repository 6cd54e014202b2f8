"""The Gaussian-process posterior of a query under greedy, noisy observations of candidates.

One routine serves every selector: each row b of a batch holds a query x* ``(d,)`` and its K
candidates ``(K, d)``; the kernel is the inner product, observations carry noise variance lam.
After observing x_1..x_j (repeats allowed: one more noisy observation each) the state holds,
for every candidate x,

* ``cov[b, x]`` = k_j(x*, x), the posterior covariance of the query with x,
* ``var[b, x]`` = k_j(x, x), the posterior variance of x,
* ``query_var[b]`` = k_j(x*, x*) = σ_j²(x*),

and observing x_{j+1} is the rank-one update (a step of pivoted Cholesky, no inverses)

    u(x) = k_j(x, x_{j+1}) / sqrt(k_j(x_{j+1}, x_{j+1}) + lam),
    w    = k_j(x*, x_{j+1}) / sqrt(k_j(x_{j+1}, x_{j+1}) + lam),
    k_{j+1}(x, x*) = k_j(x, x*) - u(x) w,   k_{j+1}(x, x) = k_j(x, x) - u(x)²,
    σ_{j+1}²(x*) = σ_j²(x*) - w²,

where k_j(x, x_{j+1}) = k(x, x_{j+1}) - Σ_{i<=j} u_i(x) u_i(x_{j+1}) uses the stored factors
``(B, n, K)``: O(B·K·n) per step after the kernel column. Variances are clamped at 0, and lam > 0
keeps every denominator positive, so duplicated or zero vectors give no NaN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

GRAM_MAX_RATIO = 32
"""Precompute the (B, K, K) kernel matrix when K <= this · n. The GEMM costs K/n times the
flops of n per-step kernel columns, but a column is a memory-bound matrix-vector product:
measured on a 2-core EPYC (1 thread) the GEMM won at K/n = 10 (B=512, K=200, d=384, n=20:
0.25 s vs 0.68 s) and at K/n = 20 (B=32, K=1000, d=768, n=50: 0.55 s vs 1.03 s), so the
break-even is near K/n = 35. On an H200 at B=10,000, K=1,000, d=1,024, n=50 (K/n = 20) the
plain fp32 GEMM and per-step columns tied (563 vs 576 ms) and the GEMM through TF32 for fp16
inputs (:data:`HALF_INPUTS_TF32`) won, 212 ms."""


HALF_INPUTS_TF32 = True
"""On CUDA, form the products of half-precision inputs (kernel matrix, query covariances,
kernel columns) with TF32 tensor cores. Exact, not an approximation: an fp16 or bf16 value has
at most 11 significant bits, which TF32's 10 stored + 1 implicit mantissa bits hold exactly, so
every product is exact and only the float32 accumulation rounds, as in the float32 GEMM. The
posterior updates (products of computed float32 factors) stay in full float32. About 8x the
float32 GEMM rate on Hopper. Set False to measure without."""


@contextlib.contextmanager
def _tf32_matmul(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class Selection(NamedTuple):
    """Result of a selector for a batch of B queries: all n points of every query.

    Attributes:
        indices: LongTensor ``(B, n)``: indices into each query's K candidates, in selection
            order.
        variances: float32 ``(B, n+1)``: σ²(x* | first i selected points); column 0 is
            k(x*, x*). Adaptive SIFT's stop is a function of this trace
            (:func:`testtime.selection.sift.adaptive_stop_steps`).
    """

    indices: torch.Tensor
    variances: torch.Tensor


class IncrementalPosterior:
    """Posterior state for B queries and their K candidates (see the module docstring).

    Args:
        queries: ``(B, d)`` in the compute dtype.
        candidates: ``(B, K, d)`` in the compute dtype, same device.
        lam: observation noise variance (> 0).
        max_steps: observations this state will take (size of the factor store).
        gram: precompute the ``(B, K, K)`` kernel matrix (one GEMM, compute-bound) instead of
            one kernel column ``(B, K)`` per step (a memory-bound matrix-vector product).
        exact_tf32: the inputs were fp16/bf16 before the cast to float32, so on CUDA their
            products may use TF32 (see :data:`HALF_INPUTS_TF32`).
    """

    def __init__(
        self,
        queries: torch.Tensor,
        candidates: torch.Tensor,
        lam: float,
        max_steps: int,
        *,
        gram: bool,
        exact_tf32: bool = False,
    ) -> None:
        b, k, _ = candidates.shape
        self.candidates = candidates
        self.lam = lam
        self.rows = torch.arange(b, device=candidates.device)
        self._tf32 = exact_tf32 and candidates.is_cuda and candidates.dtype == torch.float32
        with _tf32_matmul(self._tf32):
            self.cov = torch.bmm(candidates, queries.unsqueeze(-1)).squeeze(-1)  # (B, K)
            self.gram = torch.bmm(candidates, candidates.transpose(1, 2)) if gram else None
        if self.gram is not None:
            self.var = self.gram.diagonal(dim1=1, dim2=2).clone()  # (B, K)
        else:
            self.var = torch.einsum("bkd,bkd->bk", candidates, candidates)
        self.query_var = queries.square().sum(-1)  # (B,)
        # Squared norms are NaN/inf iff an input entry is (or is too large to square): checking
        # them here costs O(B·K) instead of another pass over (B, K, d).
        for name, t in (("queries", self.query_var), ("candidates", self.var)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf (or values too large to square)")
        self.factors = candidates.new_zeros(b, max_steps, k)  # u_1..u_n, (B, n, K)
        self.steps = 0

    def scores(self) -> torch.Tensor:
        """σ²(x* | X ∪ {x}) for every candidate x, ``(B, K)``: the SIFT objective."""
        reduction = self.cov.square() / (self.var + self.lam)
        return (self.query_var.unsqueeze(-1) - reduction).clamp_min(0)

    def rounding(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Two units in the last place of ``magnitude`` ``(B,)``: differences this small between
        scores of that size are rounding, so they count as ties."""
        return 2 * torch.finfo(self.cov.dtype).eps * magnitude

    def _kernel_column(self, idx: torch.Tensor) -> torch.Tensor:
        """k(x, x_idx) for all candidates x, ``(B, K)``."""
        if self.gram is not None:
            return self.gram[self.rows, :, idx]
        chosen = self.candidates[self.rows, idx]  # (B, d)
        with _tf32_matmul(self._tf32):
            return torch.bmm(self.candidates, chosen.unsqueeze(-1)).squeeze(-1)

    def observe(self, idx: torch.Tensor) -> None:
        """Condition every row b on one more noisy observation of candidate ``idx[b]``."""
        j = self.steps
        column = self._kernel_column(idx)
        if j:
            past = self.factors[:, :j]  # (B, j, K)
            at_idx = past[self.rows, :, idx].unsqueeze(1)  # (B, 1, j)
            column = column - torch.bmm(at_idx, past).squeeze(1)
        scale = (self.var[self.rows, idx] + self.lam).rsqrt()  # (B,)
        u = column * scale.unsqueeze(-1)
        w = self.cov[self.rows, idx] * scale
        self.factors[:, j] = u
        self.var = (self.var - u.square()).clamp_min(0)
        self.cov = self.cov - u * w.unsqueeze(-1)
        self.query_var = (self.query_var - w.square()).clamp_min(0)
        self.steps = j + 1


Chooser = Callable[[IncrementalPosterior, int], torch.Tensor]
"""Picks the next index per row, ``(B,)`` long, given the state and the step number (0-based)."""


def lowest_index_argmin(values: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """Row-wise argmin of ``(B, K)`` values, counting values within ``tol`` ``(B,)`` of the
    minimum as ties and breaking them by the lowest index (so exact duplicates, whose scores may
    differ in the last bit, resolve the same way on CPU and GPU).

    >>> lowest_index_argmin(torch.tensor([[3.0, 1.0, 1.0 + 1e-9, 0.5 + 1e-9, 0.5]]),
    ...                     torch.tensor([1e-6]))
    tensor([3])
    """
    best = values.min(dim=-1, keepdim=True).values
    near = values <= best + tol.unsqueeze(-1)
    return near.to(torch.uint8).argmax(dim=-1)  # first True


def greedy(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float,
    choose: Chooser,
    *,
    gram: bool | None = None,
    exact_tf32: bool = False,
) -> Selection:
    """Run ``n`` steps of ``choose`` on one chunk and record the query's variance trace.

    ``gram=None`` precomputes the kernel matrix when K <= ``GRAM_MAX_RATIO`` · n.
    """
    b, k, _ = candidates.shape
    use_gram = k <= GRAM_MAX_RATIO * n if gram is None else gram
    state = IncrementalPosterior(queries, candidates, lam, n, gram=use_gram, exact_tf32=exact_tf32)
    indices = torch.empty((b, n), dtype=torch.long, device=candidates.device)
    variances = candidates.new_empty(b, n + 1)
    variances[:, 0] = state.query_var
    for step in range(n):
        idx = choose(state, step)
        state.observe(idx)
        indices[:, step] = idx
        variances[:, step + 1] = state.query_var
    return Selection(indices, variances.float())


def _chunk_budget(device: torch.device) -> int:
    """Bytes one chunk may use: 512 MiB on CPU (cache-friendly, little gain beyond); on a GPU a
    quarter of the free memory (at most 16 GiB), so a few large chunks keep kernel launches
    per step few."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(free // 4, 16 << 30)
    return 512 << 20


def run_chunked(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float,
    chooser_for: Callable[[slice], Chooser],
    *,
    dtype: torch.dtype,
    gram: bool | None = None,
    chunk_size: int | None = None,
) -> Selection:
    """:func:`greedy` over row chunks of the batch, so memory stays bounded for large B.

    Each chunk is cast to ``dtype`` on its own (fp16 inputs are never up-cast whole).
    ``chooser_for(rows)`` builds the chooser of the rows ``rows`` of the batch. The default
    ``chunk_size`` bounds one chunk's working set (cast candidates, factors, kernel matrix), see
    :func:`_chunk_budget`.
    """
    b, k, d = candidates.shape
    if chunk_size is None:
        use_gram = k <= GRAM_MAX_RATIO * n if gram is None else gram
        per_row = torch.finfo(dtype).bits // 8 * k * (d + n + (k if use_gram else 0))
        chunk_size = max(1, _chunk_budget(candidates.device) // per_row)
    half = (torch.float16, torch.bfloat16)
    exact_tf32 = (
        HALF_INPUTS_TF32
        and dtype == torch.float32
        and queries.dtype in half
        and candidates.dtype in half
    )
    parts = []
    for start in range(0, b, chunk_size):
        rows = slice(start, min(start + chunk_size, b))
        parts.append(
            greedy(
                queries[rows].to(dtype),
                candidates[rows].to(dtype),
                n,
                lam,
                chooser_for(rows),
                gram=gram,
                exact_tf32=exact_tf32,
            )
        )
    if len(parts) == 1:
        return parts[0]
    return Selection(*(torch.cat(field) for field in zip(*parts, strict=True)))
