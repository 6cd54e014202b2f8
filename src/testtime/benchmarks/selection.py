"""Benchmark: batched exact SIFT (testtime.selection.sift) against activeft's exact SIFT.

Measures, on identical inputs in one run, the wall time of our batched ``sift`` and of the
reference library activeft (``pip install activeft``, a bench-only dependency: the ``bench``
extra) selecting n points for each of B queries from its own K candidates, and checks that both
reach the same final posterior variance σ²(x* | X_n) per query. Defaults are the issue's
setting: B=32, K=200, d=768, n=50, lam=0.1, CPU, 1 torch thread for both sides.

activeft is driven through its own public pieces, one query at a time, exactly as its
``Retriever.batch_search`` does after the Faiss step: ``ActiveDataLoader(Dataset(V), n,
VTL(target=x*, noise_std=sqrt(lam), ...)).next()`` with no model, so its embedding is the
identity and its kernel is the inner product of the very same float32 vectors. Its acquisition
values are −σ²(x* | first i points), so its final variance is ``-values[-1]``.

Run::

    testtime bench selection                      # CPU, the issue's setting
    python bench/selection.py --repeats 5
    testtime bench selection --device cuda --batch 10000 --k 1000 --dim 1024 --baseline none

What bounds the CPU speed-up: activeft spends ~15 ms per query in per-step Python and
(K+1)² matrix work; our batch is dominated by forming the (B, K, K) kernel matrix (one fp32
GEMM, printed separately; ~20 ms of ~30 ms at the defaults on one EPYC core). Any exact method
must at least form the n·K kernel values of the selected points (B·n·K·d multiply-adds), so on
this kind of core the attainable ratio at the defaults is tens, not hundreds.

With ``--device cuda`` our time is end to end: host tensors in, host tensors out (transfer
included). ``--baseline naive`` compares with a float64 reference loop instead of activeft.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch


def make_inputs(batch: int, k: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm queries ``(B, d)`` and candidates ``(B, K, d)`` correlated with their query
    (inner products spread over roughly [0, 0.7], like Faiss neighbours of a prompt)."""
    g = torch.Generator().manual_seed(seed)
    normalize = torch.nn.functional.normalize
    q = normalize(torch.randn(batch, dim, generator=g), dim=-1)
    weight = torch.rand(batch, k, 1, generator=g)
    noise = normalize(torch.randn(batch, k, dim, generator=g), dim=-1)
    return q, normalize(weight * q.unsqueeze(1) + noise, dim=-1)


def _activeft_final_variances(q: torch.Tensor, c: torch.Tensor, n: int, lam: float):
    """Final σ² per query from activeft's VTL (one ActiveDataLoader per query)."""
    from activeft import ActiveDataLoader
    from activeft.acquisition_functions.vtl import VTL
    from activeft.sift import Dataset

    out = []
    for b in range(q.shape[0]):
        vtl = VTL(
            target=q[b : b + 1],
            noise_std=math.sqrt(lam),
            num_workers=0,
            subsample=False,
            force_nonsequential=False,
        )
        loader = ActiveDataLoader(
            dataset=Dataset(c[b]), batch_size=n, acquisition_function=vtl, device=q.device
        )
        _, values = loader.next()
        out.append(-float(values[-1]))
    return torch.tensor(out, dtype=torch.float64)


def _naive_final_variances(q: torch.Tensor, c: torch.Tensor, n: int, lam: float):
    """Final σ² per query from a plain float64 greedy loop with direct solves (reference)."""
    out = []
    for b in range(q.shape[0]):
        x, cand = q[b].double(), c[b].double()
        chosen: list[int] = []
        best = float(x @ x)
        for _ in range(n):
            scores = []
            for i in range(cand.shape[0]):
                sub = cand[chosen + [i]]
                kxx = sub @ sub.T + lam * torch.eye(len(chosen) + 1, dtype=torch.float64)
                kq = sub @ x
                scores.append(float(x @ x - kq @ torch.linalg.solve(kxx, kq)))
            i_best = min(range(len(scores)), key=scores.__getitem__)
            chosen.append(i_best)
            best = scores[i_best]
        out.append(best)
    return torch.tensor(out, dtype=torch.float64)


def _timed(fn, repeats: int, device: torch.device, warmup: bool = True) -> tuple[float, object]:
    """Median wall time (s) over ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testtime bench selection", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32, help="queries B")
    p.add_argument("--k", type=int, default=200, help="candidates per query K")
    p.add_argument("--dim", type=int, default=768, help="embedding dimension d")
    p.add_argument("--n", type=int, default=50, help="points selected per query")
    p.add_argument("--lam", type=float, default=0.1, help="SIFT noise lambda'")
    p.add_argument("--device", default="cpu", help="device for our sift (cpu, cuda, cuda:N)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument(
        "--input-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="dtype our sift receives (float16 = the pipeline's on-disk embeddings)",
    )
    p.add_argument(
        "--baseline",
        choices=["activeft", "naive", "none"],
        default="activeft",
        help="what to compare with (naive: float64 direct-solve loop, slow)",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="max |Δσ²| counted as identical")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print times, ratio and the agreement of final variances."""
    from testtime.selection import sift
    from testtime.selection.posterior import GRAM_MAX_RATIO

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    q, c = make_inputs(args.batch, args.k, args.dim, args.seed)
    dtype = getattr(torch, args.input_dtype)
    q_in, c_in = q.to(dtype), c.to(dtype)
    if device.type == "cuda":
        q_in, c_in = q_in.pin_memory(), c_in.pin_memory()

    def ours():
        sel = sift(
            q_in.to(device, non_blocking=True), c_in.to(device, non_blocking=True), args.n, args.lam
        )
        return sel.variances[:, -1].cpu()

    print(
        f"setting: B={args.batch} K={args.k} d={args.dim} n={args.n} lam={args.lam} "
        f"device={device} threads={args.threads} input={args.input_dtype}"
    )
    t_ours, v_ours = _timed(ours, args.repeats, device)
    print(f"testtime sift : {t_ours * 1e3:10.1f} ms  ({t_ours / args.batch * 1e6:.1f} us/query)")
    if args.k <= GRAM_MAX_RATIO * args.n:  # sift forms the (B, K, K) kernel matrix
        cd = c_in.to(device).float()
        t_gram, _ = _timed(lambda: torch.bmm(cd, cd.mT), args.repeats, device)
        print(f"  of which the (B, K, K) kernel GEMM: {t_gram * 1e3:.1f} ms")
        del cd
    if args.baseline == "none":
        return 0
    ref_fn = {"activeft": _activeft_final_variances, "naive": _naive_final_variances}
    ref_fn[args.baseline](q[:1], c[:1], args.n, args.lam)  # warm-up: imports, first calls

    def reference():
        torch.manual_seed(args.seed)  # activeft shuffles candidates with torch's global RNG
        return ref_fn[args.baseline](q, c, args.n, args.lam)

    repeats = args.repeats if args.baseline == "activeft" else 1
    t_ref = _timed(reference, repeats, torch.device("cpu"), warmup=False)[0]
    v_ref = reference()
    diff = (v_ours.double() - v_ref).abs().max().item()
    print(f"{args.baseline:<14}: {t_ref * 1e3:10.1f} ms  ({t_ref / args.batch * 1e6:.1f} us/query)")
    print(f"speed-up      : {t_ref / t_ours:10.1f}x")
    same = diff <= args.tol
    print(
        f"final σ² agree: {'yes' if same else 'NO'} (max |Δσ²| = {diff:.2e} over "
        f"{args.batch} queries; tol {args.tol:g}; mean σ² = {v_ref.mean().item():.4f})"
    )
    return 0 if same else 1
