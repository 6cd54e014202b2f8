"""Benchmark: our test-time fine-tuning loop against the naive one-prompt Hugging Face loop.

Both sides fine-tune the same randomly initialised GPT-2 (default: the demo size, 4 layers,
d=256, context 256, vocab 8192, 5.3M parameters; dropout off so both must agree) for P prompts
x N steps on identical token ids, AdamW, batch size 1, and score the prompt's evaluation text in
bits per byte after the last step. Printed: prompts per second of each side, the ratio, the
largest bpb difference between the two (they must agree), and with ``--bf16`` both loops again
under bf16 autocast (``--skip-fp32``: only those). On CUDA also the model FLOPs utilisation
(MFU) of each: 6·params·train tokens + 2·params·eval tokens over time, against
``--peak-tflops`` (attention's own FLOPs not counted). ``--json`` writes the numbers.

* ours: :class:`testtime.finetune.Finetuner` (base weights restored from a snapshot per
  prompt, a fresh optimizer, eval in disjoint windows; ``--batch-prompts B`` uses the vmap path);
* naive: ``copy.deepcopy(model)`` per prompt, ``torch.optim.AdamW``, loss via ``labels=``.

Run::

    testtime bench finetune                          # CPU, 8 prompts x 10 steps, demo model
    testtime bench finetune --bf16 --threads 2
    testtime bench finetune --device cuda --n-layer 12 --n-embd 768 --n-head 12 \\
        --context 1024 --vocab 50257 --eval-tokens 1024 --steps 50 --batch-prompts 8 \\
        --prompts 8 --bf16 --repeats 1 --peak-tflops 989    # GPT-2 small (124M) on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch

from testtime.bpb import bits_per_byte


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testtime bench finetune", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8, help="test prompts")
    p.add_argument("--steps", type=int, default=10, help="gradient steps per prompt")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--context", type=int, default=256, help="model context = sequence length")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--eval-tokens", type=int, default=256, help="tokens of each eval text")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--batch-prompts", type=int, default=1, help="our loop: prompts at once")
    p.add_argument("--bf16", action="store_true", help="also time both loops with bf16 autocast")
    p.add_argument("--skip-naive", action="store_true", help="time only our loop")
    p.add_argument("--skip-fp32", action="store_true", help="with --bf16: time only bf16")
    p.add_argument(
        "--attn",
        default=None,
        help="attention implementation of the model (eager, sdpa; default: transformers')",
    )
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 bf16 dense)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs; best time kept")
    p.add_argument("--seed", type=int, default=0)
    return p


def random_gpt2(
    n_layer: int, n_embd: int, n_head: int, context: int, vocab: int, seed: int, tied: bool = True
):
    """A GPT-2 with seeded random weights and dropout off (the benchmarks' and the unit tests'
    model stand-in), bos = eos = 0; ``tied``: input embedding and LM head share weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=context,
        vocab_size=vocab,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def _model(args: argparse.Namespace):
    return random_gpt2(args.n_layer, args.n_embd, args.n_head, args.context, args.vocab, args.seed)


def random_jobs(
    prompts: int, steps: int, seq_len: int, eval_tokens: int, vocab: int, seed: int
) -> list:
    """``prompts`` jobs of ``steps`` random training sequences of ``seq_len`` tokens and a
    random eval text of ``eval_tokens`` tokens (4 bytes each), scored after the last step."""
    from testtime.finetune import PromptJob

    g = torch.Generator().manual_seed(seed + 1)
    jobs = []
    for pid in range(prompts):
        train = [torch.randint(0, vocab, (seq_len,), generator=g) for _ in range(steps)]
        eval_ids = torch.randint(0, vocab, (eval_tokens + 1,), generator=g)
        jobs.append(PromptJob(pid, train, eval_ids, n_bytes=4 * eval_tokens, eval_steps=(steps,)))
    return jobs


def _jobs(args: argparse.Namespace):
    return random_jobs(
        args.prompts, args.steps, args.context, args.eval_tokens, args.vocab, args.seed
    )


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_prompt_bpb(model, opt, job, context: int, device: torch.device, bf16: bool) -> float:
    """The textbook recipe for one prompt, the benchmarks' baseline: one ``opt`` step per
    training sequence with the loss via ``labels=``, then the eval text's bits per byte,
    scored in disjoint windows of ``context`` tokens (optionally all under bf16 autocast)."""
    model.train()
    for seq in job.train_ids:
        x = seq[None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    nll = 0.0
    ids = job.eval_ids.to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for lo in range(0, len(ids) - 1, context):
            x = ids[lo : lo + context + 1]
            logits = model(x[:-1][None]).logits[0].float()
            nll += torch.nn.functional.cross_entropy(logits, x[1:], reduction="sum").item()
    return bits_per_byte(nll, job.n_bytes)


def naive_loop(
    model, jobs, args, device: torch.device, autocast: bool = False
) -> tuple[float, list[float]]:
    """The textbook recipe (optionally under bf16 autocast), a deep copy of the model per
    prompt; returns (seconds, bpb per prompt)."""
    sync(device)
    t0 = time.perf_counter()
    out = []
    for job in jobs:
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=0.0)
        out.append(naive_prompt_bpb(m, opt, job, args.context, device, autocast))
    sync(device)
    return time.perf_counter() - t0, out


def our_loop(model, jobs, args, device: torch.device, autocast: bool):
    """Our Finetuner; returns (seconds, bpb per prompt)."""
    from testtime.adapters import select_trainable
    from testtime.finetune import Finetuner, TrainSettings

    settings = TrainSettings(optimizer="adamw", lr=args.lr)
    m = copy.deepcopy(model)
    tuner = Finetuner(
        m, select_trainable(m, "full"), settings, device=device, seed=args.seed, autocast=autocast
    )
    sync(device)
    t0 = time.perf_counter()
    rows = [r for job_rows in tuner.run(jobs, args.batch_prompts) for r in job_rows]
    sync(device)
    return time.perf_counter() - t0, [r.bpb for r in rows]


def main(argv: list[str] | None = None) -> int:
    from testtime.finetune import PromptJob

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.skip_fp32 and not args.bf16:
        parser.error("--skip-fp32 needs --bf16")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = _model(args)
    if args.attn:
        model.config._attn_implementation = args.attn
    n_params = sum(p.numel() for p in model.parameters())
    jobs = _jobs(args)
    print(
        f"device {device} threads {torch.get_num_threads()} | GPT-2 {args.n_layer}L "
        f"d={args.n_embd} ctx {args.context} vocab {args.vocab}: {n_params / 1e6:.2f}M params "
        f"| {args.prompts} prompts x {args.steps} steps x {args.context} tokens "
        f"| our batch {args.batch_prompts} | attention {model.config._attn_implementation}"
    )
    # (side, precision) -> timed function; the sides interleave, each keeps its best time
    runs = {}
    for prec in ([] if args.skip_fp32 else ["fp32"]) + (["bf16"] if args.bf16 else []):
        bf = prec == "bf16"
        runs["ours", prec] = lambda bf=bf, j=jobs: our_loop(model, j, args, device, autocast=bf)
        if not args.skip_naive:
            runs["naive", prec] = lambda bf=bf, j=jobs: naive_loop(model, j, args, device, bf)
    # warm-up (allocator, kernels): one batch (ours) or one prompt (naive) of 2 steps
    warm = [
        PromptJob(j.prompt_id, j.train_ids[:2], j.eval_ids, j.n_bytes, (min(2, args.steps),))
        for j in jobs[: args.batch_prompts]
    ]
    for side, prec in runs:
        if side == "ours":
            our_loop(model, warm, args, device, autocast=prec == "bf16")
        else:
            naive_loop(model, warm[:1], args, device, prec == "bf16")
    best = dict.fromkeys(runs, math.inf)
    bpb: dict = {}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            t, bpb[key] = fn()
            best[key] = min(best[key], t)
    steps = args.prompts * args.steps
    flops = args.prompts * (
        6 * n_params * args.steps * args.context + 2 * n_params * args.eval_tokens
    )
    out: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "params": n_params,
        "attention": model.config._attn_implementation,
        "args": vars(args),
        "runs": {},
    }
    for (side, prec), t in best.items():
        row = {"seconds": t, "prompts_per_s": args.prompts / t, "ms_per_step": 1e3 * t / steps}
        if device.type == "cuda":
            row["mfu"] = flops / t / (args.peak_tflops * 1e12)
        out["runs"][f"{side}_{prec}"] = row
        print(
            f"{side:<5} {prec}: {args.prompts / t:8.3f} prompts/s ({t:.2f} s, "
            f"{1e3 * t / steps:.1f} ms/step incl. eval)"
            + (f", MFU {row['mfu']:.1%} of {args.peak_tflops:g} TFLOP/s" if "mfu" in row else "")
        )
    for prec in ("fp32", "bf16"):
        if ("ours", prec) in best and ("naive", prec) in best:
            ratio = best["naive", prec] / best["ours", prec]
            diff = max(
                abs(a - b) for a, b in zip(bpb["ours", prec], bpb["naive", prec], strict=True)
            )
            out[f"speedup_{prec}"] = ratio
            out[f"max_bpb_diff_ours_naive_{prec}"] = diff
            print(f"speed-up ours/naive {prec}: {ratio:.2f}x | max |bpb ours - naive| = {diff:.2e}")
    if ("ours", "fp32") in best and ("ours", "bf16") in best:
        diff = max(
            abs(a - b) for a, b in zip(bpb["ours", "bf16"], bpb["ours", "fp32"], strict=True)
        )
        ratio = best["ours", "fp32"] / best["ours", "bf16"]
        out["bf16_over_fp32"] = ratio
        out["max_bpb_diff_bf16_fp32"] = diff
        print(f"ours bf16 autocast {ratio:.2f}x fp32 | max |bpb bf16 - fp32| = {diff:.2e}")
    if ("ours", "bf16") in best and ("naive", "fp32") in best:
        ratio = best["naive", "fp32"] / best["ours", "bf16"]
        out["speedup_ours_bf16_over_naive_fp32"] = ratio
        print(f"speed-up ours bf16 / naive fp32: {ratio:.2f}x")
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0
