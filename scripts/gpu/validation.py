"""The GPU validation run (issue 12) as one prepared script: benchmarks and workflow stages on
one CUDA device, each item timed, failures caught and reported, numbers gathered in one JSON.

Run through ``scripts/gpu/validate.sh OUT`` (which also runs the GPU tests), or directly:

    python scripts/gpu/validation.py --out OUT [--only selection-default finetune-b8 ...]

Items (``--list``): selection at the issue's CPU setting with activeft on the same GPU, and at
the GPU target shape (10,000 prompts, K=1,000, d=1,024, N=50: GPU-resident and end to end from
pinned host memory, kernel matrix on and off, activeft on a query subset); fine-tuning of a
GPT-2-small-sized model (124M, random weights, context 1,024, 50 steps per prompt) in our
batched path against the naive Hugging Face loop, bf16 and fp32, at 8, 16 and 32 prompts per
batch; the workflow's select/finetune/report stages on ``data/tiny`` and ``data/demo`` (made
beforehand on any machine) with ``device: cuda``, and the demo's pre-training on the GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/gpu/ importable (stages)

# name -> (benchmark, its arguments); SHAPES fills in the sizes (GPU run or --smoke on a CPU)
SHAPES = {
    "gpu": {
        "target": "--batch 10000 --k 1000 --dim 1024 --n 50",
        "default": "",
        "subset": "16",
        "gpt2": "--n-layer 12 --n-embd 768 --n-head 12 --context 1024 --vocab 50257 "
        "--eval-tokens 1024 --steps 50 --repeats 1 --peak-tflops 989",
        "b": (8, 16, 32, 24),
        "tiny_batch": 8,
        "demo_batch": 25,
    },
    "smoke": {
        "target": "--batch 40 --k 30 --dim 16 --n 5",
        "default": "--batch 4 --k 20 --dim 8 --n 5",
        "subset": "2",
        "gpt2": "--n-layer 1 --n-embd 32 --n-head 2 --context 32 --vocab 64 "
        "--eval-tokens 32 --steps 2 --repeats 1",
        "b": (2, 3, 4, 3),
        "tiny_batch": 2,
        "demo_batch": 4,
    },
}
ITEMS = {
    "selection-default": ("selection", "{default} --baseline activeft --repeats 3"),
    "selection-target-device": (
        "selection",
        "{target} --input-dtype float16 --inputs device --baseline none --repeats 2",
    ),
    "selection-target-device-notf32": (
        "selection",
        "{target} --input-dtype float16 --inputs device --no-tf32 --baseline none --repeats 2",
    ),
    "selection-target-device-nogram": (
        "selection",
        "{target} --input-dtype float16 --inputs device --gram off --baseline none --repeats 2",
    ),
    "selection-target-host": (
        "selection",
        "{target} --input-dtype float16 --inputs host --repeats 2 --baseline activeft "
        "--baseline-batch {subset}",
    ),
    "finetune-b8": ("finetune", "{gpt2} --prompts {b0} --batch-prompts {b0} --bf16"),
    "finetune-b8-bf16": (
        "finetune",
        "{gpt2} --prompts {b0} --batch-prompts {b0} --bf16 --skip-fp32",
    ),
    "finetune-b24": (
        "finetune",
        "{gpt2} --prompts {b3} --batch-prompts {b3} --bf16 --skip-fp32 --skip-naive",
    ),
    "finetune-b8-eager": (
        "finetune",
        "{gpt2} --prompts {b0} --batch-prompts {b0} --bf16 --skip-fp32 --skip-naive --attn eager",
    ),
    "finetune-b16": (
        "finetune",
        "{gpt2} --prompts {b1} --batch-prompts {b1} --bf16 --skip-fp32 --skip-naive",
    ),
    "finetune-b32": (
        "finetune",
        "{gpt2} --prompts {b2} --batch-prompts {b2} --bf16 --skip-fp32 --skip-naive",
    ),
}


def _bench_item(name: str, shapes: dict, device: str):
    import importlib

    bench, template = ITEMS[name]
    fields = {k: v for k, v in shapes.items() if isinstance(v, str)}
    fields |= {f"b{i}": str(b) for i, b in enumerate(shapes["b"])}
    argv = template.format(**fields).split() + ["--device", device]
    if bench == "selection" and "--baseline" in argv and "none" not in argv:
        argv += ["--baseline-device", device]
    return importlib.import_module(f"testtime.benchmarks.{bench}").main, argv


def _stages(name: str, pretrain: bool = False):
    def run(json_path: str, out: Path, shapes: dict, device: str) -> int:
        import stages

        data = ROOT / "data" / name
        batch = shapes[f"{name}_batch"]
        status = stages.main(
            ["--data", str(data), "--device", device, "--batch-prompts", str(batch),
             "--out", str(out / name), "--json", json_path]
        )  # fmt: skip
        summary = json.loads(Path(json_path).read_text())
        summary |= _compare_selections(data / "selections", out / name / "selections")
        summary |= _compare_bpb(
            ROOT / "results" / name / "per_prompt.parquet",
            out / name / "results" / "per_prompt.parquet",
        )
        if pretrain:
            summary["pretrain_s"] = _pretrain(data, out / name)
        Path(json_path).write_text(json.dumps(summary, indent=1))
        return status

    return run


def _compare_selections(cpu_dir: Path, gpu_dir: Path) -> dict:
    """Per method: prompts whose GPU selection (memory ids, in order) equals the CPU one, and
    the largest variance difference."""
    import pandas as pd

    out = {}
    for gpu_file in sorted(gpu_dir.glob("*.parquet")):
        cpu_file = cpu_dir / gpu_file.name
        if not cpu_file.exists():
            continue
        a, b = pd.read_parquet(cpu_file), pd.read_parquet(gpu_file)
        same = [
            ga["memory_id"].tolist() == gb["memory_id"].tolist()
            for (_, ga), (_, gb) in zip(a.groupby("prompt_id"), b.groupby("prompt_id"), strict=True)
        ]
        dv = (a["variance"] - b["variance"]).abs().max() if len(a) == len(b) else float("nan")
        out[f"select_{gpu_file.stem}"] = {
            "prompts_same": int(sum(same)),
            "prompts": len(same),
            "max_abs_var_diff": float(dv),
        }
        print(f"selection {gpu_file.stem}: same as the reference run for {sum(same)}/{len(same)} "
              f"prompts, max |Δσ²| {dv:.2e}")  # fmt: skip
    return {"selection_vs_cpu": out}


def _compare_bpb(reference: Path, ours: Path) -> dict:
    """Per method: largest and mean |Δ bpb| against the reference run's per-prompt results
    (results/<name>/per_prompt.parquet of a CPU run, when present)."""
    import pandas as pd

    if not reference.exists() or not ours.exists():
        return {}
    keys = ["prompt_id", "method", "steps"]
    merged = pd.read_parquet(reference).merge(pd.read_parquet(ours), on=keys, suffixes=("_ref", ""))
    merged["diff"] = (merged["bpb"] - merged["bpb_ref"]).abs()
    out = {}
    for method, g in merged.groupby("method"):
        out[method] = {
            "rows": len(g),
            "max": float(g["diff"].max()),
            "mean": float(g["diff"].mean()),
        }
        print(f"bpb {method}: max |Δ| {out[method]['max']:.2e}, mean {out[method]['mean']:.2e} "
              f"over {len(g)} rows against {reference}")  # fmt: skip
    return {"bpb_vs_reference": out}


def _pretrain(data: Path, out: Path) -> float:
    from testtime.cli import main as cli

    start = time.perf_counter()
    status = cli(
        ["pretrain", "--config", str(out / "config.yaml"), "--tokenizer", str(data / "tokenizer"),
         "--pretrain", str(data / "pretrain.parquet"), "--checkpoint-dir", str(out / "ckpt"),
         "--out", str(out / "base_model_gpu")]
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"pretrain: {seconds:.1f} s (status {status})")
    if status:
        raise RuntimeError(f"pretrain failed ({status})")
    return seconds


STAGE_ITEMS = {
    "workflow-tiny": _stages("tiny"),
    "workflow-demo": _stages("demo", pretrain=True),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="+", default=None, help="item names (default: all)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--smoke", action="store_true", help="every item at toy sizes (checks the script on a CPU)"
    )
    args = p.parse_args(argv)
    shapes = SHAPES["smoke" if args.smoke else "gpu"]
    names = list(ITEMS) + list(STAGE_ITEMS)
    if args.list:
        print("\n".join(names))
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-validation-"))
    cuda = torch.device(args.device).type == "cuda"
    summary: dict = {
        "device": torch.cuda.get_device_name(args.device) if cuda else args.device,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "items": {},
    }
    failed = 0
    threads = torch.get_num_threads()  # the selection benchmark sets its own
    for name in args.only or names:
        print(f"\n=== {name} ({time.strftime('%H:%M:%S')})", flush=True)
        json_path = str(work / f"{name}.json")
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        record: dict = {}
        try:
            if name in ITEMS:
                fn, item_argv = _bench_item(name, shapes, args.device)
                print("args:", " ".join(item_argv))
                status = fn([*item_argv, "--json", json_path])
            else:
                status = STAGE_ITEMS[name](json_path, work, shapes, args.device)
            record["status"] = status
            if Path(json_path).exists():
                record["result"] = json.loads(Path(json_path).read_text())
        except BaseException as exc:  # report every failure and go on
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            record["status"] = "error"
            record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        record["wall_s"] = time.perf_counter() - start
        failed += record["status"] != 0
        print(f"--- {name}: status {record['status']} in {record['wall_s']:.1f} s", flush=True)
        summary["items"][name] = record
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        gc.collect()
        torch.set_num_threads(threads)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
