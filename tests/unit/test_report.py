"""Report statistics and files on a small synthetic results table: byte-weighted bpb, bootstrap
SE recomputed with numpy, paired differences, steps curves, adaptive rows, NaN handling, the
paper table and every output file of `testtime report`.

Run: .venv/bin/pytest tests/unit/test_report.py
"""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pandas as pd
import pytest
import yaml

from testtime.cli import main
from testtime.figures import table_markdown
from testtime.report import (
    aggregate,
    bpb_table,
    build_report,
    paired_difference,
    steps_curve,
    validate_per_prompt,
)

LN2 = math.log(2)
SEED = 3


def _row(pid, domain, method, steps, bpb, n_bytes, status="ok"):
    return (pid, domain, method, steps, bpb * LN2 * n_bytes, n_bytes, bpb, status)


def _table() -> pd.DataFrame:
    """4 prompts (2 domains); base, nn and sift evaluated at steps 1 and 2."""
    n_bytes = [100, 300, 200, 400]
    domain = ["A", "A", "B", "B"]
    base = [2.0, 3.0, 1.0, 2.5]
    rows = []
    for p in range(4):
        rows.append(_row(p, domain[p], "base", 0, base[p], n_bytes[p]))
        for s in (1, 2):
            rows.append(_row(p, domain[p], "nn", s, base[p] - 0.1 * s, n_bytes[p]))
            rows.append(_row(p, domain[p], "sift", s, base[p] - 0.2 * s - 0.01 * p, n_bytes[p]))
    cols = ["prompt_id", "domain", "method", "steps", "nll", "n_bytes", "bpb", "status"]
    return pd.DataFrame(rows, columns=cols)


def _selection() -> pd.DataFrame:
    rows = []
    for p, decay in enumerate([0.9, 0.5, 0.7, 0.3]):
        rows += [(p, 0, -1, 1.0), (p, 1, 5, decay), (p, 2, 6, decay**2)]
    return pd.DataFrame(rows, columns=["prompt_id", "step", "memory_id", "variance"])


def _cfg(**select) -> dict:
    from testtime.config import validate_config

    sel = {"n": 2, "k": 10, "methods": ["sift", "nn"]} | select
    return validate_config({"seed": SEED, "select": sel, "report": {"bootstrap": 200}})


def test_byte_weighted_mean_and_bootstrap_se_against_numpy():
    df = _table()
    final = {m: df[(df.method == m) & (df.steps == df[df.method == m].steps.max())]
             for m in ("base", "sift")}  # fmt: skip
    table = bpb_table(final, n_boot=200, seed=SEED, domains=["A", "B"])
    row = table[(table.domain == "A") & (table.method == "base")].iloc[0]
    assert row.n == 2
    assert row.bpb_mean == pytest.approx((2.0 * 100 + 3.0 * 300) / 400)  # hand-computed
    # independent bootstrap: numpy Generator seeded with the config seed, ratio of sums
    sift = final["sift"]
    nll, nb = sift["nll"].to_numpy(), sift["n_bytes"].to_numpy()
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, 4, size=(200, 4))
    ratios = [nll[i].sum() / (LN2 * nb[i].sum()) for i in idx]
    got = table[(table.domain == "all") & (table.method == "sift")].iloc[0]
    assert got.bpb_mean == pytest.approx(nll.sum() / (LN2 * nb.sum()))
    assert got.bpb_se == pytest.approx(np.std(ratios, ddof=1))


def test_paired_difference_is_mean_of_per_prompt_differences():
    df = _table()
    a = df[(df.method == "sift") & (df.steps == 2)]
    b = df[(df.method == "nn") & (df.steps == 2)]
    d = paired_difference(a, b, n_boot=200, seed=SEED)
    diffs = np.array([-0.2 - 0.01 * p for p in range(4)])
    assert d["mean"] == pytest.approx(diffs.mean())
    assert d["n"] == 4 and d["frac_better"] == 1.0
    idx = np.random.default_rng(SEED).integers(0, 4, size=(200, 4))
    assert d["se"] == pytest.approx(diffs[idx].mean(1).std(ddof=1))


def test_bootstrap_se_of_a_large_sample_is_the_analytic_one():
    """With many prompts the bootstrap SE of a mean is sigma / sqrt(P), of the byte-weighted
    ratio sum(nll) / sum(bytes) the delta-method SE sqrt(sum(r_i^2)) / (ln 2 sum(bytes)) with
    residuals r_i = nll_i - R bytes_i (R the pooled nats per byte)."""
    rng = np.random.default_rng(1)
    P = 3000
    a = rng.normal(2.0, 0.5, P)
    b = a + rng.normal(-0.1, 0.2, P)  # paired: b is a plus a small per-prompt change
    d = pd.DataFrame({"prompt_id": range(P), "bpb": a})
    e = pd.DataFrame({"prompt_id": range(P), "bpb": b})
    got = paired_difference(d, e, n_boot=2000, seed=SEED)
    assert got["se"] == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(P), rel=0.06)
    n_bytes = rng.integers(100, 1000, P).astype(float)
    nll = LN2 * n_bytes * rng.normal(1.5, 0.3, P)
    r = nll - nll.sum() / n_bytes.sum() * n_bytes
    analytic = math.sqrt((r**2).sum()) / (LN2 * n_bytes.sum())
    frame = pd.DataFrame({"domain": "A", "nll": nll, "n_bytes": n_bytes})
    se = bpb_table({"m": frame}, n_boot=2000, seed=SEED, domains=["A"]).bpb_se.iloc[0]
    assert se == pytest.approx(analytic, rel=0.06)


def test_steps_curve_pools_prompts_and_carries_forward():
    df = _table()
    df = df[~((df.method == "nn") & (df.prompt_id == 3) & (df.steps == 2))]  # prompt 3 stopped
    curve = steps_curve(df, "nn", df[df.method == "base"])
    assert curve["steps"].tolist() == [0, 1, 2]
    base = np.array([2.0, 3.0, 1.0, 2.5])
    nb = np.array([100, 300, 200, 400])
    at2 = np.array([1.8, 2.8, 0.8, 2.4])  # prompt 3 keeps its step-1 value
    assert curve["bpb_mean"].iloc[0] == pytest.approx((base * nb).sum() / nb.sum())
    assert curve["bpb_mean"].iloc[2] == pytest.approx((at2 * nb).sum() / nb.sum())
    assert curve["avg_steps"].iloc[2] == pytest.approx(7 / 4)


def test_validation_rejects_duplicates_and_missing_base():
    df = _table()
    with pytest.raises(ValueError, match="duplicate result rows for prompt 0"):
        validate_per_prompt(pd.concat([df, df.iloc[[0]]]))
    with pytest.raises(ValueError, match="without a base result: \\[2\\]"):
        validate_per_prompt(df[~((df.method == "base") & (df.prompt_id == 2))])


def test_aggregate_concatenates_shards(tmp_path):
    df = _table()
    df[df.prompt_id % 2 == 0].to_parquet(tmp_path / "s0.parquet")
    df[df.prompt_id % 2 == 1].to_parquet(tmp_path / "s1.parquet")
    out = aggregate([tmp_path / "s0.parquet", tmp_path / "s1.parquet"])
    assert len(out) == len(df)
    with pytest.raises(FileNotFoundError, match="nope"):
        aggregate([tmp_path / "nope.parquet"])


def test_report_numbers():
    df = _table()
    df.loc[(df.method == "nn") & (df.prompt_id == 1) & (df.steps == 2),
           ["nll", "bpb", "status"]] = [np.nan, np.nan, "nan_loss"]  # fmt: skip
    rep = build_report(_cfg(adaptive_alphas=[1.05]), df, {"sift": _selection()})
    assert rep.nan_prompts["nn"] == [1]
    assert rep.metrics["nan_loss_prompts"] == {"nn": [1]}
    # nn's NaN prompt leaves every method's numbers: all are over prompts 0, 2, 3
    assert set(rep.metrics["n_prompts"].values()) == {3}
    assert set(rep.bpb.loc[rep.bpb.domain == "all", "n"]) == {3}
    nb = np.array([100, 200, 400])  # prompts 0, 2, 3
    assert rep.metrics["bpb"]["base"] == pytest.approx((np.array([2.0, 1.0, 2.5]) * nb).sum() / 700)
    # Adaptive SIFT skips point n once sigma_n > 1 / (alpha n); sigma_n = decay ** (n / 2) here
    # (variance decay ** n). At alpha 1.05 the bounds are 0.952 and 0.476: sigma_1 = 0.949,
    # 0.707, 0.837, 0.548 all pass, sigma_2 = 0.9, 0.5, 0.7 fail and 0.3 passes, so prompts
    # 0-2 stop after 1 step and prompt 3 takes both.
    adaptive = np.array([1.8, 0.78, 2.07])  # sift bpb of prompts 0, 2, 3 at steps 1, 1, 2
    assert rep.metrics["bpb"]["sift_adaptive_a1.05"] == pytest.approx(
        (adaptive * nb).sum() / nb.sum()
    )
    assert rep.metrics["avg_steps"] == {
        "base": 0.0, "nn": 2.0, "sift": 2.0, "sift_adaptive_a1.05": pytest.approx(4 / 3)
    }  # fmt: skip
    # uncertainty: sigma = sqrt(last variance) = decay per prompt
    assert rep.uncertainty["sigma"].to_numpy() == pytest.approx([0.9, 0.5, 0.7, 0.3])
    # ranks of sigma 4,2,3,1 vs of bpb 2,4,1,3: rho = 1 - 6 * 16 / (4 * 15)
    assert rep.metrics["sigma_bpb_spearman"] == pytest.approx(-0.6)
    assert list(dict.fromkeys(rep.bpb.method)) == ["base", "nn", "sift", "sift_adaptive_a1.05"]
    assert rep.metrics["paired"]["sift-nn"]["n"] == 3  # nn's NaN prompt is not paired
    assert rep.metrics["paired"]["sift-base"]["n"] == 3  # nor used in any other comparison
    assert rep.metrics["partial"] is None
    # the steps curves compare the methods over the same prompts too
    base_curve = rep.steps[rep.steps.steps == 0].bpb_mean.unique()
    assert base_curve == pytest.approx([rep.metrics["bpb"]["base"]])


def test_markdown_table_bolds_best_per_row():
    rep = build_report(_cfg(), _table(), {"sift": _selection()})
    md = table_markdown(rep.bpb, rep.rows)
    row_a = next(line for line in md.splitlines() if line.startswith("| A "))
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    assert cells[0] == "A" and cells[3].startswith("**") and "**" not in cells[1] + cells[2]
    assert cells[1].startswith("275.0 (")  # 100 x (2*100 + 3*300)/400


def _outputs(res, fig, *, lam_sweep=False, memory_curve=False) -> list[str]:
    """`testtime report` output flags: every file under results dir ``res`` / figures ``fig``."""
    files = {
        "--bpb-csv": res / "bpb.csv",
        "--metrics": res / "metrics.json",
        "--uncertainty-csv": res / "uncertainty.csv",
        "--bpb-vs-steps-csv": res / "bpb_vs_steps.csv",
        "--table-md": fig / "bpb_table.md",
        "--table-tex": fig / "bpb_table.tex",
    }
    argv = [str(x) for flag, path in files.items() for x in (flag, path)]
    plots = {
        "--uncertainty-plot": "uncertainty_vs_error",
        "--steps-plot": "bpb_vs_steps",
        "--adaptive-plot": "adaptive_compute",
        "--uncertainty-gain-plot": "uncertainty_gain",
    }
    for flag, stem in plots.items():
        argv += [flag, str(fig / f"{stem}.png"), str(fig / f"{stem}.pdf")]
    if lam_sweep:
        argv += ["--lambda-sweep-plot", str(fig / "lambda_sweep.png")]
    if memory_curve:
        argv += ["--memory-curve-md", str(fig / "memory_curve.md")]
        argv += ["--memory-curve-plot", str(fig / "memory_curve.png")]
    return argv


def test_cli_report_writes_every_file(tmp_path):
    df = _table()
    df.to_parquet(tmp_path / "pp.parquet")
    _selection().to_parquet(tmp_path / "sift.parquet")
    lam = df[df.method == "sift"].assign(method="sift_lam0.1")
    lam = lam.assign(bpb=lam.bpb + 0.05, nll=lam.nll + 0.05 * LN2 * lam.n_bytes)
    pd.concat([df, lam]).to_parquet(tmp_path / "pp.parquet")
    cfg = {"seed": SEED, "select": {"n": 2, "k": 10, "methods": ["sift", "nn"],
                                    "lam_sweep": [0.1]}, "report": {"bootstrap": 50}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res, fig = tmp_path / "results", tmp_path / "figures"
    code = main(["report", "--config", str(tmp_path / "c.yaml"), "--per-prompt",
                 str(tmp_path / "pp.parquet"), "--selections", str(tmp_path / "sift.parquet"),
                 *_outputs(res, fig, lam_sweep=True)])  # fmt: skip
    assert code == 0
    for name in ("bpb.csv", "metrics.json", "uncertainty.csv", "bpb_vs_steps.csv"):
        assert (res / name).stat().st_size > 0
    for name in ("bpb_table.md", "bpb_table.tex", "uncertainty_vs_error.png",
                 "uncertainty_vs_error.pdf", "bpb_vs_steps.png", "bpb_vs_steps.pdf",
                 "adaptive_compute.png", "adaptive_compute.pdf", "lambda_sweep.png",
                 "uncertainty_gain.png", "uncertainty_gain.pdf"):  # fmt: skip
        assert (fig / name).stat().st_size > 0, name
    bpb = pd.read_csv(res / "bpb.csv")
    assert list(bpb.columns) == ["domain", "method", "n", "bpb_mean", "bpb_se"]
    assert set(bpb.domain) == {"A", "B", "all"}
    metrics = json.loads((res / "metrics.json").read_text())
    assert set(metrics["bpb"]) == {"base", "nn", "sift", "sift_lam0.1"}
    assert metrics["sigma_bpb_pearson"] is not None
    assert list(pd.read_csv(res / "bpb_vs_steps.csv").columns) == ["method", "steps", "bpb_mean"]


def test_memory_curve_is_the_paired_difference_per_memory_share():
    df = _table()
    extra = []
    for p, (n_bytes, base) in enumerate(
        zip([100, 300, 200, 400], [2.0, 3.0, 1.0, 2.5], strict=True)
    ):
        dom = "AABB"[p]
        for s in (1, 2):  # on half the memory: sift 0.05 better than nn on every prompt
            extra.append(_row(p, dom, "nn_mem0.5", s, base - 0.05 * s, n_bytes))
            extra.append(_row(p, dom, "sift_mem0.5", s, base - 0.05 * s - 0.05, n_bytes))
    df = pd.concat([df, pd.DataFrame(extra, columns=df.columns)], ignore_index=True)
    rep = build_report(_cfg(memory_fractions=[0.5]), df, {"sift": _selection()})
    curve = rep.memory_curve.set_index("fraction")
    assert list(curve.index) == [0.5, 1.0]
    assert curve.loc[0.5, "diff"] == pytest.approx(-0.05)
    assert curve.loc[0.5, "diff_se"] == pytest.approx(0.0, abs=1e-12)  # constant differences
    # whole memory: sift - nn at step 2 is (-0.4 - 0.01 p) - (-0.2) per prompt
    assert curve.loc[1.0, "diff"] == pytest.approx(np.mean([-0.2 - 0.01 * p for p in range(4)]))
    assert curve.loc[1.0, "n"] == 4
    assert rep.metrics["memory_curve"][0]["fraction"] == 0.5
    json.dumps(rep.metrics, allow_nan=False)  # JSON-ready
    # subsets do not enter the lambda' sweep and come after the main methods
    assert "sift_mem0.5" not in set(rep.lambda_sweep["method"])
    order = list(dict.fromkeys(rep.bpb["method"]))
    assert order.index("sift_mem0.5") > order.index("sift")


def _report_argv(tmp_path, per_prompt, *extra):
    cfg = {"seed": SEED, "select": {"n": 2, "k": 10, "methods": ["sift", "nn"]},
           "report": {"bootstrap": 50}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    per_prompt.to_parquet(tmp_path / "pp.parquet")
    _selection().to_parquet(tmp_path / "sift.parquet")
    return ["report", "--config", str(tmp_path / "c.yaml"), "--per-prompt",
            str(tmp_path / "pp.parquet"), "--selections", str(tmp_path / "sift.parquet"),
            *_outputs(tmp_path / "results", tmp_path / "figures"), *extra]  # fmt: skip


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_missing_method_or_prompts_are_refused_unless_allowed(tmp_path, capsys):
    df = _table()
    assert main(_report_argv(tmp_path, df[df.method != "nn"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "methods ['nn'] have no results" in err
    # one shard of sift left out (prompts 1 and 3): sift over 2 prompts next to base over 4
    lacking = df[~((df.method == "sift") & (df.prompt_id % 2 == 1))]
    assert main(_report_argv(tmp_path, lacking)) == 2
    err = capsys.readouterr().err
    assert "method 'sift' lacks prompts [1, 3] (2 of 4)" in err and "--allow-partial" in err
    assert not (tmp_path / "results").exists()
    # explicitly allowed: every method over the prompts all have, and said so
    assert main(_report_argv(tmp_path, lacking, "--allow-partial")) == 0
    assert "--allow-partial" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["partial"] == {
        "allowed": True, "missing_methods": [], "missing_prompts": {"sift": [1, 3]}
    }  # fmt: skip
    assert set(metrics["n_prompts"].values()) == {2}
    bpb = pd.read_csv(tmp_path / "results" / "bpb.csv")
    assert set(bpb.loc[bpb.domain == "all", "n"]) == {2}
    # base over prompts 0 and 2 only: (2.0 * 100 + 1.0 * 200) / 300
    assert metrics["bpb"]["base"] == pytest.approx(400 / 300)


def test_methods_the_config_does_not_run_are_refused():
    df = _table()
    extra = df[df.method == "nn"].assign(method="us")
    with pytest.raises(ValueError, match=r"methods \['us'\] that this config does not run"):
        build_report(_cfg(), pd.concat([df, extra]), {"sift": _selection()})


def test_selection_shorter_than_select_n_is_refused(tmp_path, capsys):
    argv = _report_argv(tmp_path, _table())
    sel = _selection()
    sel[~((sel.prompt_id == 2) & (sel.step == 2))].to_parquet(tmp_path / "sift.parquet")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sift.parquet" in err and "prompt 2 has steps 0..1" in err and "'select.n' is 2" in err


def test_report_files_are_byte_reproducible_and_readable(tmp_path):
    old = os.umask(0o027)
    try:
        for run in ("a", "b"):
            (tmp_path / run).mkdir()
            assert main(_report_argv(tmp_path / run, _table())) == 0
    finally:
        os.umask(old)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert any(name.endswith(".pdf") for name in a)
    differ = [n for n in a if a[n] != b[n] and not n.endswith("run.json") and n != "c.yaml"]
    assert differ == []
    for name in a:
        path = tmp_path / "a" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, name  # 0666 minus the umask 027


def test_full_disk_leaves_the_previous_report_whole(tmp_path):
    """Writes past a file-size limit fail like a full disk (EFBIG instead of ENOSPC): the small
    CSVs fit, the figures do not. Nothing of the new report may replace the old one."""
    import resource
    import signal
    import subprocess
    import sys

    argv = _report_argv(tmp_path, _table())
    assert main(argv) == 0
    before = _files(tmp_path / "results") | _files(tmp_path / "figures")
    changed = _table().assign(bpb=lambda d: d.bpb * 1.1, nll=lambda d: d.nll * 1.1)
    changed.to_parquet(tmp_path / "pp.parquet")
    limit = 8 * 1024
    assert min(len(v) for k, v in before.items() if k.endswith(".csv")) < limit
    assert max(len(v) for k, v in before.items() if k.endswith(".png")) > limit

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from testtime.cli import main; sys.exit(main())",
            *argv,
        ],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("testtime report: error: File too large: ") and "figures" in err
    after = _files(tmp_path / "results") | _files(tmp_path / "figures")
    assert after == before
    assert list(tmp_path.rglob("*.tmp")) == []


def test_optional_outputs_must_agree_with_the_config(tmp_path, capsys):
    """--lambda-sweep-plot / --memory-curve-* exactly when the config has lam_sweep /
    memory_fractions; figures are .png or .pdf; one file per output. Checked before any work."""
    argv = _report_argv(tmp_path, _table())
    cfg = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert main([*argv, "--lambda-sweep-plot", str(tmp_path / "l.png")]) == 2
    assert "leave --lambda-sweep-plot out" in capsys.readouterr().err
    cfg["select"]["lam_sweep"] = [0.1]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--lambda-sweep-plot is given exactly when the config has select.lam_sweep" in err
    sweep = ["--lambda-sweep-plot", str(tmp_path / "l.svg")]
    assert main([*argv, *sweep]) == 2
    assert "a figure is written as .png or .pdf" in capsys.readouterr().err
    sweep = ["--lambda-sweep-plot", str(tmp_path / "figures" / "bpb_vs_steps.png")]
    assert main([*argv, *sweep]) == 2
    assert "is also given as --steps-plot" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "figures").exists()
    cfg["select"] |= {"lam_sweep": [], "memory_fractions": [0.5]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main([*argv, "--memory-curve-md", str(tmp_path / "m.md")]) == 2
    assert "pass --memory-curve-plot" in capsys.readouterr().err
