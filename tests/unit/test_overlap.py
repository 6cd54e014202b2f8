"""Near-copy overlap (testtime.overlap) against brute-force definitions, and the NN-F summary
on a hand-computed example.

Run: .venv/bin/pytest tests/unit/test_overlap.py
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testtime.overlap import (
    best_overlaps,
    longest_common_run,
    near_copy_summary,
    ngram_overlap,
    prompt_overlaps,
)

LN2 = math.log(2)


def _brute_lcs(a: list[int], b: list[int]) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def _brute_overlap(p: list[int], s: list[int], n: int) -> float:
    grams = [p[i : i + n] for i in range(len(p) - n + 1)]
    found = [any(s[j : j + n] == g for j in range(len(s) - n + 1)) for g in grams]
    return sum(found) / len(found)


def test_overlap_and_longest_run_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        p = rng.integers(0, 4, rng.integers(8, 20)).tolist()
        s = rng.integers(0, 4, rng.integers(1, 30)).tolist()
        assert longest_common_run(p, s) == _brute_lcs(p, s)
        for n in (1, 3, 8):
            assert ngram_overlap(p, s, n=n) == pytest.approx(_brute_overlap(p, s, n))


def test_a_copy_with_one_edit_is_a_near_copy():
    prompt = list(range(40))
    edited = [*range(20), 999, *range(21, 40)]  # one token replaced in the middle
    assert longest_common_run(prompt, edited) == 20  # tokens 0..19
    # 8-grams of the prompt: 33; the 8 that contain position 20 are lost
    assert ngram_overlap(prompt, edited) == pytest.approx(25 / 33)
    assert ngram_overlap(prompt, list(range(100, 140))) == 0.0


def test_summary_splits_prompts_by_near_copy():
    prompts = pd.DataFrame(
        {
            "prompt_id": [0, 1, 2],
            "domain": ["A", "A", "B"],
            "prompt_ids": [list(range(16)), list(range(16)), list(range(16))],
        }
    )
    nearest = pd.DataFrame(
        {
            "prompt_id": [0, 1, 2],
            "memory_id": [7, 8, 9],
            "seq_ids": [list(range(20)), list(range(50, 70)), list(range(12))],
        }
    )
    ov = prompt_overlaps(prompts, nearest)
    assert ov["near_copy"].tolist() == [True, False, True]  # overlaps 1, 0, 5/9
    assert ov["overlap"].iloc[2] == pytest.approx(5 / 9)
    n_bytes = np.array([100.0, 300.0, 200.0])

    def rows(bpb):
        return pd.DataFrame(
            {"prompt_id": [0, 1, 2], "nll": LN2 * n_bytes * bpb, "n_bytes": n_bytes}
        )

    method, base = rows(np.array([1.0, 3.0, 2.0])), rows(np.array([2.0, 2.0, 2.0]))
    summary = near_copy_summary(ov, method, base, ["A", "B"]).set_index("domain")
    a = summary.loc["A"]
    assert a["near_copy_frac"] == 0.5 and a["n_with"] == 1 and a["n_without"] == 1
    assert a["pct_with"] == pytest.approx(50.0) and a["pct_without"] == pytest.approx(150.0)
    every = summary.loc["all"]
    assert every["bpb_with"] == pytest.approx((1.0 * 100 + 2.0 * 200) / 300)
    assert every["pct_with"] == pytest.approx(100 * (500 / 300) / 2.0)
    assert math.isnan(summary.loc["B", "bpb_without"])


def test_best_overlap_over_the_memory_is_the_brute_force_maximum():
    rng = np.random.default_rng(1)
    memory = [rng.integers(0, 3, rng.integers(5, 25)).tolist() for _ in range(30)]
    prompts = [rng.integers(0, 3, 12).tolist() for _ in range(10)]
    for (j, best), p in zip(best_overlaps(prompts, memory, n=4), prompts, strict=True):
        brute = [_brute_overlap(p, s, 4) if len(s) >= 4 else 0.0 for s in memory]
        assert best == pytest.approx(max(brute))
        assert j == int(np.argmax(brute)) if max(brute) > 0 else j == -1
