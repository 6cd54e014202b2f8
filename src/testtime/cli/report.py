"""`testtime report`: the bpb table, metrics, DVC plot data and figures from per-prompt results.

Every output path is a flag (the workflow's report rule passes its outputs); a figure flag takes
one or more ``.png`` / ``.pdf`` paths. Example (docs/pipeline.md section 6)::

    testtime report --config C --per-prompt results/demo/per_prompt.parquet \\
        --selections data/demo/selections/sift.parquet \\
        --bpb-csv results/demo/bpb.csv --metrics results/demo/metrics.json \\
        --uncertainty-csv results/demo/uncertainty.csv \\
        --bpb-vs-steps-csv results/demo/bpb_vs_steps.csv \\
        --table-md figures/demo/bpb_table.md --table-tex figures/demo/bpb_table.tex \\
        --uncertainty-plot figures/demo/uncertainty_vs_error.png \\
                           figures/demo/uncertainty_vs_error.pdf \\
        --steps-plot figures/demo/bpb_vs_steps.png figures/demo/bpb_vs_steps.pdf \\
        --adaptive-plot figures/demo/adaptive_compute.png figures/demo/adaptive_compute.pdf \\
        --uncertainty-gain-plot figures/demo/uncertainty_gain.png figures/demo/uncertainty_gain.pdf

The flags and which of them a config needs are :data:`testtime.report.outputs.REPORT_OUTPUTS`
(``--lambda-sweep-plot`` exactly when the config has ``select.lam_sweep``, ``--memory-curve-md``
with ``--memory-curve-plot`` exactly when it has ``select.memory_fractions``).
"""

from __future__ import annotations

import argparse

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "write bpb.csv, metrics.json, the paper table and figures from per-prompt results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from testtime.report.outputs import report_flags

    add_config_argument(parser)
    parser.add_argument("--per-prompt", required=True, help="results/<name>/per_prompt.parquet")
    parser.add_argument(
        "--selections",
        nargs="*",
        default=[],
        help="selections/<variant>.parquet of the SIFT variants (named by file stem)",
    )
    for flag, spec in report_flags().items():
        parser.add_argument(
            flag,
            dest=spec.dest,
            required=spec.needs is None,
            nargs="+" if spec.figure else None,
            metavar="PATH",
            help=spec.help,
        )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept results lacking methods or prompts: compare over the prompts every method "
        "has and record what is missing (metrics.json 'partial'); default: an error",
    )


def output_paths(args: argparse.Namespace) -> dict[str, list[str] | None]:
    """Output flag -> its paths as given (None for an optional flag left out)."""
    from testtime.report.outputs import report_flags

    paths = {flag: getattr(args, spec.dest) for flag, spec in report_flags().items()}
    return {f: [p] if isinstance(p, str) else p for f, p in paths.items()}


def run(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    import pandas as pd

    from testtime.report import build_report
    from testtime.report.outputs import check_report_paths, write_report
    from testtime.selection.pipeline import check_selection_steps

    cfg = load_cli_config(args)
    paths = output_paths(args)
    check_report_paths(paths, cfg)
    for path in [args.per_prompt, *args.selections]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input {path!r} does not exist")
    selections = {Path(p).stem: pd.read_parquet(p) for p in args.selections}
    for path, table in zip(args.selections, selections.values(), strict=True):
        check_selection_steps(table, cfg["select"]["n"], f"--selections {path!r}")
    rep = build_report(
        cfg, pd.read_parquet(args.per_prompt), selections, allow_partial=args.allow_partial
    )
    write_report(rep, cfg, paths, per_prompt=args.per_prompt)

    labels = {v.name: v.label for v in rep.rows}
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
        if key in rep.metrics.get("paired_byte_weighted", {}):
            d = rep.metrics["paired_byte_weighted"][key]
            print(
                f"paired {key}, byte-weighted (the table's statistic): {d['mean']:+.4f} ± "
                f"{d['se'] or float('nan'):.4f}"
            )
    relative = rep.metrics.get("bpb_relative_pct", {})
    if relative:
        se = rep.metrics["bpb_relative_se_pct"]
        print(
            "% of base: "
            + " | ".join(f"{labels[m]} {v:.1f}±{se[m] or 0:.1f}" for m, v in relative.items())
        )
    bad = {m: p for m, p in rep.nan_prompts.items() if p}
    if bad:
        print(f"NaN loss, prompts left out of every method: {bad}", file=sys.stderr)
    if rep.metrics["partial"]:
        print(f"--allow-partial: compared without {rep.metrics['partial']}", file=sys.stderr)
