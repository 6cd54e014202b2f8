"""Validation of selector inputs and the choice of compute dtype."""

from __future__ import annotations

import math

import torch


def compute_dtype(queries: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """float64 when requested or when the queries already are, else float32 (fp16/bf16 inputs
    are up-cast: the posterior update subtracts nearly equal numbers)."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float64 if queries.dtype == torch.float64 else torch.float32


def check_inputs(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    lam: float,
    *,
    distinct: bool = False,
) -> None:
    """Raise ValueError naming the argument when the selector inputs are unusable.

    ``queries`` must be ``(B, d)``, ``candidates`` ``(B, K, d)`` with K >= 1, both floating
    (finiteness is checked on the squared norms, see ``IncrementalPosterior``); ``n >= 1``
    (and ``n <= K`` when ``distinct``); ``lam > 0`` and finite.
    """
    for name, t, ndim in (("queries", queries, 2), ("candidates", candidates, 3)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() != ndim:
            shape = "(B, d)" if ndim == 2 else "(B, K, d)"
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if candidates.shape[0] != queries.shape[0]:
        raise ValueError(
            f"candidates batch size {candidates.shape[0]} != queries batch size {queries.shape[0]}"
        )
    if queries.shape[0] == 0:
        raise ValueError("queries is an empty batch (B = 0)")
    if candidates.shape[1] == 0:
        raise ValueError("candidates has no candidates (K = 0)")
    if candidates.shape[2] != queries.shape[1]:
        raise ValueError(
            f"candidates dimension d={candidates.shape[2]} != "
            f"queries dimension d={queries.shape[1]}"
        )
    if queries.device != candidates.device:
        raise ValueError(f"queries on {queries.device} but candidates on {candidates.device}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if distinct and n > candidates.shape[1]:
        raise ValueError(
            f"n={n} exceeds the K={candidates.shape[1]} candidates; this method selects "
            "distinct points"
        )
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
