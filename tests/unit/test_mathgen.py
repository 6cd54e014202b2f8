"""The math generator's hang guard caps CPU time, not the wall clock of a busy machine."""

from __future__ import annotations

import time

import pytest

from testtime.corpus.mathgen import generate_in_subprocess


def test_cpu_cap_stops_the_generator_with_the_config_key() -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"data\.demo\.math_max_seconds.*CPU time"):
        # far more documents than one CPU second can generate
        generate_in_subprocess(seed=0, count=100_000, n_examples=40, min_chars=1, max_seconds=1)
    assert time.monotonic() - start < 60


def test_small_request_finishes_under_the_cap() -> None:
    out = generate_in_subprocess(seed=0, count=2, n_examples=3, min_chars=1, max_seconds=60)
    assert len(out["documents"]) == 2
