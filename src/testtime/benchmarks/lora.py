"""Benchmark: batched per-prompt LoRA against the naive one-prompt peft loop, in one run.

Both sides fine-tune LoRA adapters (peft, rank ``--r`` on ``--targets``) of the same randomly
initialised GPT-2 for P prompts x N steps on identical token ids (Adam, one sequence of
``--seq-len`` tokens per step, dropout off) and score each prompt's evaluation text in bits per
byte after the last step. Printed: prompts per second of each side, the ratio, the largest bpb
difference (the two must agree), and on CUDA the model FLOPs utilisation of the batched path:
(4·params·train tokens + 2·params·eval tokens) / time / ``--peak-tflops`` (frozen base: the
backward pass computes activation gradients, 2·params per token, but no weight gradients).

* batched: :meth:`testtime.finetune.Finetuner.run_lora`, ``--batch-prompts`` B prompts at
  once (one frozen-base forward per step for all B, per-prompt factors as batched matmuls);
* naive: one peft adapter, one prompt at a time: reset the factors, fresh ``torch.optim.Adam``,
  loss via ``labels=``, eval in disjoint windows.

Presets: ``demo`` (the demo model: 4 layers, d=256, context 256, vocab 8192) and
``gpt2-small`` (12 layers, d=768, context 1024, vocab 50257, 124M parameters). Run::

    testtime bench lora                                    # CPU, demo model, B=16
    testtime bench lora --preset gpt2-small --prompts 4 --steps 2 --batch-prompts 4
    testtime bench lora --device cuda --bf16 --preset gpt2-small --prompts 64 \\
        --batch-prompts 32 --seq-len 512                   # GPU: target >= 5x at B=32
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from testtime.benchmarks.finetune import naive_prompt_bpb, random_gpt2, random_jobs, sync

PRESETS = {
    "demo": {"n_layer": 4, "n_embd": 256, "n_head": 4, "context": 256, "vocab": 8192},
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "context": 1024, "vocab": 50257},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testtime bench lora", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="model size")
    p.add_argument("--prompts", type=int, default=16, help="test prompts P")
    p.add_argument("--steps", type=int, default=3, help="gradient steps per prompt N")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per training sequence")
    p.add_argument("--eval-tokens", type=int, default=256, help="tokens of each eval text")
    p.add_argument("--batch-prompts", type=int, default=16, help="B: prompts per batch")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--targets", default="c_attn", help="comma-separated LoRA target modules")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs; best time kept")
    p.add_argument("--skip-naive", action="store_true", help="time only the batched path")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 bf16 dense)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _model(args: argparse.Namespace):
    from testtime.adapters import wrap_lora

    size = PRESETS[args.preset]
    base = random_gpt2(
        size["n_layer"], size["n_embd"], size["n_head"], size["context"], size["vocab"], args.seed
    )
    n_params = sum(p.numel() for p in base.parameters())
    lora = {"r": args.r, "alpha": 2 * args.r, "dropout": 0.0, "target_modules": args.targets}
    return wrap_lora(base, lora | {"target_modules": args.targets.split(",")}, args.seed), n_params


def _jobs(args: argparse.Namespace, vocab: int):
    return random_jobs(args.prompts, args.steps, args.seq_len, args.eval_tokens, vocab, args.seed)


def naive_loop(model, jobs, args, device: torch.device) -> tuple[float, list[float]]:
    """One peft adapter, one prompt at a time; returns (seconds, bpb per prompt)."""
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    init = [p.detach().clone() for p in lora]
    context = model.config.n_positions
    sync(device)
    t0 = time.perf_counter()
    out = []
    for job in jobs:
        with torch.no_grad():
            for p, v in zip(lora, init, strict=True):
                p.copy_(v)
        opt = torch.optim.Adam(lora, lr=args.lr)
        out.append(naive_prompt_bpb(model, opt, job, context, device, args.bf16))
    sync(device)
    with torch.no_grad():
        for p, v in zip(lora, init, strict=True):
            p.copy_(v)
    return time.perf_counter() - t0, out


def batched_loop(model, jobs, args, device: torch.device) -> tuple[float, list[float]]:
    """:meth:`Finetuner.run_lora` over chunks of B prompts; returns (seconds, bpb per prompt)."""
    from testtime.adapters import select_trainable
    from testtime.finetune import Finetuner, TrainSettings

    tuner = Finetuner(
        model,
        select_trainable(model, "lora"),
        TrainSettings(lr=args.lr),
        device=device,
        autocast=args.bf16,
    )
    sync(device)
    t0 = time.perf_counter()
    rows = []
    for lo in range(0, len(jobs), args.batch_prompts):
        for job_rows in tuner.run_lora(jobs[lo : lo + args.batch_prompts]):
            rows += job_rows
    sync(device)
    return time.perf_counter() - t0, [r.bpb for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("prompts", "steps", "batch_prompts", "repeats", "seq_len", "eval_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.seq_len > PRESETS[args.preset]["context"]:
        parser.error(f"--seq-len exceeds the context of preset {args.preset}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, n_params = _model(args)
    model.to(device)
    jobs = _jobs(args, PRESETS[args.preset]["vocab"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({name}) threads {torch.get_num_threads()} | {args.preset}: "
        f"{n_params / 1e6:.1f}M params, LoRA r={args.r} on {args.targets} | {args.prompts} "
        f"prompts x {args.steps} steps x {args.seq_len} tokens, B={args.batch_prompts}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}"
    )
    warm = jobs[: min(len(jobs), args.batch_prompts)]  # allocator, kernels, peft warnings
    batched_loop(model, warm, args, device)
    if not args.skip_naive:
        naive_loop(model, jobs[:1], args, device)
    t_b = t_n = math.inf
    for _ in range(args.repeats):  # interleave the sides; keep each one's best time
        t, bpb_b = batched_loop(model, jobs, args, device)
        t_b = min(t_b, t)
        if not args.skip_naive:
            t, bpb_n = naive_loop(model, jobs, args, device)
            t_n = min(t_n, t)
    seqs = args.prompts * args.steps
    print(
        f"batched: {args.prompts / t_b:8.3f} prompts/s ({t_b:.2f} s, "
        f"{1e3 * t_b / seqs:.1f} ms per training sequence incl. eval)"
    )
    if not args.skip_naive:
        print(
            f"naive  : {args.prompts / t_n:8.3f} prompts/s ({t_n:.2f} s, "
            f"{1e3 * t_n / seqs:.1f} ms per training sequence incl. eval)"
        )
        diff = max(abs(a - b) for a, b in zip(bpb_b, bpb_n, strict=True))
        print(f"speed-up batched/naive: {t_n / t_b:.2f}x | max |bpb batched - naive| = {diff:.2e}")
    if device.type == "cuda":
        tokens = args.prompts * args.steps * args.seq_len
        flops = 4 * n_params * tokens + 2 * n_params * args.prompts * args.eval_tokens
        print(f"MFU batched: {flops / t_b / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:g}")
        if not args.skip_naive:
            print(f"MFU naive:   {flops / t_n / (args.peak_tflops * 1e12):.1%}")
    return 0
