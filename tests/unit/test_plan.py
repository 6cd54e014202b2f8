"""`testtime plan` and the index-size estimate, against hand-computed values.

The fine-tuning estimate reproduces the benchmark it is scaled from (GPT-2 124M, 50 steps of
1,024 tokens and one 1,024-token evaluation: 1.93 prompts/s on the H200), ``index.type: auto``
switches to IVF-PQ exactly where the flat float32 vectors exceed ``index.ram_gb``, and the job
count of config/paper.yaml is the sum of its rules' jobs.
Run: `.venv/bin/pytest tests/unit/test_plan.py -q` (a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testtime.config import load_config, validate_config
from testtime.index_size import choose_index_type, index_bytes
from testtime.plan import cluster_jobs, finetune_seconds_per_prompt, make_plan

PAPER = Path(__file__).resolve().parents[2] / "config" / "paper.yaml"


def test_auto_index_switches_where_flat_stops_fitting():
    cfg = {"type": "auto", "ram_gb": 64, "nlist": 4096, "pq_m": 64}
    # 64 GB / (4 bytes x 1024 dims) = 15,625,000 vectors
    assert choose_index_type(cfg, 15_625_000, 1024) == "flat"
    assert choose_index_type(cfg, 15_625_001, 1024) == "ivfpq"
    assert choose_index_type({**cfg, "type": "ivf"}, 10, 8) == "ivf"
    # (64 + 8) bytes per vector + 4096 centroids + 256 codewords of 1024 floats
    assert index_bytes("ivfpq", 1000, 1024, cfg) == 72_000 + 4 * 4096 * 1024 + 4 * 256 * 1024


def test_finetune_estimate_reproduces_its_benchmark():
    cfg = validate_config(
        {
            "data": {"seq_len": 1024, "eval_tokens": 1024},
            "model": {"source": "pretrained", "name_or_path": "gpt2"},
            "select": {"n": 50, "k": 200},
            "finetune": {"eval_at": [50]},
        }
    )
    seconds = finetune_seconds_per_prompt(cfg, 124e6)
    # 6 * 124e6 * 51,200 + 2 * 124e6 * 1,024 FLOPs at 7.5 % of 989 TFLOP/s
    assert seconds == pytest.approx((6 * 124e6 * 51_200 + 2 * 124e6 * 1024) / (989e12 * 0.075))
    assert 1 / seconds == pytest.approx(1.93, abs=0.01)
    lora = validate_config({**cfg, "finetune": {"eval_at": [50], "mode": "lora"}})
    assert finetune_seconds_per_prompt(lora, 124e6) < seconds


def test_paper_plan():
    config = load_config(PAPER)
    jobs = cluster_jobs(config)
    # 16 embedding shards; 7 selection variants (5 methods + 2 lambda' values); base + 7 methods,
    # 32 shards each; 9 single jobs
    assert jobs["select"] == 7 and jobs["finetune"] == 8 * 32
    assert sum(jobs.values()) == 16 + 7 + 256 + 9
    plan = make_plan(config)
    assert plan.memory_entries == 340_000 and plan.prompts == 1812
    assert plan.index_type == "flat"
    assert plan.finetune_runs == 7 * 1812
    big = dict(config, data={**config["data"], "memory_docs": 210_000_000})
    assert make_plan(big).index_type == "ivfpq"


def test_plan_cli(capsys):
    from testtime.cli import main

    assert main(["plan", "--config", str(PAPER), "--memory-docs", "10000000"]) == 0
    out = capsys.readouterr().out
    assert "memory entries         10,000,000 (documents)" in out
    assert "cluster jobs           288" in out


def test_index_stage_resolves_auto_and_prints_its_estimate(capsys):
    import numpy as np

    from testtime.index import build_index, search

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cfg = {"type": "auto", "ram_gb": 1.0, "nlist": 4, "nprobe": 4, "pq_m": 4, "gpu": False}
    assert type(build_index(x, cfg, 0)).__name__ == "IndexFlatIP"
    assert "-> flat" in capsys.readouterr().out
    tight = {**cfg, "ram_gb": 4 * 400 * 16 / 1e9 / 2}  # half of what flat needs
    index = build_index(x, tight, 0)
    assert type(index).__name__ == "IndexIVFPQ"
    assert "-> ivfpq" in capsys.readouterr().out
    _, ids = search(index, x[:3], 5, tight)
    assert ids.shape == (3, 5)


def test_thin_domains_are_marked_only_under_unequal_counts():
    import pandas as pd

    from testtime.figures import table_markdown
    from testtime.methods import report_rows

    rows = report_rows(validate_config({"select": {"methods": ["sift"]}}))

    def table(counts):
        return pd.DataFrame(
            [(d, m.name, n, 1.0, 0.1) for d, n in counts.items() for m in rows],
            columns=["domain", "method", "n", "bpb_mean", "bpb_se"],
        )

    balanced = table_markdown(table({"a": 5, "b": 5, "all": 10}), rows)
    assert "†" not in balanced
    natural = table_markdown(table({"a": 30, "b": 3, "all": 33}), rows)
    assert "| b † (n=3) |" in natural and "| a |" in natural and "fewer than 20" in natural
