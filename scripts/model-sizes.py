#!/usr/bin/env python3
"""Model-size ablation: base bpb and SIFT's and NN's relative gain per base-model size.

Reads the report of each size's run (config/models.yaml, layered with config/models-2x.yaml or
config/models-4x.yaml: the demo's corpus, memory, prompts and settings, SIFT and NN only) and
writes one table and one figure:

    .venv/bin/python scripts/model-sizes.py                      # the three demo-models runs
    .venv/bin/python scripts/model-sizes.py --runs demo-models-1x demo-models-2x

Parameters are counted from each run's data/<name>/base_model (tied embeddings once). The
relative gain is 100 − bpb in % of the base model (metrics.json ``bpb_relative_pct``, the
paper's unit), with the bootstrap SE of that ratio; SIFT − NN is the paired, byte-weighted
difference (``paired_byte_weighted``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = ("demo-models-0.5x", "demo-models-1x", "demo-models-2x", "demo-models-4x")


def count_parameters(model_dir: Path) -> int:
    """Distinct parameters of the causal LM in ``model_dir`` (a tied head counted once)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def row(name: str, root: Path = REPO) -> dict:
    """One size's numbers from results/<name>/metrics.json and data/<name>/base_model."""
    metrics = json.loads((root / "results" / name / "metrics.json").read_text())
    rel, rel_se = metrics["bpb_relative_pct"], metrics["bpb_relative_se_pct"]
    diff = metrics["paired_byte_weighted"]["sift-nn"]
    return {
        "name": name,
        "params": count_parameters(root / "data" / name / "base_model"),
        "base_bpb": metrics["bpb"]["base"],
        "base_se": metrics["bpb_se"]["base"],
        **{f"{m}_bpb": metrics["bpb"][m] for m in ("nn", "sift")},
        **{f"{m}_pct": rel[m] for m in ("nn", "sift")},
        **{f"{m}_pct_se": rel_se[m] for m in ("nn", "sift")},
        "diff": diff["mean"],
        "diff_se": diff["se"],
        "n": metrics["n_prompts"]["base"],
    }


def markdown(rows: list[dict]) -> str:
    """The ablation table: one line per model size."""
    base = rows[0]["params"]
    lines = [
        "| model | parameters | base bpb | NN % of base | SIFT % of base | SIFT − NN (bpb) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.1f}M ({r['params'] / base:.2f}x) "
            f"| {r['base_bpb']:.3f} ± {r['base_se']:.3f} "
            f"| {r['nn_pct']:.1f} ± {r['nn_pct_se']:.1f} "
            f"| {r['sift_pct']:.1f} ± {r['sift_pct_se']:.1f} "
            f"| {r['diff']:+.3f} ± {r['diff_se']:.3f} |"
        )
    note = (
        f"\nSame corpus, memory, {rows[0]['n']} prompts and settings; base models pre-trained "
        "by the workflow "
        "on the same pretrain split with the same steps. bpb ± bootstrap SE over prompts; % of "
        "base = 100 · method bpb / base bpb (SE of the ratio); SIFT − NN paired and "
        "byte-weighted (the table's statistic).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot(rows: list[dict], paths: list[Path]) -> None:
    """Base bpb (left) and SIFT's and NN's relative gain, 100 − % of base (right), per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from testtime.figures import REPRODUCIBLE_METADATA

    params = [r["params"] / 1e6 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    left.errorbar(params, [r["base_bpb"] for r in rows], yerr=[r["base_se"] for r in rows],
                  fmt="o-", capsize=3, color="tab:gray", label="base model")  # fmt: skip
    left.set_ylabel("base model bits per byte")
    for m, color in (("nn", "tab:orange"), ("sift", "tab:blue")):
        right.errorbar(params, [100 - r[f"{m}_pct"] for r in rows],
                       yerr=[r[f"{m}_pct_se"] for r in rows], fmt="o-", capsize=3, color=color,
                       label=m.upper())  # fmt: skip
    right.set_ylabel("relative gain, 100 − % of base")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("base model parameters (millions, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Test-time fine-tuning gains against base-model size")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = p.suffix[1:]
        fig.savefig(p, format=fmt, bbox_inches="tight", metadata=REPRODUCIBLE_METADATA[fmt])
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="run names, smallest first")
    parser.add_argument("--out", default="figures/demo-models", help="output directory")
    parser.add_argument("--root", type=Path, default=REPO, help="checkout holding the runs")
    args = parser.parse_args()
    rows = [row(name, args.root) for name in args.runs]
    out = args.root / args.out
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows)
    (out / "model_sizes.md").write_text(text)
    (out / "model_sizes.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, [out / "model_sizes.png", out / "model_sizes.pdf"])
    print(text)
    gains = [(100 - r["sift_pct"], 100 - r["nn_pct"]) for r in rows]
    trend = all(b[0] > a[0] and b[1] > a[1] for a, b in zip(gains, gains[1:], strict=False))
    print(f"relative gains grow with every size step (SIFT and NN): {trend}")
    if any(not math.isfinite(g) for pair in gains for g in pair):
        print("warning: a relative gain is undefined")


if __name__ == "__main__":
    main()
