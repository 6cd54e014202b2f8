"""Near-copies of prompts in the memory: how much of a prompt's text its nearest memory sequence
already contains, and NN-F's bpb on prompts with and without such a near-copy.

Overlap of a prompt p (token ids) with a memory sequence s (token ids), :func:`ngram_overlap`:
the fraction of p's token n-grams (n = :data:`NGRAM` = 8 consecutive tokens, every start
position counted) that occur anywhere in s. A prompt has a *near-copy* when the overlap with its
nearest memory sequence (rank 0 of the Faiss candidates: the sequence NN-F trains on N times) is
above :data:`NEAR_COPY` = 0.5, i.e. more than half of its text reappears in runs of at least 8
tokens. :func:`longest_common_run` (the longest common contiguous token run, as a fraction of
the prompt) is a stricter second measure for the docs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from testtime.bpb import bits_per_byte

NGRAM = 8
NEAR_COPY = 0.5


def ngram_overlap(prompt: Sequence[int], seq: Sequence[int], n: int = NGRAM) -> float:
    """Fraction of ``prompt``'s n-grams (all start positions) found in ``seq``; a prompt shorter
    than ``n`` tokens counts as one n-gram (itself).

    >>> ngram_overlap([1, 2, 3, 4, 5], [9, 2, 3, 4, 9], n=2)
    0.5
    >>> ngram_overlap([1, 2, 3], [1, 2, 3, 4], n=8)
    1.0
    """
    p, s = list(map(int, prompt)), list(map(int, seq))
    m = min(n, len(p))
    if m == 0:
        return 0.0
    have = {tuple(s[i : i + m]) for i in range(len(s) - m + 1)}
    grams = [tuple(p[i : i + m]) for i in range(len(p) - m + 1)]
    return sum(g in have for g in grams) / len(grams)


def longest_common_run(prompt: Sequence[int], seq: Sequence[int]) -> int:
    """Length (tokens) of the longest contiguous token run shared by ``prompt`` and ``seq``.

    >>> longest_common_run([1, 2, 3, 4, 5], [0, 2, 3, 4, 9, 1, 2])
    3
    """
    a, b = np.asarray(prompt, dtype=np.int64), np.asarray(seq, dtype=np.int64)
    best = 0
    run = np.zeros(len(b) + 1, dtype=np.int64)  # run[j+1]: common run ending at a[i], b[j]
    for x in a:
        match = b == x
        run[1:] = np.where(match, run[:-1] + 1, 0)
        best = max(best, int(run.max()))
    return best


def best_overlaps(
    prompts: Sequence[Sequence[int]], memory: Sequence[Sequence[int]], n: int = NGRAM
) -> list[tuple[int, float]]:
    """For each prompt, the memory sequence (index into ``memory``) with the largest
    :func:`ngram_overlap` and that overlap ((-1, 0.0) when no n-gram is shared). An upper bound
    on the overlap with the embedding-nearest sequence; uses an n-gram index over the memory.

    >>> best_overlaps([[1, 2, 3, 4]], [[9, 9, 9], [0, 2, 3, 4], [1, 2, 3, 4]], n=2)
    [(2, 1.0)]
    """
    where: dict[tuple[int, ...], set[int]] = {}
    for j, seq in enumerate(memory):
        s = [int(t) for t in seq]
        for i in range(len(s) - n + 1):
            where.setdefault(tuple(s[i : i + n]), set()).add(j)
    out = []
    for prompt in prompts:
        p = [int(t) for t in prompt]
        grams = [tuple(p[i : i + n]) for i in range(len(p) - n + 1)]
        counts: dict[int, int] = {}
        for g in grams:
            for j in where.get(g, ()):
                counts[j] = counts.get(j, 0) + 1
        if not counts or not grams:
            out.append((-1, 0.0))
            continue
        j = min(counts, key=lambda k: (-counts[k], k))
        out.append((j, counts[j] / len(grams)))
    return out


def prompt_overlaps(
    prompts: pd.DataFrame, nearest: pd.DataFrame, threshold: float = NEAR_COPY
) -> pd.DataFrame:
    """Per prompt: ``prompt_id, domain, memory_id, overlap, lcs_frac, near_copy``.

    ``prompts`` has ``prompt_id, domain, prompt_ids`` (the prompt's token ids), ``nearest``
    ``prompt_id, memory_id, seq_ids`` (its nearest memory sequence and that sequence's ids).
    """
    m = prompts.merge(nearest, on="prompt_id")
    rows = []
    for r in m.itertuples():
        p = list(r.prompt_ids)
        rows.append(
            {
                "prompt_id": int(r.prompt_id),
                "domain": r.domain,
                "memory_id": int(r.memory_id),
                "overlap": ngram_overlap(p, r.seq_ids),
                "lcs_frac": longest_common_run(p, r.seq_ids) / max(len(p), 1),
            }
        )
    out = pd.DataFrame(rows)
    out["near_copy"] = out["overlap"] > threshold
    return out.sort_values("prompt_id").reset_index(drop=True)


def near_copy_summary(
    overlaps: pd.DataFrame, method: pd.DataFrame, base: pd.DataFrame, domains: Sequence[str]
) -> pd.DataFrame:
    """Per domain (and ``all``): prompts, share with a near-copy, and the method's byte-weighted
    bpb and its % of the base model on prompts with and without one.

    ``method`` / ``base``: one row per prompt (``prompt_id, nll, n_bytes``; nll in nats).
    Columns: ``domain, n, near_copy_frac, n_with, bpb_with, pct_with, n_without, bpb_without,
    pct_without`` (NaN where a group is empty).
    """
    cols = ["prompt_id", "nll", "n_bytes"]
    m = overlaps.merge(method[cols], on="prompt_id").merge(
        base[cols], on="prompt_id", suffixes=("", "_base")
    )
    rows = []
    for domain in [*domains, "all"]:
        sub = m if domain == "all" else m[m["domain"] == domain]
        if sub.empty:
            continue
        row = {"domain": domain, "n": len(sub), "near_copy_frac": float(sub["near_copy"].mean())}
        for tag, grp in (("with", sub[sub["near_copy"]]), ("without", sub[~sub["near_copy"]])):
            bpb = base_bpb = float("nan")
            if len(grp):
                bpb = float(bits_per_byte(grp["nll"].sum(), grp["n_bytes"].sum()))
                base_bpb = float(bits_per_byte(grp["nll_base"].sum(), grp["n_bytes_base"].sum()))
            row |= {f"n_{tag}": len(grp), f"bpb_{tag}": bpb, f"pct_{tag}": 100 * bpb / base_bpb}
        rows.append(row)
    return pd.DataFrame(rows)
