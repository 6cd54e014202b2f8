"""Benchmark: our test-time fine-tuning loop against the naive one-prompt Hugging Face loop.

Both sides fine-tune the same randomly initialised GPT-2 (default: the demo size, 4 layers,
d=256, context 256, vocab 8192, 5.3M parameters; dropout off so both must agree) for P prompts
x N steps on identical token ids, AdamW, batch size 1, and score the prompt's evaluation text in
bits per byte after the last step. Printed: prompts per second of each side, the ratio, the
largest bpb difference between the two (they must agree), and with ``--bf16`` the same loop
under bf16 autocast. On CUDA also the model FLOPs utilisation (MFU) of our loop:
6·params·train tokens + 2·params·eval tokens over time, against ``--peak-tflops``.

* ours: :class:`testtime.finetune.Finetuner` (base weights restored from a snapshot per
  prompt, a fresh optimizer, eval in disjoint windows; ``--batch-prompts B`` uses the vmap path);
* naive: ``copy.deepcopy(model)`` per prompt, ``torch.optim.AdamW``, loss via ``labels=``.

Run::

    python bench/finetune.py                         # CPU, 8 prompts x 10 steps, demo model
    testtime bench finetune --bf16 --threads 2
    testtime bench finetune --device cuda --n-layer 12 --n-embd 768 --context 1024 \\
        --vocab 50257 --batch-prompts 8 --prompts 32 --bf16
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/finetune.py", description=__doc__.splitlines()[0])
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
    p.add_argument("--bf16", action="store_true", help="also time our loop with bf16 autocast")
    p.add_argument("--skip-naive", action="store_true", help="time only our loop")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 bf16 dense)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs; best time kept")
    p.add_argument("--seed", type=int, default=0)
    return p


def _model(args: argparse.Namespace):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        n_head=args.n_head,
        n_positions=args.context,
        vocab_size=args.vocab,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(args.seed)
    return GPT2LMHeadModel(cfg)


def _jobs(args: argparse.Namespace):
    from testtime.finetune import PromptJob

    g = torch.Generator().manual_seed(args.seed + 1)
    jobs = []
    for pid in range(args.prompts):
        train = [
            torch.randint(0, args.vocab, (args.context,), generator=g) for _ in range(args.steps)
        ]
        eval_ids = torch.randint(0, args.vocab, (args.eval_tokens + 1,), generator=g)
        jobs.append(
            PromptJob(pid, train, eval_ids, n_bytes=4 * args.eval_tokens, eval_steps=(args.steps,))
        )
    return jobs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_loop(model, jobs, args, device: torch.device) -> tuple[float, list[float]]:
    """The textbook recipe; returns (seconds, bpb per prompt)."""
    _sync(device)
    t0 = time.perf_counter()
    out = []
    for job in jobs:
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=0.0)
        m.train()
        for seq in job.train_ids:
            x = seq[None].to(device)
            loss = m(x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        nll = 0.0
        ids = job.eval_ids.to(device)
        with torch.no_grad():
            for lo in range(0, len(ids) - 1, args.context):
                x = ids[lo : lo + args.context + 1]
                logits = m(x[:-1][None]).logits[0]
                nll += torch.nn.functional.cross_entropy(logits, x[1:], reduction="sum").item()
        out.append(nll / (math.log(2) * job.n_bytes))
    _sync(device)
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
    _sync(device)
    t0 = time.perf_counter()
    rows = [r for job_rows in tuner.run(jobs, args.batch_prompts) for r in job_rows]
    _sync(device)
    return time.perf_counter() - t0, [r.bpb for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = _model(args)
    n_params = sum(p.numel() for p in model.parameters())
    jobs = _jobs(args)
    print(
        f"device {device} threads {torch.get_num_threads()} | GPT-2 {args.n_layer}L "
        f"d={args.n_embd} ctx {args.context} vocab {args.vocab}: {n_params / 1e6:.2f}M params "
        f"| {args.prompts} prompts x {args.steps} steps x {args.context} tokens"
    )
    our_loop(model, jobs[:1], args, device, autocast=False)  # warm-up (allocator, kernels)
    if not args.skip_naive:
        naive_loop(model, jobs[:1], args, device)
    # interleave the sides and keep each one's best time: the machine may be shared
    t_ours = t_naive = t_bf = math.inf
    for _ in range(args.repeats):
        t, bpb_ours = our_loop(model, jobs, args, device, autocast=False)
        t_ours = min(t_ours, t)
        if not args.skip_naive:
            t, bpb_naive = naive_loop(model, jobs, args, device)
            t_naive = min(t_naive, t)
        if args.bf16:
            t, bpb_bf = our_loop(model, jobs, args, device, autocast=True)
            t_bf = min(t_bf, t)
    steps = args.prompts * args.steps
    print(
        f"ours  fp32: {args.prompts / t_ours:7.3f} prompts/s ({t_ours:.1f} s, "
        f"{1e3 * t_ours / steps:.0f} ms/step incl. eval)"
    )
    if not args.skip_naive:
        diff = max(abs(a - b) for a, b in zip(bpb_ours, bpb_naive, strict=True))
        print(
            f"naive fp32: {args.prompts / t_naive:7.3f} prompts/s ({t_naive:.1f} s, "
            f"{1e3 * t_naive / steps:.0f} ms/step incl. eval)"
        )
        print(f"speed-up ours/naive: {t_naive / t_ours:.2f}x | max |bpb ours - naive| = {diff:.2e}")
    if args.bf16:
        diff = max(abs(a - b) for a, b in zip(bpb_ours, bpb_bf, strict=True))
        print(
            f"ours  bf16 autocast: {args.prompts / t_bf:7.3f} prompts/s ({t_bf:.1f} s, "
            f"{1e3 * t_bf / steps:.0f} ms/step), {t_ours / t_bf:.2f}x fp32 "
            f"| max |bpb bf16 - fp32| = {diff:.2e}"
        )
    if device.type == "cuda":
        flops = args.prompts * (
            6 * n_params * args.steps * args.context + 2 * n_params * args.eval_tokens
        )
        runs = {"fp32": t_ours} | ({"bf16": t_bf} if args.bf16 else {})
        for name, t in runs.items():
            mfu = flops / t / (args.peak_tflops * 1e12)
            print(f"MFU ours {name}: {mfu:.1%} of {args.peak_tflops:g} TFLOP/s")
    return 0
