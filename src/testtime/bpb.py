"""Bits per byte (bpb) of an evaluation text under a causal language model.

For a text s with UTF-8 byte length |s|_bytes, tokenised as t_1..t_T and prefixed with the
model's bos (or eos) token t_0 and optionally a context c_1..c_C (``split`` protocol; never
scored)::

    bpb(s | c) = sum_{i=1..T} -ln p(t_i | t_0, c, t_<i) / (ln 2 * |s|_bytes)

The numerator is in nats, so dividing by ln 2 gives bits; dividing by bytes (not tokens) makes
models with different tokenisers comparable. Every token of the text is scored exactly once: the
sequence t_0..t_T is cut into disjoint windows of at most ``context`` predictions, and each
window's input starts with the token just before its first target (so no target is scored twice
and none is skipped).

>>> round(bits_per_byte(math.log(2) * 8.0, 4), 6)  # 8 bits over 4 bytes
2.0

Scoring a batch of texts is :func:`make_windows` then :func:`score_windows` (with the model's
forward as ``logits_fn``); :meth:`testtime.finetune.Finetuner.score` does both for the
fine-tuning paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

LN2 = math.log(2.0)
IGNORE = -100  # target id that is masked out of every loss / score


def bits_per_byte(nll_nats: float | np.ndarray, n_bytes: int | np.ndarray) -> float | np.ndarray:
    """``nll_nats / (ln 2 * n_bytes)``: summed token NLL (nats) to bits per UTF-8 byte.

    Scalars give a float; numpy arrays (either argument) give an elementwise float64 array with
    the same arithmetic.

    >>> bits_per_byte(np.array([math.log(2) * 8.0, math.log(2) * 3.0]), np.array([4, 3]))
    array([2., 1.])
    """
    if np.ndim(nll_nats) == 0 and np.ndim(n_bytes) == 0:
        if n_bytes <= 0:
            raise ValueError(f"n_bytes must be positive, got {n_bytes}")
        return float(nll_nats) / (LN2 * n_bytes)
    n_bytes = np.asarray(n_bytes)
    if np.any(n_bytes <= 0):
        raise ValueError(f"n_bytes must be positive, got {n_bytes.min()}")
    return np.asarray(nll_nats, dtype=np.float64) / (LN2 * n_bytes)


def eval_token_ids(tokenizer, text: str, context: str = "") -> tuple[torch.Tensor, int]:
    """``(1 + C + T,)`` int64 ids: bos (or eos), the ``C`` context tokens, the ``T`` text tokens.

    Returns the ids and ``C``, the number of context tokens that follow the bos and must not be
    scored (0 for an empty ``context``). Context and text are tokenised separately, so the
    scored tokens are exactly the tokens of ``text``. Raises ValueError for an empty text or a
    tokenizer with neither bos nor eos.
    """
    if not text:
        raise ValueError("evaluation text is empty: bpb is undefined")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else None
    if start is None:
        start = tokenizer.eos_token_id
    if start is None:
        raise ValueError("tokenizer has neither a bos nor an eos token to use as context")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"evaluation text {text[:40]!r} tokenises to no tokens")
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    return torch.tensor([start, *ctx, *ids], dtype=torch.long), len(ctx)


def make_windows(
    sequences: Sequence[torch.Tensor],
    context: int,
    pad_id: int = 0,
    unscored: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each sequence into disjoint prediction windows, padded to a common shape.

    Sequence b of length T_b + 1 yields ceil(T_b / context) windows; window w predicts tokens
    ``w*context + 1 .. (w+1)*context`` from inputs ``w*context .. (w+1)*context - 1``.
    ``unscored[b]`` tokens after the first (a conditioning context) are inputs only: their
    targets are :data:`IGNORE`.

    Returns ``inputs`` and ``targets``, both ``(B, W, L)`` int64 with ``L <= context``; padded
    positions have target :data:`IGNORE`. Padding is on the right, so a causal model's
    predictions at real positions never see it.

    >>> x, y = make_windows([torch.tensor([9, 1, 2, 3])], context=2)
    >>> x.tolist(), y.tolist()
    ([[[9, 1], [2, 0]]], [[[1, 2], [3, -100]]])
    >>> make_windows([torch.tensor([9, 1, 2, 3])], context=4, unscored=[2])[1].tolist()
    [[[-100, -100, 3]]]
    """
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    unscored = [0] * len(sequences) if unscored is None else list(unscored)
    if any(u < 0 or u >= len(s) - 1 for u, s in zip(unscored, sequences, strict=True)):
        raise ValueError("every sequence needs at least one scored token after its context")
    n_windows = [math.ceil((len(s) - 1) / context) for s in sequences]
    if min(n_windows, default=0) < 1:
        raise ValueError("every sequence needs at least one token after the context token")
    n_w = max(n_windows)
    length = min(context, max(len(s) - 1 for s in sequences))
    inputs = torch.full((len(sequences), n_w, length), pad_id, dtype=torch.long)
    targets = torch.full((len(sequences), n_w, length), IGNORE, dtype=torch.long)
    for b, seq in enumerate(sequences):
        seq = seq.long()
        for w in range(n_windows[b]):
            lo = w * context
            x = seq[lo : lo + context]
            y = seq[lo + 1 : lo + 1 + context]
            inputs[b, w, : len(y)] = x[: len(y)]
            targets[b, w, : len(y)] = y
            # y[i] is token lo + 1 + i; tokens 1..unscored[b] are the context
            n_ctx = min(max(unscored[b] - lo, 0), len(y))
            targets[b, w, :n_ctx] = IGNORE
    return inputs, targets


def summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(..., L, V)`` logits and ``(..., L)`` targets -> ``(...)`` float64 summed NLL in nats.

    Targets equal to :data:`IGNORE` contribute nothing. Log-softmax runs in float32.
    """
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    )
    return flat.reshape(targets.shape).double().sum(-1)


@torch.no_grad()
def score_windows(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Summed NLL (nats) per sequence, ``(B,)`` float64, one window index at a time.

    ``logits_fn`` maps ``(B, L)`` input ids to ``(B, L, V)`` logits (row b may use its own
    parameters, as in the batched fine-tuning path). Looping over windows bounds logits memory
    to one ``(B, L, V)`` block.
    """
    total = torch.zeros(inputs.shape[0], dtype=torch.float64)
    for w in range(inputs.shape[1]):
        y = targets[:, w]
        if bool((y == IGNORE).all()):
            continue
        total += summed_nll(logits_fn(inputs[:, w]), y.to(inputs.device)).cpu()
    return total


def model_context(model) -> int:
    """Context length (tokens) of a HF causal LM: n_positions / max_position_embeddings."""
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot read the context length from the model config {type(cfg).__name__}")
