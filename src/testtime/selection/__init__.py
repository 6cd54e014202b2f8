"""Data selection for test-time fine-tuning: SIFT and the paper's baselines.

For each test prompt x* (a query embedding) and its K pre-selected candidates (the Faiss
neighbours of that prompt), a selector picks n candidates in order. SIFT (Hübotter, Bongni,
Hakimi, Krause, "Efficiently Learning at Test-Time: Active Fine-Tuning of LLMs",
arXiv 2410.08020) treats the model's behaviour as a Gaussian process with the linear kernel
k(a, b) = <a, b> of the embeddings and noise λ′ = ``lam``, and greedily minimises the
posterior variance of the prompt

    x_{n+1} = argmin_x σ²(x* | X_n ∪ {x}),
    σ²(x* | X) = k(x*, x*) − k_X(x*)ᵀ (K_XX + λ′ I)⁻¹ k_X(x*),

over all K candidates (repeats allowed), which trades relevance against redundancy. All
selectors are exact, batched over B prompts (``queries (B, d)``, ``candidates (B, K, d)``),
run on the device of their inputs, and share one incremental posterior
(:mod:`testtime.selection.posterior`) that also gives every method's variance trace.

| name     | function                  | relevance | diversity | repeats |
|----------|---------------------------|-----------|-----------|---------|
| sift     | :func:`sift`              | yes       | yes       | when informative |
| nn       | :func:`nearest_neighbors` | yes       | no        | no (n <= K) |
| nn_f     | :func:`nearest_neighbors_fixed` | yes | no        | the top-1, n times |
| us       | :func:`uncertainty_sampling` | no     | yes       | allowed |
| random   | :func:`random_selection`  | no        | by chance | only when n > K |

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> q = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
>>> c = torch.nn.functional.normalize(torch.randn(4, 30, 8, generator=g), dim=-1)
>>> sel = SELECTORS["sift"](q, c, 5, lam=0.1)
>>> sel.indices.shape, sel.variances.shape
(torch.Size([4, 5]), torch.Size([4, 6]))
>>> nn = SELECTORS["nn"](q, c, 5, lam=0.1)  # SIFT's first step is the best single point
>>> bool((sel.variances[:, 1] <= nn.variances[:, 1] + 1e-6).all())
True
"""

from __future__ import annotations

from collections.abc import Callable

from testtime.methods import SELECTOR_SPECS
from testtime.selection.baselines import (
    nearest_neighbors,
    nearest_neighbors_fixed,
    random_selection,
    uncertainty_sampling,
)
from testtime.selection.posterior import IncrementalPosterior, Selection
from testtime.selection.sift import adaptive_steps, adaptive_stop_steps, sift

_FUNCTIONS = {
    f.__name__: f
    for f in (
        sift,
        nearest_neighbors,
        nearest_neighbors_fixed,
        uncertainty_sampling,
        random_selection,
    )
}
SELECTORS: dict[str, Callable[..., Selection]] = {
    s.name: _FUNCTIONS[s.function] for s in SELECTOR_SPECS
}
"""Selector by method name (from the registry :data:`testtime.methods.SELECTOR_SPECS`):
``f(queries, candidates, n, lam=...) -> Selection``; ``random`` also takes ``generator=``."""

__all__ = [
    "SELECTORS",
    "IncrementalPosterior",
    "Selection",
    "adaptive_steps",
    "adaptive_stop_steps",
    "nearest_neighbors",
    "nearest_neighbors_fixed",
    "random_selection",
    "sift",
    "uncertainty_sampling",
]
