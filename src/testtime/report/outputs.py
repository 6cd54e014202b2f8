"""The report stage's outputs, owned in one place: which files exist for a config, their paths,
the `testtime report` flag of each, and what is written to it.

:data:`REPORT_OUTPUTS` is the one list: the workflow's report rule declares
:func:`report_outputs` as its outputs and passes them with :func:`report_argv`, the CLI's flags
are :func:`report_flags`, and scripts/gpu/stages.py builds its argv the same way. An output with
``needs`` exists exactly when that config key is non-empty (``select.lam_sweep`` => the λ′ sweep
figure, ``select.memory_fractions`` => the memory-size curve).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from testtime.report.build import Report

FIGURE_FORMATS = (".png", ".pdf")


class ReportOutput(NamedTuple):
    """One file of the report stage."""

    name: str
    """The report rule's output name."""
    flag: str
    """The `testtime report` flag that takes its path (a figure flag takes all its files)."""
    folder: str
    """``results`` (results/<name>/) or ``figures`` (figures/<name>/)."""
    file: str
    needs: str | None = None
    """A dotted config key: the output exists exactly when it is non-empty (None: always)."""
    about: str = ""
    """What the file holds (the flag's help)."""


def _png_pdf(name: str, flag: str, stem: str) -> tuple[ReportOutput, ReportOutput]:
    """A figure's two files, ``<name>_png`` and ``<name>_pdf``."""
    png, pdf = (ReportOutput(f"{name}_{x}", flag, "figures", f"{stem}.{x}") for x in ("png", "pdf"))
    return png, pdf


_SWEEP, _MEMORY = "select.lam_sweep", "select.memory_fractions"
REPORT_OUTPUTS: tuple[ReportOutput, ...] = (
    ReportOutput("bpb", "--bpb-csv", "results", "bpb.csv", about="bpb per domain and method"),
    ReportOutput("metrics", "--metrics", "results", "metrics.json"),
    ReportOutput(
        "uncertainty", "--uncertainty-csv", "results", "uncertainty.csv", about="DVC plot"
    ),
    ReportOutput(
        "bpb_vs_steps", "--bpb-vs-steps-csv", "results", "bpb_vs_steps.csv", about="DVC plot"
    ),
    ReportOutput("table_md", "--table-md", "figures", "bpb_table.md"),
    ReportOutput("table_tex", "--table-tex", "figures", "bpb_table.tex"),
    *_png_pdf("uncertainty", "--uncertainty-plot", "uncertainty_vs_error"),
    *_png_pdf("steps", "--steps-plot", "bpb_vs_steps"),
    *_png_pdf("adaptive", "--adaptive-plot", "adaptive_compute"),
    *_png_pdf("uncertainty_gain", "--uncertainty-gain-plot", "uncertainty_gain"),
    ReportOutput("lambda_sweep", "--lambda-sweep-plot", "figures", "lambda_sweep.png", _SWEEP),
    ReportOutput("memory_curve_md", "--memory-curve-md", "figures", "memory_curve.md", _MEMORY),
    ReportOutput("memory_curve_png", "--memory-curve-plot", "figures", "memory_curve.png", _MEMORY),
)
"""Every report file, in the order of the rule's command line (run.json records the argv)."""


class ReportFlag(NamedTuple):
    """A `testtime report` output flag: its files, whether it takes figures, when it is given."""

    flag: str
    dest: str
    figure: bool
    needs: str | None
    help: str


def report_flags() -> dict[str, ReportFlag]:
    """Flag -> :class:`ReportFlag`, in :data:`REPORT_OUTPUTS` order."""
    files: dict[str, list[ReportOutput]] = {}
    for o in REPORT_OUTPUTS:
        files.setdefault(o.flag, []).append(o)
    out = {}
    for flag, outs in files.items():
        first = outs[0]
        figure = Path(first.file).suffix in FIGURE_FORMATS
        names = [Path(o.file).stem for o in outs]
        shown = (
            f"{first.folder}/<name>/{names[0]}.{{{','.join(FIGURE_FORMATS).replace('.', '')}}}"
            if figure
            else f"{first.folder}/<name>/{first.file}"
        )
        text = ("figure: " if figure else "") + shown + (f" ({first.about})" if first.about else "")
        if first.needs:
            text += f"; exactly when the config has {first.needs}"
        out[flag] = ReportFlag(flag, flag[2:].replace("-", "_"), figure, first.needs, text)
    return out


def _dotted(config: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def is_written(output: ReportOutput | ReportFlag, config: Mapping[str, Any]) -> bool:
    """Whether ``config`` has this output (its ``needs`` key non-empty, or none)."""
    return output.needs is None or bool(_dotted(config, output.needs))


def report_outputs(
    config: Mapping[str, Any], results: str | Path, figures: str | Path
) -> dict[str, str]:
    """Output name -> path of every report file ``config`` has, under ``results`` (e.g.
    results/<name>) and ``figures`` (figures/<name>), in :data:`REPORT_OUTPUTS` order."""
    folders = {"results": str(results), "figures": str(figures)}
    return {
        o.name: f"{folders[o.folder]}/{o.file}" for o in REPORT_OUTPUTS if is_written(o, config)
    }


def report_argv(paths: Mapping[str, str]) -> list[str]:
    """The `testtime report` output flags with ``paths`` (output name -> path, e.g. from
    :func:`report_outputs`), each flag once with its files, in :data:`REPORT_OUTPUTS` order."""
    known = {o.name for o in REPORT_OUTPUTS}
    if unknown := sorted(set(paths) - known):
        raise ValueError(f"{unknown} are not report outputs (see REPORT_OUTPUTS)")
    argv: list[str] = []
    for o in REPORT_OUTPUTS:
        if o.name in paths:
            if o.flag not in argv:
                argv.append(o.flag)
            argv.append(str(paths[o.name]))
    return argv


def check_report_paths(
    paths: Mapping[str, Sequence[str] | None], config: Mapping[str, Any]
) -> None:
    """ValueError before any work when the given flags (flag -> paths, None if not given)
    disagree with the config, a figure is not .png/.pdf, a path is given twice or cannot be
    written (:func:`testtime.io.check_output`)."""
    from testtime.io import check_output

    flags = report_flags()
    for flag, spec in flags.items():
        configured, given = is_written(spec, config), paths.get(flag) is not None
        if spec.needs and given != configured:
            raise ValueError(
                f"{flag} is given exactly when the config has {spec.needs} (it is "
                f"{'set' if configured else 'empty'}): "
                + (f"pass {flag}" if configured else f"leave {flag} out")
            )
    for flag in (f for f in flags if flags[f].figure):
        for path in paths.get(flag) or []:
            if Path(path).suffix not in FIGURE_FORMATS:
                raise ValueError(f"{flag} {path!r}: a figure is written as .png or .pdf")
    # the required files, the figures, then the optional files (in which order a clash is named)
    files = [f for f in flags if not flags[f].figure]
    order = [f for f in files if not flags[f].needs]
    order += [f for f in flags if flags[f].figure] + [f for f in files if flags[f].needs]
    seen: dict[Path, str] = {}
    for flag in order:
        for path in paths.get(flag) or []:
            check_output(path, flag=flag)
            key = Path(path).absolute()
            if key in seen:
                raise ValueError(
                    f"{flag} {path!r} is also given as {seen[key]}: one file per output"
                )
            seen[key] = flag


def write_report(
    rep: Report,
    config: Mapping[str, Any],
    paths: Mapping[str, Sequence[str] | None],
    *,
    per_prompt: str,
) -> None:
    """Write every output of ``rep`` whose flag is given in ``paths`` (flag -> paths), plus the
    run.json records of bpb.csv and metrics.json, as one atomic group: all files are renamed
    into place only once all are written, so a failure leaves the previous report whole."""
    from testtime import figures
    from testtime.io import AtomicGroup

    one = {flag: p[0] for flag, p in paths.items() if p}
    in_table = set(rep.bpb["method"])
    methods = [v for v in rep.rows if v.name in in_table]
    labels = {v.name: v.label for v in rep.rows}
    texts = {
        "--bpb-csv": rep.bpb.to_csv(index=False, float_format="%.6g"),
        "--uncertainty-csv": rep.uncertainty.to_csv(index=False, float_format="%.6g"),
        "--bpb-vs-steps-csv": rep.steps[["method", "steps", "bpb_mean"]].to_csv(
            index=False, float_format="%.6g"
        ),
        "--table-md": figures.table_markdown(rep.bpb, methods, rep.relative),
        "--table-tex": figures.table_latex(rep.bpb, methods, rep.relative),
    }
    with AtomicGroup() as out:
        for flag, text in texts.items():
            out.write_text(one[flag], text)
        out.write_json(one["--metrics"], rep.metrics)
        figures.plot_uncertainty(
            rep.uncertainty,
            config["report"]["bins"],
            rep.metrics["sigma_bpb_pearson"] or float("nan"),
            rep.metrics["sigma_bpb_spearman"] or float("nan"),
            paths["--uncertainty-plot"],
            group=out,
        )
        figures.plot_bpb_vs_steps(rep.steps, labels, paths["--steps-plot"], group=out)
        figures.plot_adaptive(rep.steps, rep.adaptive, paths["--adaptive-plot"], group=out)
        figures.plot_uncertainty_gain(
            rep.gain,
            rep.metrics.get("uncertainty", {}),
            paths["--uncertainty-gain-plot"],
            group=out,
        )
        if paths.get("--lambda-sweep-plot"):
            bpb = rep.metrics["bpb"]
            refs = {labels[m]: bpb[m] for m in ("nn", "base") if m in bpb}
            figures.plot_lambda_sweep(
                rep.lambda_sweep, refs, paths["--lambda-sweep-plot"], group=out
            )
        if paths.get("--memory-curve-md"):
            out.write_text(
                one["--memory-curve-md"], figures.memory_curve_markdown(rep.memory_curve)
            )
            figures.plot_memory_curve(rep.memory_curve, paths["--memory-curve-plot"], group=out)
        extra = {"per_prompt": per_prompt, "partial": rep.metrics["partial"]}
        for flag in ("--bpb-csv", "--metrics"):
            out.write_run_json(one[flag], config, seed=config["seed"], extra=extra)
