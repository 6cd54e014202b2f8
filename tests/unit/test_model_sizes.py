"""scripts/model-sizes.py (the model-size ablation table) on two fake runs: parameters counted
from the saved base model (tied head once), % of base and SIFT − NN read from metrics.json.

Run: .venv/bin/pytest tests/unit/test_model_sizes.py
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIZES = runpy.run_path(str(REPO / "scripts" / "model-sizes.py"), run_name="model_sizes")


def _run(root: Path, name: str, n_embd: int, base: float, nn: float, sift: float) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=64, n_embd=n_embd, n_layer=1, n_head=2, n_positions=16)
    GPT2LMHeadModel(cfg).save_pretrained(root / "data" / name / "base_model")
    metrics = {
        "bpb": {"base": base, "nn": nn, "sift": sift},
        "bpb_se": {"base": 0.1, "nn": 0.1, "sift": 0.1},
        "bpb_relative_pct": {"base": 100.0, "nn": 100 * nn / base, "sift": 100 * sift / base},
        "bpb_relative_se_pct": {"base": 0.0, "nn": 1.0, "sift": 2.0},
        "paired_byte_weighted": {"sift-nn": {"mean": sift - nn, "se": 0.01}},
        "n_prompts": {"base": 50},
    }
    (root / "results" / name).mkdir(parents=True)
    (root / "results" / name / "metrics.json").write_text(json.dumps(metrics))


def test_table_rows_from_metrics_and_models(tmp_path: Path) -> None:
    _run(tmp_path, "small", 8, base=2.0, nn=1.8, sift=1.7)
    _run(tmp_path, "large", 16, base=1.6, nn=1.2, sift=1.0)
    rows = [SIZES["row"](n, tmp_path) for n in ("small", "large")]
    # GPT-2 with tied head: V d + P d + L (12 d^2 + 13 d) + 2 d
    for r, d in zip(rows, (8, 16), strict=True):
        assert r["params"] == 64 * d + 16 * d + 12 * d * d + 13 * d + 2 * d
    assert rows[1]["sift_pct"] == pytest.approx(62.5)
    text = SIZES["markdown"](rows)
    assert (
        "| large | 0.0M (3.01x) | 1.600 ± 0.100 | 75.0 ± 1.0 | 62.5 ± 2.0 | -0.200 ± 0.010 |"
        in text
    )
    assert "50 prompts" in text
    SIZES["plot"](rows, [tmp_path / "f.png"])
    assert (tmp_path / "f.png").stat().st_size > 0
