"""Where a fine-tuning step's time goes: torch.profiler over our batched path and the naive
loop on the benchmark's model (default GPT-2 124M, context 1,024), GPU kernel time against wall.

    python scripts/gpu/profile-finetune.py --device cuda --batch-prompts 8 --steps 6 [--out DIR]

Prints, per side, wall time per step, the summed GPU kernel time per step (busy fraction) and
the top operators by GPU time and by CPU time; with --out also writes both tables.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def main(argv: list[str] | None = None) -> int:
    from testtime.adapters import select_trainable
    from testtime.benchmarks import finetune as bench
    from testtime.finetune import Finetuner, TrainSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-prompts", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--small", action="store_true", help="a toy model (to check the script)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    size = (
        "--n-layer 1 --n-embd 32 --n-head 2 --context 32 --vocab 64 --eval-tokens 32"
        if args.small
        else "--n-layer 12 --n-embd 768 --n-head 12 --context 1024 --vocab 50257 --eval-tokens 1024"
    )
    b = args.batch_prompts
    bargs = bench.build_parser().parse_args(
        size.split() + ["--prompts", str(b), "--steps", str(args.steps), "--device", args.device]
    )
    device = torch.device(args.device)
    model, jobs = bench._model(bargs), bench._jobs(bargs)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    m = copy.deepcopy(model)
    tuner = Finetuner(
        m, select_trainable(m, "full"), TrainSettings(optimizer="adamw", lr=5e-5), device=device
    )
    tuner.autocast = True
    sides = {
        f"ours batched x{b}": (lambda: tuner.run_batched(jobs), b * args.steps),
        "naive x1": (lambda: bench.naive_loop(model, jobs[:1], bargs, device, True), args.steps),
    }
    for name, (fn, prompt_steps) in sides.items():
        fn()  # warm-up
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
        events = prof.key_averages()
        # kernel rows only: operator rows repeat their kernels' time
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        gpu = sum(e.self_device_time_total for e in kernels) / 1e6
        print(
            f"\n##### {name}: {1e3 * wall / prompt_steps:.1f} ms per prompt-step (profiled), "
            f"GPU kernels {1e3 * gpu / prompt_steps:.1f} ms per prompt-step "
            f"= {gpu / wall:.0%} busy"
        )
        tables = []
        if cuda:
            try:
                tables.append(events.table(sort_by="self_device_time_total", row_limit=18))
            except (KeyError, AttributeError, ValueError):
                tables.append(events.table(sort_by="self_cuda_time_total", row_limit=18))
        tables.append(events.table(sort_by="self_cpu_time_total", row_limit=12))
        for t in tables:
            print(t)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            slug = name.split()[0]
            (Path(args.out) / f"profile_{slug}.txt").write_text("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
