"""testtime.selection against an independent float64 brute force (numpy, direct solves).

Checks: each method's variance trace equals the GP posterior σ²(x* | first i points) solved
directly; SIFT's every step is the argmin of that posterior over all K candidates (ties to the
lowest index) for lam in {0.01, 0.1, 1}; SIFT's n=1 pick and a case where a repeat is optimal
agree with exhaustive search over all (multi)sets; 10 exact duplicates of the nearest point
(NN takes them all, SIFT stops taking copies); B=1, n=1; n>K for the repeating methods;
adaptive stopping (from the SIFT trace) against the rule σ_n > 1/(α n) written out by hand on
directly solved variances; the baselines' own rules;
fp16 inputs; chunking and the kernel-matrix switch; the input errors; and, when activeft is
installed, step-by-step agreement with the reference library's exact SIFT and adaptive rule.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from testtime.selection import (
    SELECTORS,
    adaptive_stop_steps,
    nearest_neighbors,
    nearest_neighbors_fixed,
    random_selection,
    sift,
    uncertainty_sampling,
)

# ---------------------------------------------------------------- float64 brute-force reference


def post_var(q: np.ndarray, xs: np.ndarray, lam: float) -> float:
    """σ²(q | xs) = qᵀq − k_Xᵀ (K_XX + lam I)⁻¹ k_X by a direct solve (xs: (m, d))."""
    if len(xs) == 0:
        return float(q @ q)
    kx = xs @ q
    return float(q @ q - kx @ np.linalg.solve(xs @ xs.T + lam * np.eye(len(xs)), kx))


def post_own_var(x: np.ndarray, xs: np.ndarray, lam: float) -> float:
    """σ²(x | xs), the candidate's own posterior variance (uncertainty sampling)."""
    return post_var(x, xs, lam)


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def check_trace(sel, q: np.ndarray, c: np.ndarray, lam: float, atol: float) -> None:
    """variances[b, i] == σ²(q_b | first i selected points of row b), for every i <= n."""
    for b in range(q.shape[0]):
        idx = sel.indices[b].tolist()
        for i in range(len(idx) + 1):
            ref = post_var(q[b], c[b][idx[:i]], lam)
            assert sel.variances[b, i].item() == pytest.approx(ref, abs=atol), (b, i)


def check_greedy_sift(sel, q: np.ndarray, c: np.ndarray, lam: float, tie: float) -> None:
    """Every SIFT pick minimises the directly solved σ² over all K candidates given the picks
    before it (up to ``tie``; with a clear winner, exactly that index)."""
    for b in range(q.shape[0]):
        chosen: list[int] = []
        for pick in sel.indices[b].tolist():
            scores = np.array([post_var(q[b], c[b][chosen + [i]], lam) for i in range(c.shape[1])])
            assert scores[pick] <= scores.min() + tie, (b, len(chosen))
            if np.sort(scores)[1] - scores.min() > 10 * tie:  # a clear winner must be taken
                assert pick == int(scores.argmin()), (b, len(chosen))
            chosen.append(pick)


# ---------------------------------------------------------------------------------- SIFT


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sift_matches_greedy_brute_force(lam: float, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(int(lam * 1000))
    q, c = unit(rng, 3, 6), unit(rng, 3, 12, 6)
    q[0] *= 1.7  # not only unit norm: the kernel is the plain inner product
    c[1, 3] *= 0.2
    sel = sift(torch.tensor(q, dtype=dtype), torch.tensor(c, dtype=dtype), n=9, lam=lam)
    assert sel.indices.shape == (3, 9) and sel.variances.shape == (3, 10)
    assert sel.indices.dtype == torch.long and sel.variances.dtype == torch.float32
    atol = 1e-5 if dtype == torch.float32 else 1e-6
    check_trace(sel, q, c, lam, atol)
    check_greedy_sift(sel, q, c, lam, tie=1e-5 if dtype == torch.float32 else 1e-12)


def test_sift_n1_is_best_single_point_by_exhaustive_search() -> None:
    rng = np.random.default_rng(7)
    q, c = unit(rng, 1, 5), unit(rng, 1, 20, 5)
    sel = sift(torch.tensor(q), torch.tensor(c), n=1, lam=0.1)
    best = min(range(20), key=lambda i: post_var(q[0], c[0][[i]], 0.1))
    assert sel.indices.tolist() == [[best]]
    assert sel.variances[0, 0].item() == pytest.approx(float(q[0] @ q[0]))
    assert sel.variances[0, 1].item() == pytest.approx(post_var(q[0], c[0][[best]], 0.1))


def test_sift_repeats_when_a_repeat_is_optimal() -> None:
    # Query e1; candidate 0 is e1 itself, the others barely relevant. With lam=1 one
    # observation of e1 leaves σ²=1/2, two leave 1/3, and no multiset without the repeat beats it.
    q = np.array([[1.0, 0.0, 0.0]])
    c = np.array([[[1.0, 0.0, 0.0], [0.1, 1.0, 0.0], [0.1, 0.0, 1.0]]])
    c[0, 1:] /= np.linalg.norm(c[0, 1:], axis=-1, keepdims=True)
    sel = sift(torch.tensor(q), torch.tensor(c), n=2, lam=1.0)
    exhaustive = min(
        itertools.product(range(3), repeat=2), key=lambda s: post_var(q[0], c[0][list(s)], 1.0)
    )
    assert tuple(sel.indices[0].tolist()) == exhaustive == (0, 0)
    assert sel.variances[0].tolist() == pytest.approx([1.0, 0.5, 1 / 3])


def test_duplicates_nn_takes_all_copies_sift_stops_taking_them() -> None:
    rng = np.random.default_rng(3)
    d = 16
    q = unit(rng, d)
    nearest = q + 0.35 * unit(rng, d)
    nearest /= np.linalg.norm(nearest)
    others = 0.55 * q + unit(rng, 12, d)  # relevant but diverse, all less similar than nearest
    others /= np.linalg.norm(others, axis=-1, keepdims=True)
    c = np.concatenate([others[:2], np.repeat(nearest[None], 10, 0), others[2:]])[None]
    copies = set(range(2, 12))
    assert (c[0] @ q).argmax() in copies

    nn = nearest_neighbors(torch.tensor(q[None]), torch.tensor(c), n=10, lam=0.1)
    assert set(nn.indices[0].tolist()) == copies

    sel = sift(torch.tensor(q[None]), torch.tensor(c), n=10, lam=0.1)
    picks = sel.indices[0].tolist()
    copy_picks = [i for i in picks if i in copies]
    assert copy_picks and set(copy_picks) == {2}  # equal copies: the lowest index wins the tie
    check_greedy_sift(sel, q[None], c, 0.1, tie=1e-5)  # each pick is the exact argmin
    # It stops taking copies once diverse points reduce σ² more: most picks are diverse.
    assert len(copy_picks) <= 4 and len(set(picks) - copies) >= 6
    assert sel.variances[0, -1] < 0.5 * nn.variances[0, -1]
    check_trace(sel, q[None], c, 0.1, 1e-5)
    assert torch.isfinite(sel.variances).all()


def test_batch_of_one_and_degenerate_vectors_give_no_nan() -> None:
    q = torch.tensor([[0.6, 0.8]])
    c = torch.tensor([[[0.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 0.0]]])
    sel = sift(q, c, n=6, lam=0.01)
    assert torch.isfinite(sel.variances).all() and (sel.variances >= 0).all()
    check_trace(sel, q.double().numpy(), c.double().numpy(), 0.01, 1e-5)
    zero = sift(torch.zeros(1, 2), c, n=2, lam=0.1)
    assert zero.variances.tolist() == [[0.0, 0.0, 0.0]] and zero.indices.tolist() == [[0, 0]]


# ------------------------------------------------------------------------- adaptive SIFT


def hand_rule(variances: np.ndarray, alpha: float) -> int:
    """Steps taken: the first n (1-based) with sqrt(σ_n²) > 1/(α n) is not taken."""
    for n in range(1, len(variances)):
        if np.sqrt(variances[n]) > 1.0 / (alpha * n):
            return n - 1
    return len(variances) - 1


def test_adaptive_stop_on_the_trace_follows_the_rule() -> None:
    """Adaptive SIFT = the prefix of the full SIFT selection that the rule keeps; the rule on
    the float32 trace equals the rule on variances solved directly for every prefix, and the
    stops cover every outcome (none, some, all n) across the alphas."""
    rng = np.random.default_rng(11)
    q = unit(rng, 6, 8) * rng.uniform(0.3, 1.0, (6, 1))
    c = unit(rng, 6, 30, 8)
    full = sift(torch.tensor(q, dtype=torch.float32), torch.tensor(c, dtype=torch.float32), 12)
    outcomes = set()
    for alpha in (0.5, 1.0, 2.0, 5.0, 20.0):
        brute = []
        for b in range(6):
            idx = full.indices[b].tolist()
            solved = [post_var(q[b], c[b][idx[:i]], 0.1) for i in range(13)]
            brute.append(hand_rule(np.array(solved), alpha))
        assert adaptive_stop_steps(full.variances, alpha).tolist() == brute, alpha
        outcomes |= {min(s, 1) + (s == 12) for s in brute}
    assert outcomes == {0, 1, 2}


def test_adaptive_covers_all_outcomes_and_rejects_bad_alpha() -> None:
    v = torch.tensor([[1.0, 0.16, 0.09, 0.0625], [1.0, 0.9, 0.8, 0.7]])
    # Row 0, σ_n = (0.4, 0.3, 0.25): α=1 keeps all three, α=2 only the first (0.3 > 1/4),
    # α=3 none (0.4 > 1/3). Row 1, σ_1 ≈ 0.95 < 1 but σ_2 ≈ 0.89 > 1/2: α=1 keeps one.
    assert adaptive_stop_steps(v, 1.0).tolist() == [3, 1]
    assert adaptive_stop_steps(v, 2.0).tolist() == [1, 0]
    assert adaptive_stop_steps(v, 3.0).tolist() == [0, 0]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            adaptive_stop_steps(v, bad)


# ----------------------------------------------------------------------------- baselines


def test_nn_and_nn_f_follow_inner_products() -> None:
    rng = np.random.default_rng(5)
    q, c = unit(rng, 4, 7), unit(rng, 4, 15, 7)
    c[2, 9] = c[2, 4]  # an exact tie: stable order keeps the lower index first
    qt, ct = torch.tensor(q), torch.tensor(c)
    nn = nearest_neighbors(qt, ct, n=6, lam=0.1)
    for b in range(4):
        ip = c[b] @ q[b]
        expected = sorted(range(15), key=lambda i: (-ip[i], i))
        assert nn.indices[b].tolist() == expected[:6]
    check_trace(nn, q, c, 0.1, 1e-7)
    nnf = nearest_neighbors_fixed(qt, ct, n=20, lam=0.1)  # n > K: the top-1 twenty times
    assert (nnf.indices == nn.indices[:, :1]).all()
    check_trace(nnf, q, c, 0.1, 1e-7)


def test_uncertainty_sampling_takes_the_largest_own_variance() -> None:
    rng = np.random.default_rng(9)
    q = unit(rng, 2, 5)
    c = unit(rng, 2, 8, 5) * rng.uniform(0.5, 1.5, (2, 8, 1))
    sel = uncertainty_sampling(torch.tensor(q), torch.tensor(c), n=11, lam=0.3)  # n > K
    for b in range(2):
        chosen: list[int] = []
        for pick in sel.indices[b].tolist():
            own = [post_own_var(c[b][i], c[b][chosen], 0.3) for i in range(8)]
            assert pick == int(np.argmax(own))
            chosen.append(pick)
    check_trace(sel, q, c, 0.3, 1e-7)


def test_random_is_seeded_per_prompt_and_uniform() -> None:
    rng = np.random.default_rng(2)
    q, c = torch.tensor(unit(rng, 3, 4)), torch.tensor(unit(rng, 3, 10, 4))

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    a = random_selection(q, c, n=25, lam=0.1, generator=gens([1, 2, 3]))
    b = random_selection(q, c, n=25, lam=0.1, generator=gens([1, 2, 3]))
    assert torch.equal(a.indices, b.indices)
    # Row 0 depends only on its own generator, not on the rest of the batch.
    solo = random_selection(q[:1], c[:1], n=25, lam=0.1, generator=gens([1]))
    assert torch.equal(solo.indices[0], a.indices[0])
    for row in a.indices.tolist():
        assert sorted(row[:10]) == list(range(10))  # distinct while n <= K
        assert sorted(np.bincount(row, minlength=10).tolist()) == [2] * 5 + [3] * 5
    check_trace(a, q.numpy(), c.numpy(), 0.1, 1e-7)
    with pytest.raises(ValueError, match="generator"):
        random_selection(q, c, n=2, generator=gens([1]))


def test_selectors_table_and_n_larger_than_k() -> None:
    assert set(SELECTORS) == {"sift", "nn", "nn_f", "us", "random"}
    rng = np.random.default_rng(4)
    q, c = torch.tensor(unit(rng, 2, 3)), torch.tensor(unit(rng, 2, 3, 3))
    for name in ("sift", "nn_f", "us", "random"):
        sel = SELECTORS[name](q, c, 7, lam=0.1)
        assert sel.indices.shape == (2, 7) and ((sel.indices >= 0) & (sel.indices < 3)).all()
        check_trace(sel, q.numpy(), c.numpy(), 0.1, 1e-7)
    with pytest.raises(ValueError, match="n=7 exceeds the K=3"):
        SELECTORS["nn"](q, c, 7, lam=0.1)


# ------------------------------------------------------------------- dtypes and execution


def test_fp16_inputs_compute_in_float32() -> None:
    rng = np.random.default_rng(8)
    q16 = torch.tensor(unit(rng, 5, 32)).half()
    c16 = torch.tensor(unit(rng, 5, 40, 32)).half()
    for name in ("sift", "nn", "us"):
        half = SELECTORS[name](q16, c16, 10, lam=0.1)
        single = SELECTORS[name](q16.float(), c16.float(), 10, lam=0.1)
        assert half.variances.dtype == torch.float32
        assert torch.equal(half.indices, single.indices)
        assert torch.allclose(half.variances, single.variances, atol=1e-6)
    check_trace(half, q16.double().numpy(), c16.double().numpy(), 0.1, 1e-5)


def test_chunking_and_kernel_matrix_switch_do_not_change_results() -> None:
    rng = np.random.default_rng(6)
    q, c = torch.tensor(unit(rng, 7, 12)), torch.tensor(unit(rng, 7, 25, 12))
    ref = sift(q, c, n=8, lam=0.1, gram=True)
    for kwargs in ({"gram": False}, {"chunk_size": 1}, {"chunk_size": 3, "gram": False}):
        other = sift(q, c, n=8, lam=0.1, **kwargs)
        assert torch.equal(other.indices, ref.indices), kwargs
        assert torch.allclose(other.variances, ref.variances, atol=1e-12), kwargs


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("queries", "candidates", "n", "lam", "match"),
    [
        (torch.ones(2, 4), torch.ones(3, 5, 4), 2, 0.1, "batch size"),
        (torch.ones(2, 4), torch.ones(2, 5, 3), 2, 0.1, "dimension"),
        (torch.ones(2, 4, 1), torch.ones(2, 5, 4), 2, 0.1, r"queries must have shape \(B, d\)"),
        (torch.ones(2, 4), torch.ones(5, 4), 2, 0.1, r"candidates must have shape \(B, K, d\)"),
        (torch.ones(2, 4), torch.ones(2, 0, 4), 2, 0.1, "K = 0"),
        (torch.ones(0, 4), torch.ones(0, 5, 4), 2, 0.1, "B = 0"),
        (torch.ones(2, 4), torch.ones(2, 5, 4), 0, 0.1, "n must be"),
        (torch.ones(2, 4), torch.ones(2, 5, 4), 2.0, 0.1, "n must be"),
        (torch.ones(2, 4), torch.ones(2, 5, 4), 2, 0.0, "lam"),
        (torch.ones(2, 4), torch.ones(2, 5, 4), 2, -1.0, "lam"),
        (torch.ones(2, 4), torch.ones(2, 5, 4), 2, float("inf"), "lam"),
        (torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5, 4), 2, 0.1, "queries .*floating"),
        (torch.ones(2, 4), torch.ones(2, 5, 4, dtype=torch.int32), 2, 0.1, "candidates .*float"),
        (torch.tensor([[1.0, float("nan")]]), torch.ones(1, 3, 2), 2, 0.1, "queries .*NaN"),
        (torch.ones(1, 2), torch.tensor([[[1.0, float("inf")]]]), 1, 0.1, "candidates .*NaN"),
    ],
)
@pytest.mark.parametrize("name", ["sift", "nn", "nn_f", "us", "random"])
def test_bad_input_names_the_argument(name, queries, candidates, n, lam, match) -> None:
    with pytest.raises(ValueError, match=match):
        SELECTORS[name](queries, candidates, n, lam=lam)


# ------------------------------------------------------------ the reference library itself


def test_sift_trace_and_adaptive_rule_match_activeft() -> None:
    """activeft's exact SIFT (VTL, no model: kernel = inner product) on the same vectors picks
    the same points, repeats included, with the same variance after every step; its adaptive
    mask (σ_n > 1/(α n) drops point n) equals our prefix whenever the mask is a prefix."""
    pytest.importorskip("activeft")
    from activeft import ActiveDataLoader
    from activeft.acquisition_functions.vtl import VTL
    from activeft.sift import Dataset

    rng = np.random.default_rng(12)
    q, c = unit(rng, 3, 4), unit(rng, 3, 10, 4)
    ours = sift(torch.tensor(q, dtype=torch.float32), torch.tensor(c, dtype=torch.float32), 8)
    torch.manual_seed(0)  # activeft shuffles candidates with the global RNG
    for b in range(3):
        vtl = VTL(target=torch.tensor(q[b : b + 1], dtype=torch.float32), noise_std=0.1**0.5)
        idx, values = ActiveDataLoader(
            Dataset(torch.tensor(c[b], dtype=torch.float32)), 8, vtl
        ).next()
        assert ours.indices[b].tolist() == idx.tolist()
        assert ours.variances[b, 1:].tolist() == pytest.approx((-values).tolist(), abs=1e-5)
        for alpha in (1.0, 3.0, 10.0):
            steps = np.arange(1, 9)
            kept = ~(np.sqrt(-values.numpy()) > 1 / (alpha * steps))  # activeft's mask
            if kept.tolist() == sorted(kept.tolist(), reverse=True):  # a prefix
                stop = adaptive_stop_steps(ours.variances[b : b + 1], alpha)
                assert stop.item() == kept.sum()


def test_large_lambda_repeats_the_nearest_point_and_small_lambda_diversifies():
    """The direction of λ′ (sift.py's docstring): as λ′ grows SIFT re-selects the most similar
    candidate like NN-F; a small λ′ gives distinct points."""
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(1, 16, generator=g), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(1, 50, 16, generator=g), dim=-1)
    nn_f = SELECTORS["nn_f"](q, c, 10, lam=1.0).indices
    assert torch.equal(SELECTORS["sift"](q, c, 10, lam=1e4).indices, nn_f)
    assert len(set(SELECTORS["sift"](q, c, 10, lam=1e-3).indices[0].tolist())) == 10
