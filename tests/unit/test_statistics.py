"""The paper-unit statistics (testtime.statistics) against hand-computed values and brute-force
bootstrap loops: bpb in % of the base model with the ratio's paired bootstrap SE, the
byte-weighted paired difference (the table's statistic), correlations with bootstrap CIs, and
their place in the report (metrics.json keys, the second table in bpb_table.md/.tex).

Run: .venv/bin/pytest tests/unit/test_statistics.py
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.unit.test_report import SEED, _cfg, _selection, _table
from testtime.figures import table_latex, table_markdown
from testtime.report import build_report
from testtime.statistics import (
    PAPER_ALL_ROW_PCT,
    byte_weighted_difference,
    correlation,
    relative_bpb_table,
    uncertainty_gain,
    uncertainty_gain_frame,
)

LN2 = math.log(2)
N_BOOT = 200


def _final(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One row per prompt and method: base at 0 steps, nn and sift at their last step (2)."""
    return {
        m: df[(df.method == m) & (df.steps == df[df.method == m].steps.max())].reset_index(
            drop=True
        )
        for m in ("base", "nn", "sift")
    }


def test_relative_bpb_is_the_ratio_of_byte_weighted_bpbs_with_a_paired_bootstrap():
    final = _final(_table())
    rel = relative_bpb_table(final, n_boot=N_BOOT, seed=SEED, domains=["A", "B"])
    cell = rel.set_index(["domain", "method"])
    # domain A: prompts 0, 1 (100 and 300 bytes); base bpb 2.0, 3.0; sift 2.0-0.4, 3.0-0.41
    base_a = (2.0 * 100 + 3.0 * 300) / 400
    sift_a = (1.6 * 100 + 2.59 * 300) / 400
    assert cell.loc[("A", "sift"), "rel_pct"] == pytest.approx(100 * sift_a / base_a)  # 85.18
    assert cell.loc[("A", "sift"), "rel_pct"] == pytest.approx(85.1818, abs=1e-4)
    assert cell.loc[("A", "base"), "rel_pct"] == 100.0
    assert cell.loc[("A", "base"), "rel_se_pct"] == 0.0
    assert cell.loc[("all", "nn"), "n"] == 4
    # brute force: resample prompts, recompute both bpbs on the same resample
    s, b = final["sift"], final["base"]
    idx = np.random.default_rng(SEED).integers(0, 4, size=(N_BOOT, 4))
    ratios = [
        100
        * (s.nll.to_numpy()[i].sum() / s.n_bytes.to_numpy()[i].sum())
        / (b.nll.to_numpy()[i].sum() / b.n_bytes.to_numpy()[i].sum())
        for i in idx
    ]
    assert cell.loc[("all", "sift"), "rel_se_pct"] == pytest.approx(np.std(ratios, ddof=1))
    nb = np.array([100, 300, 200, 400])
    base = np.array([2.0, 3.0, 1.0, 2.5])
    want = 100 * ((base - 0.2) * nb).sum() / (base * nb).sum()  # nn: 0.1 better per step
    assert cell.loc[("all", "nn"), "rel_pct"] == pytest.approx(want)


def test_byte_weighted_difference_is_the_tables_difference():
    final = _final(_table())
    d = byte_weighted_difference(final["sift"], final["nn"], n_boot=N_BOOT, seed=SEED)
    nb = np.array([100, 300, 200, 400])
    diffs = np.array([-0.2 - 0.01 * p for p in range(4)])
    assert d["mean"] == pytest.approx((diffs * nb).sum() / nb.sum())  # weighted by bytes
    assert d["mean"] != pytest.approx(diffs.mean())
    assert d["n"] == 4
    idx = np.random.default_rng(SEED).integers(0, 4, size=(N_BOOT, 4))
    boot = [(diffs[i] * nb[i]).sum() / nb[i].sum() for i in idx]
    assert d["se"] == pytest.approx(np.std(boot, ddof=1))
    assert d["ci"] == pytest.approx(list(np.percentile(boot, [2.5, 97.5])))


def test_correlation_and_its_bootstrap_ci_against_scipy_and_a_loop():
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = 0.5 * x + rng.normal(size=30)
    y[3] = y[4]  # a tie, for the ranks
    c = correlation(x, y, n_boot=N_BOOT, seed=SEED)
    assert c["n"] == 30
    assert c["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert c["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    idx = np.random.default_rng(SEED).integers(0, 30, size=(N_BOOT, 30))
    rhos = [stats.spearmanr(x[i], y[i])[0] for i in idx]
    assert c["spearman_ci"] == pytest.approx(list(np.percentile(rhos, [2.5, 97.5])))
    rs = [np.corrcoef(x[i], y[i])[0, 1] for i in idx]
    assert c["pearson_ci"] == pytest.approx(list(np.percentile(rs, [2.5, 97.5])))
    short = correlation(x[:2], y[:2], n_boot=N_BOOT, seed=SEED)
    assert math.isnan(short["pearson"]) and math.isnan(short["spearman_ci"][0])


def test_uncertainty_gain_within_domains():
    unc = pd.DataFrame(
        {
            "prompt_id": [0, 1, 2, 3, 4, 5],
            "domain": ["A", "A", "A", "B", "B", "B"],
            "sigma": [0.1, 0.2, 0.3, 0.1, 0.2, 0.3],
            "bpb": [1.0, 1.5, 2.0, 1.0, 1.1, 1.3],
        }
    )
    base = pd.DataFrame({"prompt_id": range(6), "bpb": [2.0, 2.0, 2.2, 1.5, 1.4, 1.4]})
    frame = uncertainty_gain_frame(unc, base)
    assert frame["gain"].tolist() == pytest.approx([1.0, 0.5, 0.2, 0.5, 0.3, 0.1])
    assert frame["relative_gain"].iloc[0] == pytest.approx(0.5)
    got = uncertainty_gain(frame, ["A", "B"], n_boot=N_BOOT, seed=SEED)
    assert set(got) == {"all", "A", "B"}
    # within each domain sigma orders bpb up and the gain down exactly
    for d in ("A", "B"):
        assert got[d]["bpb"]["spearman"] == pytest.approx(1.0)
        assert got[d]["gain"]["spearman"] == pytest.approx(-1.0)
        assert got[d]["relative_gain"]["spearman"] == pytest.approx(-1.0)
    assert got["all"]["gain"]["n"] == 6


def test_report_has_the_paper_unit_and_the_byte_weighted_headline():
    rep = build_report(_cfg(), _table(), {"sift": _selection()})
    m = rep.metrics
    bpb = m["bpb"]
    for method in ("nn", "sift"):
        assert m["bpb_relative_pct"][method] == pytest.approx(100 * bpb[method] / bpb["base"])
    assert m["bpb_relative_pct"]["base"] == 100.0
    assert m["paper_all_row_pct"] == PAPER_ALL_ROW_PCT
    assert m["paired_byte_weighted"]["sift-nn"]["mean"] == pytest.approx(bpb["sift"] - bpb["nn"])
    assert set(m["paired_byte_weighted"]) == {"nn-base", "sift-base", "sift-nn"}
    assert set(m["uncertainty"]) == {"all", "A", "B"}
    # the existing table is unchanged; the %-of-base table and the paper's row follow it
    plain = table_markdown(rep.bpb, rep.rows)
    md = table_markdown(rep.bpb, rep.rows, rep.relative)
    assert md.startswith(plain)
    assert "| all (paper, GPT-2) | 100.0 | 78.3 | 73.5 |" in md
    assert table_latex(rep.bpb, rep.rows, rep.relative).startswith(table_latex(rep.bpb, rep.rows))
