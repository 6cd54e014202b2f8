"""Finetune stage inputs and CLI: eval steps, adaptive stops, clear errors on bad selections,
and `testtime finetune` / `aggregate` writing the pipeline.md section 5 tables.

Run: .venv/bin/pytest tests/unit/test_finetune_stage.py
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.unit.tiny_lm import TEXTS, tiny_gpt2, tiny_tokenizer
from testtime.cli import main
from testtime.finetune.stage import adaptive_stops, build_jobs, eval_steps_for, read_selection


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run: model dir with tokenizer, memory, prompts, and two selections."""
    d = tmp_path_factory.mktemp("run")
    tok = tiny_tokenizer()
    model = tiny_gpt2(vocab=len(tok), n_positions=32)
    model.save_pretrained(d / "base_model")
    tok.save_pretrained(d / "base_model")
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "seq_id": np.arange(12),
            "doc_id": np.arange(12),
            "domain": ["Github"] * 12,
            "input_ids": [rng.integers(1, len(tok), 40).astype(np.int32) for _ in range(12)],
            "n_tokens": np.full(12, 40, np.int32),
            "text": ["x"] * 12,
        }
    ).to_parquet(d / "memory.parquet")
    pd.DataFrame(
        {
            "prompt_id": np.arange(4),
            "doc_id": np.arange(4),
            "domain": ["Github", "DM Mathematics"] * 2,
            "prompt_text": ["p"] * 4,
            "eval_text": [TEXTS[i % 3] * 3 for i in range(4)],
        }
    ).to_parquet(d / "prompts.parquet")
    for method in ("sift", "nn"):
        rows = []
        for p in range(4):
            v = 1.0
            rows.append((p, 0, -1, v))
            for s in range(1, 4 if p else 3):  # prompt 0 has only 2 steps
                v *= 0.5
                rows.append((p, s, int(rng.integers(0, 12)), v))
        pd.DataFrame(rows, columns=["prompt_id", "step", "memory_id", "variance"]).astype(
            {"step": "int32", "variance": "float32"}
        ).to_parquet(d / f"{method}.parquet")
    cfg = {
        "device": "cpu",
        "select": {"n": 3, "k": 10, "methods": ["sift", "nn"], "adaptive_alphas": [0.97]},
        "finetune": {"lr": 1e-3, "eval_at": [1]},
        "report": {"bootstrap": 50},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    return d


def test_eval_steps_for():
    assert eval_steps_for(5, []) == (1, 2, 3, 4, 5)
    assert eval_steps_for(5, [2, 4, 20]) == (2, 4, 5)
    assert eval_steps_for(2, [4], extra=[1, 0]) == (0, 1, 2)


def _jobs(run_dir, selection, memory, prompts=None, **kw):
    prompts = prompts if prompts is not None else pd.read_parquet(run_dir / "prompts.parquet")
    return build_jobs(
        prompts,
        tiny_tokenizer(),
        selection=selection,
        memory_ids=memory,
        max_length=16,
        eval_at=[],
        selection_path="sift.parquet",
        **kw,
    )


def test_build_jobs_truncates_and_orders(run_dir):
    sel = read_selection(run_dir / "sift.parquet")
    mem = pd.read_parquet(run_dir / "memory.parquet")
    memory = {int(i): np.asarray(x) for i, x in zip(mem.seq_id, mem.input_ids, strict=True)}
    jobs = _jobs(run_dir, sel, memory)
    assert [len(j.train_ids) for j in jobs] == [2, 3, 3, 3]
    first_mid = int(sel[1]["memory_id"][1])
    assert jobs[1].train_ids[0].tolist() == memory[first_mid][:16].tolist()
    assert jobs[0].eval_steps == (1, 2)
    assert jobs[0].n_bytes == len((TEXTS[0] * 3).encode("utf-8"))


def test_split_protocol_jobs_condition_on_the_context(run_dir):
    tok = tiny_tokenizer()
    prompts = pd.read_parquet(run_dir / "prompts.parquet")
    prompts["context_text"] = ["", TEXTS[1], "", TEXTS[2]]
    jobs = _jobs(run_dir, None, None, prompts=prompts)
    for job, context, text in zip(jobs, prompts["context_text"], prompts["eval_text"], strict=True):
        ctx = tok(context, add_special_tokens=False)["input_ids"] if context else []
        body = tok(text, add_special_tokens=False)["input_ids"]
        assert job.n_context == len(ctx)
        assert job.eval_ids.tolist() == [tok.bos_token_id, *ctx, *body]
        assert job.n_bytes == len(text.encode("utf-8"))  # only the scored text's bytes


def test_adaptive_stops_become_eval_steps(run_dir):
    sel = read_selection(run_dir / "sift.parquet")
    mem = pd.read_parquet(run_dir / "memory.parquet")
    memory = {int(i): np.asarray(x) for i, x in zip(mem.seq_id, mem.input_ids, strict=True)}
    # variances 0.5, 0.25, 0.125, so sigma_n = 0.707, 0.5, 0.354; adaptive SIFT skips point n
    # once sigma_n > 1 / (alpha n): at alpha 0.97 the bounds are 1.031, 0.515, 0.344, so the
    # third point is skipped and the stop is after 2 steps
    jobs = build_jobs(
        pd.read_parquet(run_dir / "prompts.parquet"),
        tiny_tokenizer(),
        selection=sel,
        memory_ids=memory,
        max_length=16,
        eval_at=[1],
        stops=adaptive_stops(sel, [0.97]),
    )
    assert jobs[1].eval_steps == (1, 2, 3)


def test_unknown_memory_id_is_an_error(run_dir):
    sel = read_selection(run_dir / "sift.parquet")
    with pytest.raises(ValueError, match="memory_id .* not in memory.parquet"):
        _jobs(run_dir, sel, {0: np.arange(5)})


def test_prompt_without_selection_is_an_error(run_dir):
    sel = read_selection(run_dir / "sift.parquet")
    del sel[2]
    with pytest.raises(ValueError, match="prompt 2 has no selected sequences"):
        _jobs(run_dir, sel, {i: np.arange(5) for i in range(12)})


def test_empty_eval_text_is_an_error(run_dir):
    prompts = pd.read_parquet(run_dir / "prompts.parquet")
    prompts.loc[1, "eval_text"] = ""
    with pytest.raises(ValueError, match="prompt 1 has an empty eval_text"):
        _jobs(run_dir, None, None, prompts=prompts)


def test_selection_with_gaps_is_an_error(tmp_path):
    pd.DataFrame(
        {"prompt_id": [0, 0], "step": [0, 2], "memory_id": [-1, 3], "variance": [1.0, 0.5]}
    ).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="without gaps"):
        read_selection(tmp_path / "s.parquet")


def _finetune(run_dir, method, shard=0, num_shards=1, out=None, selection=None):
    args = [
        "finetune", "--config", str(run_dir / "config.yaml"), "--method", method,
        "--shard", str(shard), "--num-shards", str(num_shards),
        "--model", str(run_dir / "base_model"), "--prompts", str(run_dir / "prompts.parquet"),
        "--memory", str(run_dir / "memory.parquet"),
        "--out", str(out or run_dir / "ft" / method / f"shard-{shard}.parquet"),
    ]  # fmt: skip
    if method != "base":
        args += ["--selection", str(selection or run_dir / f"{method}.parquet")]
    return main(args)


def _full_selection(run_dir, method):
    """The fixture's selection with prompt 0 completed to select.n = 3 steps."""
    sel = pd.read_parquet(run_dir / f"{method}.parquet")
    extra = pd.DataFrame({"prompt_id": [0], "step": [3], "memory_id": [5], "variance": [0.125]})
    full = pd.concat([sel, extra.astype(sel.dtypes.to_dict())], ignore_index=True)
    path = run_dir / f"{method}_full.parquet"
    full.sort_values(["prompt_id", "step"]).to_parquet(path)
    return path


def test_cli_refuses_a_selection_shorter_than_select_n(run_dir, capsys):
    out = run_dir / "short.parquet"
    assert _finetune(run_dir, "sift", out=out) == 2  # prompt 0 has 2 steps, select.n is 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sift.parquet" in err and "prompt 0" in err and "'select.n' is 3" in err
    assert not out.exists()


def test_cli_finetune_and_aggregate(run_dir, capsys):
    assert _finetune(run_dir, "base") == 0
    sift = _full_selection(run_dir, "sift")
    assert _finetune(run_dir, "sift", 0, 2, selection=sift) == 0
    assert _finetune(run_dir, "sift", 1, 2, selection=sift) == 0
    shards = sorted((run_dir / "ft").glob("*/shard-*.parquet"))
    out = run_dir / "per_prompt.parquet"

    def aggregate(*paths, extra=()):
        return main(["aggregate", "--config", str(run_dir / "config.yaml"), "--inputs",
                     *map(str, paths), "--prompts", str(run_dir / "prompts.parquet"),
                     "--out", str(out), *extra])  # fmt: skip

    # nn is configured but has no results: refused, naming it
    assert aggregate(*shards) == 2
    assert "methods ['nn'] have no results" in capsys.readouterr().err
    assert not out.exists()
    assert _finetune(run_dir, "nn", selection=_full_selection(run_dir, "nn")) == 0
    shards = sorted((run_dir / "ft").glob("*/shard-*.parquet"))
    # one method's shard left out: refused, naming the method and its missing prompts
    sift_1 = run_dir / "ft" / "sift" / "shard-1.parquet"
    assert aggregate(*(s for s in shards if s != sift_1)) == 2
    err = capsys.readouterr().err
    assert "method 'sift' lacks prompts [1, 3] (2 of 4)" in err, err
    assert not out.exists()
    # ... unless explicitly allowed, which the record says
    assert aggregate(*(s for s in shards if s != sift_1), extra=["--allow-partial"]) == 0
    record = json.loads((run_dir / "per_prompt.parquet.run.json").read_text())
    assert record["partial"]["missing_prompts"] == {"sift": [1, 3]}
    base = pd.read_parquet(run_dir / "ft" / "base" / "shard-0.parquet")
    assert list(base.columns) == [
        "prompt_id", "domain", "method", "steps", "nll", "n_bytes", "bpb", "status"
    ]  # fmt: skip
    assert base["steps"].tolist() == [0, 0, 0, 0]
    assert np.allclose(base["bpb"], base["nll"] / (math.log(2) * base["n_bytes"]))
    assert (run_dir / "ft" / "base" / "shard-0.parquet.run.json").is_file()
    assert aggregate(*shards) == 0
    df = pd.read_parquet(out)
    assert json.loads((run_dir / "per_prompt.parquet.run.json").read_text())["partial"] is None
    sift = df[df["method"] == "sift"]
    # eval_at [1], the adaptive stop 2 and the final step 3
    assert sift.groupby("prompt_id")["steps"].apply(list).to_dict() == {
        0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3], 3: [1, 2, 3]
    }  # fmt: skip
    assert (sift["status"] == "ok").all()
    # shards are disjoint by prompt_id % 2
    assert set(pd.read_parquet(run_dir / "ft/sift/shard-1.parquet")["prompt_id"]) == {1, 3}
    # a shard given twice is refused
    assert aggregate(*shards, shards[0]) == 2


def test_cli_reports_missing_selection(run_dir, capsys):
    code = main([
        "finetune", "--config", str(run_dir / "config.yaml"), "--method", "nn",
        "--model", str(run_dir / "base_model"), "--prompts", str(run_dir / "prompts.parquet"),
        "--memory", str(run_dir / "memory.parquet"), "--out", str(run_dir / "x.parquet"),
    ])  # fmt: skip
    assert code == 2
    assert "--selection is required" in capsys.readouterr().err
