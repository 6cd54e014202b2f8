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

``--lambda-sweep-plot`` is given exactly when the config has ``select.lam_sweep``, and
``--memory-curve-md`` with ``--memory-curve-plot`` exactly when it has
``select.memory_fractions``: those optional outputs are written iff their flag is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from testtime.cli._common import add_config_argument, load_cli_config

HELP = "write bpb.csv, metrics.json, the paper table and figures from per-prompt results"

FIGURE_FORMATS = (".png", ".pdf")

# (flag, argparse dest, help); the required single files, then the required figures
_FILES = (
    ("--bpb-csv", "bpb_csv", "results/<name>/bpb.csv: bpb per domain and method, with SE"),
    ("--metrics", "metrics", "results/<name>/metrics.json"),
    ("--uncertainty-csv", "uncertainty_csv", "results/<name>/uncertainty.csv (DVC plot)"),
    ("--bpb-vs-steps-csv", "bpb_vs_steps_csv", "results/<name>/bpb_vs_steps.csv (DVC plot)"),
    ("--table-md", "table_md", "figures/<name>/bpb_table.md"),
    ("--table-tex", "table_tex", "figures/<name>/bpb_table.tex"),
)
_FIGURES = (
    ("--uncertainty-plot", "uncertainty_plot", "uncertainty_vs_error.{png,pdf}"),
    ("--steps-plot", "steps_plot", "bpb_vs_steps.{png,pdf}"),
    ("--adaptive-plot", "adaptive_plot", "adaptive_compute.{png,pdf}"),
    ("--uncertainty-gain-plot", "uncertainty_gain_plot", "uncertainty_gain.{png,pdf}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--per-prompt", required=True, help="results/<name>/per_prompt.parquet")
    parser.add_argument(
        "--selections",
        nargs="*",
        default=[],
        help="selections/<variant>.parquet of the SIFT variants (named by file stem)",
    )
    for flag, dest, text in _FILES:
        parser.add_argument(flag, dest=dest, required=True, metavar="PATH", help=text)
    for flag, dest, text in _FIGURES:
        parser.add_argument(
            flag, dest=dest, required=True, nargs="+", metavar="PATH", help=f"figure: {text}"
        )
    parser.add_argument(
        "--lambda-sweep-plot",
        nargs="+",
        metavar="PATH",
        help="figure: lambda_sweep.png; exactly when the config has select.lam_sweep",
    )
    parser.add_argument(
        "--memory-curve-md",
        metavar="PATH",
        help="figures/<name>/memory_curve.md; exactly when the config has select.memory_fractions",
    )
    parser.add_argument(
        "--memory-curve-plot",
        nargs="+",
        metavar="PATH",
        help="figure: memory_curve.png; exactly when the config has select.memory_fractions",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept results lacking methods or prompts: compare over the prompts every method "
        "has and record what is missing (metrics.json 'partial'); default: an error",
    )


def check_outputs(args: argparse.Namespace, cfg: Mapping[str, Any]) -> None:
    """ValueError before any work when the optional outputs disagree with the config, a figure
    is not .png/.pdf, a path is given twice or is a directory."""
    from pathlib import Path

    from testtime.io import check_output

    optional = {
        "select.lam_sweep": (bool(cfg["select"]["lam_sweep"]), ["--lambda-sweep-plot"]),
        "select.memory_fractions": (
            bool(cfg["select"]["memory_fractions"]),
            ["--memory-curve-md", "--memory-curve-plot"],
        ),
    }
    for key, (configured, flags) in optional.items():
        for flag in flags:
            given = getattr(args, flag[2:].replace("-", "_")) is not None
            if given != configured:
                raise ValueError(
                    f"{flag} is given exactly when the config has {key} (it is "
                    f"{'set' if configured else 'empty'}): "
                    + (f"pass {flag}" if configured else f"leave {flag} out")
                )
    paths: list[tuple[str, str]] = [(flag, getattr(args, dest)) for flag, dest, _ in _FILES]
    figure_flags = [flag for flag, _, _ in _FIGURES] + [
        "--lambda-sweep-plot",
        "--memory-curve-plot",
    ]
    for flag in figure_flags:
        for path in getattr(args, flag[2:].replace("-", "_")) or []:
            if Path(path).suffix not in FIGURE_FORMATS:
                raise ValueError(f"{flag} {path!r}: a figure is written as .png or .pdf")
            paths.append((flag, path))
    if args.memory_curve_md is not None:
        paths.append(("--memory-curve-md", args.memory_curve_md))
    seen: dict[Path, str] = {}
    for flag, path in paths:
        check_output(path, flag=flag)
        key = Path(path).absolute()
        if key in seen:
            raise ValueError(f"{flag} {path!r} is also given as {seen[key]}: one file per output")
        seen[key] = flag


def run(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    import pandas as pd

    from testtime import figures
    from testtime.io import AtomicGroup
    from testtime.report import build_report
    from testtime.selection.pipeline import check_selection_steps

    cfg = load_cli_config(args)
    check_outputs(args, cfg)
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
        args.bpb_csv: rep.bpb.to_csv(index=False, float_format="%.6g"),
        args.uncertainty_csv: rep.uncertainty.to_csv(index=False, float_format="%.6g"),
        args.bpb_vs_steps_csv: rep.steps[["method", "steps", "bpb_mean"]].to_csv(
            index=False, float_format="%.6g"
        ),
        args.table_md: figures.table_markdown(rep.bpb, methods, rep.relative),
        args.table_tex: figures.table_latex(rep.bpb, methods, rep.relative),
    }
    # Every file goes to a temporary first; all are renamed only once all are written, so a
    # failure (full disk, read-only directory) leaves the previous report whole.
    with AtomicGroup() as out:
        for path, text in outputs.items():
            out.write_text(path, text)
        out.write_json(args.metrics, rep.metrics)
        figures.plot_uncertainty(
            rep.uncertainty,
            cfg["report"]["bins"],
            rep.metrics["sigma_bpb_pearson"] or float("nan"),
            rep.metrics["sigma_bpb_spearman"] or float("nan"),
            args.uncertainty_plot,
            group=out,
        )
        figures.plot_bpb_vs_steps(rep.steps, labels, args.steps_plot, group=out)
        figures.plot_adaptive(rep.steps, rep.adaptive, args.adaptive_plot, group=out)
        figures.plot_uncertainty_gain(
            rep.gain, rep.metrics.get("uncertainty", {}), args.uncertainty_gain_plot, group=out
        )
        if args.lambda_sweep_plot:
            bpb = rep.metrics["bpb"]
            refs = {labels[m]: bpb[m] for m in ("nn", "base") if m in bpb}
            figures.plot_lambda_sweep(rep.lambda_sweep, refs, args.lambda_sweep_plot, group=out)
        if args.memory_curve_md:
            out.write_text(args.memory_curve_md, figures.memory_curve_markdown(rep.memory_curve))
            figures.plot_memory_curve(rep.memory_curve, args.memory_curve_plot, group=out)
        extra = {"per_prompt": args.per_prompt, "partial": rep.metrics["partial"]}
        for path in [args.bpb_csv, args.metrics]:
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
