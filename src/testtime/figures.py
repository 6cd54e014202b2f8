"""Paper-style tables (Markdown, LaTeX) and figures (PNG + PDF) from :class:`report.Report`.

Tables follow the paper's layout: one row per domain (plus ``all``), one column per method,
entries ``100 x bpb`` with the bootstrap SE in parentheses and the best (lowest) entry of each
row in bold. Figures use matplotlib's Agg backend (no display needed) and are byte-reproducible
(no creation date in the PDFs). Each plot function writes through an optional
:class:`testtime.io.AtomicGroup`, so the report stage renames all its files together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from testtime.io import AtomicGroup
    from testtime.methods import Variant

BPB_AXIS = "bits per byte (lower is better)"
FEW_PROMPTS = 20  # table rows with fewer prompts are marked when the domains' counts differ


def _cells(table: pd.DataFrame, methods: Sequence[Variant]) -> tuple[list[str], list[list]]:
    domains = list(dict.fromkeys(table["domain"]))
    grid = table.set_index(["domain", "method"])
    rows = []
    for d in domains:
        vals = [grid.loc[(d, m.name)] if (d, m.name) in grid.index else None for m in methods]
        rows.append(vals)
    return domains, rows


def _fmt(cell: pd.Series | None) -> str:
    if cell is None:
        return "–"
    se = cell["bpb_se"]
    se_txt = "–" if not math.isfinite(se) else f"{100 * se:.1f}"
    return f"{100 * cell['bpb_mean']:.1f} ({se_txt})"


def _best(row: list) -> float:
    vals = [c["bpb_mean"] for c in row if c is not None]
    return min(vals) if vals else math.nan


def _relative_rows(
    relative: pd.DataFrame, methods: Sequence[Variant]
) -> tuple[list[str], list[list[str]]]:
    """Row names and cells of the %-of-base table: ``rel (SE)`` per domain, best per row in
    bold, then the paper's All row (:data:`testtime.statistics.PAPER_ALL_ROW_PCT`)."""
    from testtime.statistics import PAPER_ALL_ROW_PCT

    grid = relative.set_index(["domain", "method"])
    names, rows = [], []
    for d in dict.fromkeys(relative["domain"]):
        cells = [grid.loc[(d, m.name)] if (d, m.name) in grid.index else None for m in methods]
        best = min((c["rel_pct"] for c in cells if c is not None), default=math.nan)
        texts = []
        for c in cells:
            if c is None:
                texts.append("–")
                continue
            se = "–" if not math.isfinite(c["rel_se_pct"]) else f"{c['rel_se_pct']:.1f}"
            txt = f"{c['rel_pct']:.1f} ({se})"
            texts.append(f"**{txt}**" if c["rel_pct"] == best else txt)
        names.append(d)
        rows.append(texts)
    if len(relative):
        paper = {"base": 100.0, **PAPER_ALL_ROW_PCT}
        names.append("all (paper, GPT-2)")
        rows.append([f"{paper[m.name]:.1f}" if m.name in paper else "–" for m in methods])
    return names, rows


RELATIVE_NOTE = (
    "Bits per byte in % of the base model (the paper's unit: 100 · method bpb / base bpb, "
    "byte-weighted over the same prompts; bootstrap SE of the ratio over prompts in "
    "parentheses, percentage points; lowest per row in bold). Last row: the paper's All row "
    "(Hübotter et al. 2024, Table 1, GPT-2 on the Pile)."
)


def table_markdown(
    table: pd.DataFrame, methods: Sequence[Variant], relative: pd.DataFrame | None = None
) -> str:
    """Markdown table: domains x methods (report rows, :func:`testtime.methods.report_rows`,
    in column order, headed by their labels), ``100·bpb (SE)``, best per row in bold; with
    ``relative`` (:func:`testtime.statistics.relative_bpb_table`) followed by the same table in
    % of the base model and the paper's All row."""
    domains, rows = _cells(table, methods)
    head = "| domain | " + " | ".join(m.label for m in methods) + " |"
    lines = [head, "|---|" + "---:|" * len(methods)]
    # natural prompt sampling gives domains unequal prompt counts: mark the thin rows
    counts = table.groupby("domain", sort=False)["n"].max().to_dict()
    unequal = len({n for d, n in counts.items() if d != "all"}) > 1
    marked = False
    for d, row in zip(domains, rows, strict=True):
        best = _best(row)
        cells = [
            f"**{_fmt(c)}**" if c is not None and c["bpb_mean"] == best else _fmt(c) for c in row
        ]
        few = unequal and d != "all" and counts[d] < FEW_PROMPTS
        marked |= few
        label = f"{d} † (n={counts[d]})" if few else d
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = (
        "\nBits per byte × 100 of each domain's evaluation text after test-time fine-tuning "
        "(byte-weighted over prompts; bootstrap SE over prompts in parentheses; lowest per row "
        "in bold).\n"
    )
    if marked:
        note += f"† fewer than {FEW_PROMPTS} prompts in this domain (natural sampling).\n"
    text = "\n".join(lines) + "\n" + note
    if relative is None:
        return text
    names, rel_rows = _relative_rows(relative, methods)
    lines = [head, "|---|" + "---:|" * len(methods)]
    lines += [f"| {d} | " + " | ".join(r) + " |" for d, r in zip(names, rel_rows, strict=True)]
    return text + "\n" + "\n".join(lines) + "\n\n" + RELATIVE_NOTE + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def _tex_labels(methods: Sequence[Variant]) -> list[str]:
    return [
        _tex_escape(m.label).replace("λ'", r"$\lambda'$").replace("α", r"$\alpha$") for m in methods
    ]


def _tex_bold(text: str) -> str:
    return rf"\textbf{{{text[2:-2]}}}" if text.startswith("**") else text


def _tabular(first: str, labels: Sequence[str], names: Sequence[str], rows: list[list[str]]):
    """A booktabs ``tabular``: header ``first`` + ``labels``, one row per name (a rule above
    ``all``); cells are LaTeX already, except en dashes."""
    lines = [
        r"\begin{tabular}{l" + "r" * len(labels) + "}",
        r"\toprule",
        first + " & " + " & ".join(labels) + r" \\",
        r"\midrule",
    ]
    for d, row in zip(names, rows, strict=True):
        if d == "all":
            lines.append(r"\midrule")
        lines.append(
            _tex_escape(d) + " & " + " & ".join(c.replace("–", "--") for c in row) + r" \\"
        )
    return [*lines, r"\bottomrule", r"\end{tabular}", ""]


def table_latex(
    table: pd.DataFrame, methods: Sequence[Variant], relative: pd.DataFrame | None = None
) -> str:
    """LaTeX ``tabular`` (booktabs) with the same content as :func:`table_markdown` (with
    ``relative``, a second tabular in % of the base model)."""
    domains, rows = _cells(table, methods)
    labels = _tex_labels(methods)
    texts = []
    for row in rows:
        best = _best(row)
        texts.append(
            [
                rf"\textbf{{{_fmt(c)}}}" if c is not None and c["bpb_mean"] == best else _fmt(c)
                for c in row
            ]
        )
    text = "\n".join(_tabular("Domain", labels, domains, texts))
    if relative is None:
        return text
    names, rel_rows = _relative_rows(relative, methods)
    lines = [
        "",
        "% bits per byte in % of the base model (the paper's unit), bootstrap SE of the ratio",
        *_tabular(
            "Domain (\\% of base)", labels, names, [[_tex_bold(c) for c in r] for r in rel_rows]
        ),
    ]
    return text + "\n".join(lines)


# -------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 120, "savefig.dpi": 150, "font.size": 10})
    return plt


# Metadata that would differ between identical runs (matplotlib stamps PDFs with the time).
REPRODUCIBLE_METADATA = {"pdf": {"CreationDate": None}, "png": {}}


def _finish(
    fig,
    ax,
    paths: Sequence[str | Path],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    group: AtomicGroup | None = None,
    legend: Mapping[str, object] | None = None,
) -> None:
    """Label, legend (``legend``: extra ``ax.legend`` keywords) and grid ``ax``; write ``fig`` to
    every path (through ``group`` if given, else each atomically on its own); close it."""
    import matplotlib.pyplot as plt

    from testtime.io import AtomicGroup

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, **(legend or {}))
    ax.grid(alpha=0.3, which="both")
    own = group is None
    g = AtomicGroup() if own else group
    try:
        for p in paths:
            fmt = Path(p).suffix[1:]
            if fmt not in REPRODUCIBLE_METADATA:
                raise ValueError(f"figure {str(p)!r}: format {fmt!r} is not png or pdf")
            fig.savefig(
                g.path(p), format=fmt, bbox_inches="tight", metadata=REPRODUCIBLE_METADATA[fmt]
            )
        if own:
            g.commit()
    except BaseException:
        if own:
            g.discard()
        raise
    finally:
        plt.close(fig)


def plot_uncertainty(
    unc: pd.DataFrame,
    bins: int,
    pearson: float,
    spearman: float,
    paths: Sequence[str | Path],
    group: AtomicGroup | None = None,
) -> None:
    """SIFT's posterior σ_N(x*) (x) vs bpb after fine-tuning (y): prompts + binned means ± SE."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    if len(unc):
        x = unc["sigma"].to_numpy(dtype=float)
        y = unc["bpb"].to_numpy(dtype=float)
        ax.scatter(x, y, s=10, alpha=0.3, color="tab:gray", label="prompts")
        n_bins = max(1, min(bins, len(x) // 2))
        # equal-count bins of sigma (ties at an edge merge bins); a constant sigma is one bin
        which = (
            pd.qcut(x, n_bins, labels=False, duplicates="drop")
            if np.ptp(x) > 0
            else np.zeros(len(x), dtype=int)
        )
        mx, my, se = [], [], []
        for b in np.unique(which):
            sel = which == b
            if sel.sum() == 0:
                continue
            mx.append(x[sel].mean())
            my.append(y[sel].mean())
            se.append(y[sel].std(ddof=1) / math.sqrt(sel.sum()) if sel.sum() > 1 else 0.0)
        r_txt = "n/a" if not math.isfinite(pearson) else f"{pearson:.2f}"
        rho_txt = "n/a" if not math.isfinite(spearman) else f"{spearman:.2f}"
        ax.errorbar(
            mx,
            my,
            yerr=se,
            fmt="o-",
            color="tab:blue",
            capsize=3,
            label=f"binned mean ± SE (Pearson r={r_txt}, Spearman ρ={rho_txt})",
        )
    _finish(
        fig,
        ax,
        paths,
        group=group,
        xlabel=r"SIFT posterior uncertainty $\sigma_N(x^\star)$",
        ylabel=f"bpb after fine-tuning ({BPB_AXIS.split(' (')[0]})",
        title="Uncertainty predicts the error after test-time fine-tuning",
    )


def plot_bpb_vs_steps(
    steps: pd.DataFrame,
    labels: Mapping[str, str],
    paths: Sequence[str | Path],
    group: AtomicGroup | None = None,
) -> None:
    """Mean bpb (byte-weighted over prompts) against gradient steps, one line per method
    (legend: ``labels[method]``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, grp in steps.groupby("method", sort=False):
        ax.plot(grp["steps"], grp["bpb_mean"], marker="o", ms=3, label=labels[method])
    _finish(
        fig,
        ax,
        paths,
        group=group,
        xlabel="gradient steps (selected sequences)",
        ylabel=f"mean {BPB_AXIS}",
        title="Test-time fine-tuning: bpb against number of steps",
    )


def plot_adaptive(
    steps: pd.DataFrame,
    adaptive: pd.DataFrame,
    paths: Sequence[str | Path],
    group: AtomicGroup | None = None,
) -> None:
    """bpb against average steps: SIFT with a fixed N vs adaptive SIFT at each α."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    sift = steps[steps["method"] == "sift"]
    if len(sift):
        ax.plot(
            sift["avg_steps"],
            sift["bpb_mean"],
            marker="o",
            ms=3,
            color="tab:blue",
            label="SIFT, fixed number of steps",
        )
    if len(adaptive):
        ax.plot(
            adaptive["avg_steps"],
            adaptive["bpb_mean"],
            "s",
            color="tab:red",
            label="adaptive SIFT (one point per α)",
        )
        for r in adaptive.itertuples():
            ax.annotate(
                f"α={r.alpha:g}",
                (r.avg_steps, r.bpb_mean),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    _finish(
        fig,
        ax,
        paths,
        group=group,
        xlabel="average gradient steps per prompt",
        ylabel=f"mean {BPB_AXIS}",
        title="Compute-proportional test-time fine-tuning",
    )


def plot_lambda_sweep(
    sweep: pd.DataFrame,
    references: Mapping[str, float],
    paths: Sequence[str | Path],
    group: AtomicGroup | None = None,
) -> None:
    """SIFT's bpb (all domains, ± SE) against its noise λ′, with reference methods as lines
    (``references``: label -> bpb)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.errorbar(
        sweep["lam"],
        sweep["bpb_mean"],
        yerr=sweep["bpb_se"],
        fmt="o-",
        capsize=3,
        color="tab:blue",
        label="SIFT",
    )
    for (label, value), style in zip(references.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, ls=style, color="gray", label=label)
    ax.set_xscale("log")
    _finish(
        fig,
        ax,
        paths,
        group=group,
        xlabel="SIFT noise λ′ (log scale)",
        ylabel=f"mean {BPB_AXIS}",
        title="Sensitivity of SIFT to λ′",
    )


def memory_curve_markdown(curve: pd.DataFrame) -> str:
    """The memory-size table: per memory share, SIFT and NN bpb and their paired difference."""
    lines = [
        "| memory | prompts | SIFT | NN | SIFT − NN (paired, ± SE) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in curve.itertuples():
        lines.append(
            f"| {100 * r.fraction:g}% | {r.n} | {r.sift_bpb:.4f} | {r.nn_bpb:.4f} "
            f"| {r.diff:+.4f} ± {r.diff_se:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_memory_curve(
    curve: pd.DataFrame, paths: Sequence[str | Path], group: AtomicGroup | None = None
) -> None:
    """Paired SIFT − NN bpb (± SE) against the share of the memory both select from."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.errorbar(
        100 * curve["fraction"],
        curve["diff"],
        yerr=curve["diff_se"],
        fmt="o-",
        capsize=3,
        color="tab:blue",
        label="SIFT − NN",
    )
    ax.axhline(0.0, ls="--", color="gray")
    _finish(
        fig,
        ax,
        paths,
        xlabel="memory used (% of its documents)",
        ylabel="SIFT − NN, bits per byte (paired)",
        title="SIFT's advantage over NN vs memory size",
        group=group,
    )


def plot_uncertainty_gain(
    gain: pd.DataFrame,
    correlations: Mapping[str, Mapping[str, Mapping[str, float]]],
    paths: Sequence[str | Path],
    group: AtomicGroup | None = None,
) -> None:
    """Left: SIFT's σ_N(x*) against the realised relative gain, one colour per domain. Right:
    Spearman ρ of σ_N with bpb after N steps, the gain and the relative gain, over all prompts
    and within each domain, with bootstrap 95 % CIs (``correlations``: metrics.json
    ``uncertainty``)."""
    from testtime.statistics import GAIN_TARGETS

    plt = _plt()
    fig, (left, ax) = plt.subplots(1, 2, figsize=(10.4, 3.8))
    for domain, grp in gain.groupby("domain", sort=False):
        left.scatter(grp["sigma"], 100 * grp["relative_gain"], s=12, alpha=0.6, label=domain)
    left.axhline(0.0, ls="--", color="gray", lw=0.8)
    left.set_xlabel(r"SIFT posterior uncertainty $\sigma_N(x^\star)$")
    left.set_ylabel("relative gain (bpb_0 − bpb_N) / bpb_0, %")
    left.set_title("Uncertainty and the realised gain")
    if len(gain):
        left.legend(fontsize=7)
    left.grid(alpha=0.3)
    groups = list(correlations)
    width = 0.8 / max(len(GAIN_TARGETS), 1)
    for j, (target, text) in enumerate(GAIN_TARGETS.items()):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            c = correlations[g][target]
            rho = c["spearman"]
            if rho is None or not math.isfinite(rho):
                continue
            low, high = (v if v is not None else math.nan for v in c["spearman_ci"])
            xs.append(i + (j - (len(GAIN_TARGETS) - 1) / 2) * width)
            ys.append(rho)
            lo.append(rho - low if math.isfinite(low) else 0.0)
            hi.append(high - rho if math.isfinite(high) else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=f"σ_N vs {text}")
    ax.axhline(0.0, ls="--", color="gray", lw=0.8)
    ax.set_xticks(range(len(groups)), groups, rotation=25, ha="right", fontsize=8)
    _finish(
        fig,
        ax,
        paths,
        group=group,
        xlabel="prompts (all, then within each domain)",
        ylabel="Spearman ρ (bootstrap 95% CI)",
        title="Does σ_N predict the error and the gain?",
        # below the axes: inside, the three series' legend covered the within-domain points
        legend={"loc": "upper center", "bbox_to_anchor": (0.5, -0.3), "ncol": 1},
    )
