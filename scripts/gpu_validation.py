"""The GPU validation run (issue 12) as one prepared script: benchmarks and workflow stages on
one CUDA device, each item timed, failures caught and reported, numbers gathered in one JSON.

Run through ``scripts/gpu-validation.sh OUT`` (which also runs the GPU tests), or directly:

    python scripts/gpu_validation.py --out OUT [--only selection-default finetune-b8 ...]

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
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # scripts/ importable (gpu_stages)

TARGET = ["--batch", "10000", "--k", "1000", "--dim", "1024", "--n", "50"]
GPT2_SMALL = [
    "--device", "cuda", "--n-layer", "12", "--n-embd", "768", "--n-head", "12",
    "--context", "1024", "--vocab", "50257", "--eval-tokens", "1024", "--steps", "50",
    "--repeats", "1", "--peak-tflops", "989",
]  # fmt: skip


def _selection(*argv: str):
    from testtime.benchmarks.selection import main

    return main, ["--device", "cuda", *argv]


def _finetune(b: int, *argv: str):
    from testtime.benchmarks.finetune import main

    return main, [*GPT2_SMALL, "--prompts", str(b), "--batch-prompts", str(b), "--bf16", *argv]


ITEMS = {
    "selection-default": lambda: _selection(
        "--baseline", "activeft", "--baseline-device", "cuda", "--repeats", "3"
    ),
    "selection-target-device": lambda: _selection(
        *TARGET,
        "--input-dtype",
        "float16",
        "--inputs",
        "device",
        "--baseline",
        "none",
        "--repeats",
        "2",
    ),  # fmt: skip
    "selection-target-device-notf32": lambda: _selection(
        *TARGET,
        "--input-dtype",
        "float16",
        "--inputs",
        "device",
        "--no-tf32",
        "--baseline",
        "none",
        "--repeats",
        "2",
    ),  # fmt: skip
    "selection-target-device-nogram": lambda: _selection(
        *TARGET,
        "--input-dtype",
        "float16",
        "--inputs",
        "device",
        "--gram",
        "off",
        "--baseline",
        "none",
        "--repeats",
        "2",
    ),  # fmt: skip
    "selection-target-host": lambda: _selection(
        *TARGET,
        "--input-dtype",
        "float16",
        "--inputs",
        "host",
        "--repeats",
        "2",
        "--baseline",
        "activeft",
        "--baseline-device",
        "cuda",
        "--baseline-batch",
        "16",
    ),  # fmt: skip
    "finetune-b8": lambda: _finetune(8),
    "finetune-b8-eager": lambda: _finetune(8, "--attn", "eager", "--skip-fp32", "--skip-naive"),
    "finetune-b16": lambda: _finetune(16, "--skip-fp32", "--skip-naive"),
    "finetune-b32": lambda: _finetune(32, "--skip-fp32", "--skip-naive"),
}


def _stages(name: str, batch_prompts: int, pretrain: bool = False):
    def run(json_path: str, out: Path) -> int:
        import gpu_stages

        data = ROOT / "data" / name
        status = gpu_stages.main(
            ["--data", str(data), "--device", "cuda", "--batch-prompts", str(batch_prompts),
             "--out", str(out / name), "--json", json_path]
        )  # fmt: skip
        summary = json.loads(Path(json_path).read_text())
        summary |= _compare_selections(data / "selections", out / name / "selections")
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
        print(f"selection {gpu_file.stem}: GPU = CPU for {sum(same)}/{len(same)} prompts, "
              f"max |Δσ²| {dv:.2e}")  # fmt: skip
    return {"selection_vs_cpu": out}


def _pretrain(data: Path, out: Path) -> float:
    from testtime.cli import main as cli

    start = time.perf_counter()
    status = cli(
        ["pretrain", "--config", str(out / "config.yaml"), "--tokenizer", str(data / "tokenizer"),
         "--pretrain", str(data / "pretrain.parquet"), "--checkpoint-dir", str(out / "ckpt"),
         "--out", str(out / "base_model_gpu")]
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"pretrain on GPU: {seconds:.1f} s (status {status})")
    if status:
        raise RuntimeError(f"pretrain failed ({status})")
    return seconds


STAGE_ITEMS = {
    "workflow-tiny": _stages("tiny", 8),
    "workflow-demo": _stages("demo", 25, pretrain=True),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="+", default=None, help="item names (default: all)")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    names = list(ITEMS) + list(STAGE_ITEMS)
    if args.list:
        print("\n".join(names))
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu-validation")
    summary: dict = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "items": {},
    }
    failed = 0
    for name in args.only or names:
        print(f"\n=== {name} ({time.strftime('%H:%M:%S')})", flush=True)
        json_path = str(work / f"{name}.json")
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        record: dict = {}
        try:
            if name in ITEMS:
                fn, item_argv = ITEMS[name]()
                print("args:", " ".join(item_argv))
                status = fn([*item_argv, "--json", json_path])
            else:
                status = STAGE_ITEMS[name](json_path, work)
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
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
