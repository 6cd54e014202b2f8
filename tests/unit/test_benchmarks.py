"""The benchmarks' options at toy sizes on the CPU (the GPU validation run depends on them)."""

from __future__ import annotations

import json

import pytest

from testtime.benchmarks import finetune, selection


@pytest.mark.parametrize("extra", [[], ["--inputs", "device", "--gram", "off", "--no-tf32"]])
def test_selection_benchmark_options_and_json(tmp_path, extra):
    out = tmp_path / "sel.json"
    argv = ["--batch", "6", "--k", "12", "--dim", "8", "--n", "4", "--repeats", "1"]
    argv += ["--input-dtype", "float16", "--baseline", "naive", "--baseline-batch", "2"]
    assert selection.main([*argv, *extra, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["agree"] and result["baseline_queries"] == 2
    assert result["gram"] is ("--gram" not in extra)
    assert result["speedup_per_query"] > 0


def test_selection_inputs_drawn_in_chunks_keep_their_distribution():
    q, c = selection.make_inputs(5, 7, 4, chunk=2)
    assert q.shape == (5, 4) and c.shape == (5, 7, 4)
    assert ((c * q[:, None]).sum(-1) > -1).all()  # unit vectors
    assert selection.make_inputs(5, 7, 4)[0].allclose(selection.make_inputs(5, 7, 4, chunk=8)[0])


def test_finetune_benchmark_bf16_pairs_and_json(tmp_path):
    out = tmp_path / "ft.json"
    argv = ["--prompts", "2", "--steps", "2", "--n-layer", "1", "--n-embd", "16", "--n-head", "2"]
    argv += ["--context", "16", "--vocab", "32", "--eval-tokens", "16", "--repeats", "1"]
    argv += ["--batch-prompts", "2", "--bf16", "--attn", "eager", "--json", str(out)]
    assert finetune.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"ours_fp32", "naive_fp32", "ours_bf16", "naive_bf16"}
    assert result["max_bpb_diff_ours_naive_fp32"] < 1e-5
    assert result["attention"] == "eager"
