"""Benchmark: batched exact SIFT (testtime.selection.sift) against activeft's exact SIFT.

Measures, on identical inputs in one run, the wall time of our batched ``sift`` and of the
reference library activeft (``pip install activeft``, a bench-only dependency: the ``bench``
extra) selecting n points for each of B queries from its own K candidates, and checks that both
reach the same final posterior variance σ²(x* | X_n) per query. Defaults are the CPU setting of
docs/performance.md: B=32, K=200, d=768, n=50, lam=0.1, CPU, 1 torch thread for both sides.

activeft is driven through its own public pieces, one query at a time, exactly as its
``Retriever.batch_search`` does after the Faiss step: ``ActiveDataLoader(Dataset(V), n,
VTL(target=x*, noise_std=sqrt(lam), ...)).next()`` with no model, so its embedding is the
identity and its kernel is the inner product of the very same float32 vectors. Its acquisition
values are −σ²(x* | first i points), so its final variance is ``-values[-1]``.

Run::

    testtime bench selection                      # CPU, the default setting
    testtime bench selection --repeats 5
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
import json
import math
import statistics
import time

import torch


def make_inputs(
    batch: int,
    k: int,
    dim: int,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm queries ``(B, d)`` and candidates ``(B, K, d)`` correlated with their query
    (inner products spread over roughly [0, 0.7], like Faiss neighbours of a prompt).

    ``device``: where the numbers are drawn (a CUDA generator draws other numbers than the
    CPU one); ``dtype``: the returned dtype; ``chunk``: queries drawn at a time, so a large
    ``(B, K, d)`` never needs float32 temporaries of its whole size (the GPU target shape
    10,000 x 1,000 x 1,024 is 41 GB in float32). Without ``chunk`` the numbers equal those of
    the single-chunk draw only when B fits one chunk."""
    g = torch.Generator(device=device).manual_seed(seed)
    normalize = torch.nn.functional.normalize
    chunk = chunk or batch
    qs, cs = [], []
    for lo in range(0, batch, chunk):
        b = min(chunk, batch - lo)
        q = normalize(torch.randn(b, dim, generator=g, device=device), dim=-1)
        weight = torch.rand(b, k, 1, generator=g, device=device)
        noise = normalize(torch.randn(b, k, dim, generator=g, device=device), dim=-1)
        qs.append(q.to(dtype))
        cs.append(normalize(weight * q.unsqueeze(1) + noise, dim=-1).to(dtype))
        del q, weight, noise
    if len(qs) == 1:
        return qs[0], cs[0]
    return torch.cat(qs), torch.cat(cs)


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
            dataset=Dataset(c[b]), batch_size=n, acquisition_function=vtl, device=c.device
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
        "--inputs",
        choices=["host", "device"],
        default="host",
        help="host: end to end, host tensors in and out (pinned on CUDA, transfer timed); "
        "device: inputs already on --device (the selection alone)",
    )
    p.add_argument(
        "--gram",
        choices=["auto", "on", "off"],
        default="auto",
        help="precompute the (B, K, K) kernel matrix (auto: K <= 32 n)",
    )
    p.add_argument(
        "--baseline",
        choices=["activeft", "naive", "none"],
        default="activeft",
        help="what to compare with (naive: float64 direct-solve loop, slow)",
    )
    p.add_argument(
        "--baseline-batch",
        type=int,
        default=None,
        help="run the baseline on the first M queries only and compare time per query "
        "(activeft at B=10,000 would take minutes)",
    )
    p.add_argument(
        "--baseline-device",
        default="cpu",
        help="device activeft computes on (its tensors are moved there; e.g. cuda)",
    )
    p.add_argument(
        "--no-tf32",
        action="store_true",
        help="form products of fp16 inputs in plain float32 (posterior.HALF_INPUTS_TF32 off)",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="max |Δσ²| counted as identical")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print times, ratio and the agreement of final variances."""
    from testtime.selection import posterior, sift
    from testtime.selection.posterior import GRAM_MAX_RATIO

    parser = build_parser()
    args = parser.parse_args(argv)
    posterior.HALF_INPUTS_TF32 = not args.no_tf32
    if args.baseline_batch is not None and not 1 <= args.baseline_batch <= args.batch:
        parser.error(f"--baseline-batch must be in 1..{args.batch}, got {args.baseline_batch}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.input_dtype)
    # draw where we compute: on a GPU in chunks (the target shape does not fit host float32)
    q_in, c_in = make_inputs(
        args.batch, args.k, args.dim, args.seed, device=device, dtype=dtype, chunk=1024
    )
    if args.inputs == "host" and device.type == "cuda":
        q_host = torch.empty(q_in.shape, dtype=dtype, pin_memory=True)
        c_host = torch.empty(c_in.shape, dtype=dtype, pin_memory=True)
        q_host.copy_(q_in)
        c_host.copy_(c_in)
        q_in, c_in = q_host, c_host
        torch.cuda.empty_cache()
    elif args.inputs == "host":
        q_in, c_in = q_in.cpu(), c_in.cpu()
    gram = {"auto": None, "on": True, "off": False}[args.gram]
    use_gram = args.k <= GRAM_MAX_RATIO * args.n if gram is None else gram

    def ours():
        sel = sift(
            q_in.to(device, non_blocking=True),
            c_in.to(device, non_blocking=True),
            args.n,
            args.lam,
            gram=gram,
        )
        return sel.variances[:, -1].cpu()

    print(
        f"setting: B={args.batch} K={args.k} d={args.dim} n={args.n} lam={args.lam} "
        f"device={device} threads={args.threads} input={args.input_dtype} on {args.inputs} "
        f"gram={use_gram} tf32-for-half-inputs={not args.no_tf32}"
    )
    t_ours, v_ours = _timed(ours, args.repeats, device)
    out: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "args": vars(args),
        "gram": use_gram,
        "ours_s": t_ours,
    }
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"testtime sift : {t_ours * 1e3:10.1f} ms  ({t_ours / args.batch * 1e6:.1f} us/query)")
    if use_gram and args.batch * args.k * args.k * 4 <= 4 << 30:
        cd = c_in.to(device).float()
        t_gram, _ = _timed(lambda: torch.bmm(cd, cd.mT), args.repeats, device)
        out["gram_gemm_s"] = t_gram
        print(f"  of which the (B, K, K) kernel GEMM: {t_gram * 1e3:.1f} ms")
        del cd
    if args.baseline == "none":
        _write_json(args.json, out)
        return 0
    m = args.baseline_batch or args.batch
    ref_device = torch.device(args.baseline_device)
    q_ref = q_in[:m].to(ref_device, torch.float32)
    c_ref = c_in[:m].to(ref_device, torch.float32)
    ref_fn = {"activeft": _activeft_final_variances, "naive": _naive_final_variances}
    ref_fn[args.baseline](q_ref[:1], c_ref[:1], args.n, args.lam)  # warm-up: imports, first calls

    def reference():
        torch.manual_seed(args.seed)  # activeft shuffles candidates with torch's global RNG
        return ref_fn[args.baseline](q_ref, c_ref, args.n, args.lam)

    repeats = args.repeats if args.baseline == "activeft" else 1
    t_ref, v_ref = _timed(reference, repeats, ref_device, warmup=False)
    diff = (v_ours[:m].double() - v_ref.double()).abs().max().item()
    per_ours, per_ref = t_ours / args.batch, t_ref / m
    ratio = per_ref / per_ours
    print(
        f"{args.baseline:<14}: {t_ref * 1e3:10.1f} ms  ({per_ref * 1e6:.1f} us/query over "
        f"{m} queries on {ref_device})"
    )
    print(f"speed-up      : {ratio:10.1f}x (time per query)")
    same = diff <= args.tol
    print(
        f"final σ² agree: {'yes' if same else 'NO'} (max |Δσ²| = {diff:.2e} over "
        f"{m} queries; tol {args.tol:g}; mean σ² = {v_ref.mean().item():.4f})"
    )
    out |= {
        "baseline": args.baseline,
        "baseline_queries": m,
        "baseline_device": str(ref_device),
        "baseline_s": t_ref,
        "speedup_per_query": ratio,
        "max_abs_diff_final_var": diff,
        "agree": same,
    }
    _write_json(args.json, out)
    return 0 if same else 1


def _write_json(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
