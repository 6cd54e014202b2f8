"""`testtime report`: the bpb table, metrics, DVC plot data and figures from per-prompt results.

Example (docs/pipeline.md section 6)::

    testtime report --config C --per-prompt results/demo/per_prompt.parquet \\
        --selections data/demo/selections/sift.parquet \\
        --results-dir results/demo/ --figures-dir figures/demo/
"""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "write bpb.csv, metrics.json, the paper table and figures from per-prompt results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--per-prompt", required=True, help="results/<name>/per_prompt.parquet")
    parser.add_argument(
        "--selections",
        nargs="*",
        default=[],
        help="selections/<variant>.parquet of the SIFT variants (named by file stem)",
    )
    parser.add_argument("--results-dir", required=True, help="results/<name>/")
    parser.add_argument("--figures-dir", required=True, help="figures/<name>/")
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept results lacking methods or prompts: compare over the prompts every method "
        "has and record what is missing (metrics.json 'partial'); default: an error",
    )


def run(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    import pandas as pd

    from testtime import figures
    from testtime.io import AtomicGroup, check_output
    from testtime.report import build_report
    from testtime.selection.pipeline import check_selection_steps

    cfg = load_cli_config(args)
    res, fig = Path(args.results_dir), Path(args.figures_dir)
    check_output(res, is_dir=True, flag="--results-dir")
    check_output(fig, is_dir=True, flag="--figures-dir")
    for path in [args.per_prompt, *args.selections]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input {path!r} does not exist")
    selections = {Path(p).stem: pd.read_parquet(p) for p in args.selections}
    for path, table in zip(args.selections, selections.values(), strict=True):
        check_selection_steps(table, cfg["select"]["n"], f"--selections {path!r}")
    rep = build_report(
        cfg, pd.read_parquet(args.per_prompt), selections, allow_partial=args.allow_partial
    )
    in_table = set(rep.bpb["method"])
    methods = [v for v in rep.rows if v.name in in_table]
    labels = {v.name: v.label for v in rep.rows}

    outputs = {
        res / "bpb.csv": rep.bpb.to_csv(index=False, float_format="%.6g"),
        res / "uncertainty.csv": rep.uncertainty.to_csv(index=False, float_format="%.6g"),
        res / "bpb_vs_steps.csv": rep.steps[["method", "steps", "bpb_mean"]].to_csv(
            index=False, float_format="%.6g"
        ),
        fig / "bpb_table.md": figures.table_markdown(rep.bpb, methods),
        fig / "bpb_table.tex": figures.table_latex(rep.bpb, methods),
    }
    # Every file goes to a temporary first; all are renamed only once all are written, so a
    # failure (full disk, read-only directory) leaves the previous report whole.
    with AtomicGroup() as out:
        for path, text in outputs.items():
            out.write_text(path, text)
        out.write_json(res / "metrics.json", rep.metrics)
        figures.plot_uncertainty(
            rep.uncertainty,
            cfg["report"]["bins"],
            rep.metrics["sigma_bpb_pearson"] or float("nan"),
            rep.metrics["sigma_bpb_spearman"] or float("nan"),
            [fig / "uncertainty_vs_error.png", fig / "uncertainty_vs_error.pdf"],
            group=out,
        )
        figures.plot_bpb_vs_steps(
            rep.steps, labels, [fig / "bpb_vs_steps.png", fig / "bpb_vs_steps.pdf"], group=out
        )
        figures.plot_adaptive(
            rep.steps,
            rep.adaptive,
            [fig / "adaptive_compute.png", fig / "adaptive_compute.pdf"],
            group=out,
        )
        if cfg["select"]["lam_sweep"]:
            bpb = rep.metrics["bpb"]
            refs = {labels[m]: bpb[m] for m in ("nn", "base") if m in bpb}
            figures.plot_lambda_sweep(rep.lambda_sweep, refs, [fig / "lambda_sweep.png"], group=out)
        if cfg["select"]["memory_fractions"]:
            out.write_text(fig / "memory_curve.md", figures.memory_curve_markdown(rep.memory_curve))
            figures.plot_memory_curve(rep.memory_curve, [fig / "memory_curve.png"], group=out)
        extra = {"per_prompt": args.per_prompt, "partial": rep.metrics["partial"]}
        for path in [res / "bpb.csv", res / "metrics.json"]:
            out.write_run_json(path, cfg, seed=cfg["seed"], extra=extra)

    summary = rep.bpb[rep.bpb["domain"] == "all"]
    print(
        " | ".join(
            f"{labels[r.method]} {r.bpb_mean:.4f}±{r.bpb_se:.4f}" for r in summary.itertuples()
        )
    )
    for r in rep.memory_curve.itertuples():
        print(f"memory {100 * r.fraction:g}%: SIFT - NN {r.diff:+.4f} ± {r.diff_se:.4f}")
    for key in ("sift-nn", "sift-base"):
        if key in rep.metrics["paired"]:
            d = rep.metrics["paired"][key]
            print(
                f"paired {key}: {d['mean']:+.4f} ± {d['se'] or float('nan'):.4f} "
                f"(better on {100 * d['frac_better']:.0f}% of {d['n']} prompts)"
            )
    bad = {m: p for m, p in rep.nan_prompts.items() if p}
    if bad:
        print(f"NaN loss, prompts left out of every method: {bad}", file=sys.stderr)
    if rep.metrics["partial"]:
        print(f"--allow-partial: compared without {rep.metrics['partial']}", file=sys.stderr)
