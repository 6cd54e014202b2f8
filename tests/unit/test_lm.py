"""Base-LM pre-training and loading (testtime.lm) on tiny inputs.

Checks: a few pre-training steps lower the loss on the training batch; a run resumed from a
checkpoint ends with exactly the weights of an uninterrupted run; a stale checkpoint is refused;
the saved model reloads with the loader, and a missing local one is never looked up online; the
data-stage CLIs (tokenizer -> chunk -> pretrain) chain; the LR schedule by hand and against HF's.
"""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch

from tests.unit.tiny_code import TEXTS, code_tokenizer
from testtime.chunking import chunk_documents
from testtime.config import validate_config
from testtime.lm import latest_checkpoint, lm_loss, load_causal_lm, pad_batch, pretrain
from testtime.tokenizer import EOT


@pytest.fixture(scope="module")
def tokenizer():
    return code_tokenizer()


def tiny_model_cfg(**pretrain_cfg):
    cfg = validate_config(
        {
            "data": {"seq_len": 32, "eval_tokens": 32},
            "model": {
                "vocab_size": 320,
                "n_layer": 2,
                "n_embd": 32,
                "n_head": 2,
                "n_positions": 32,
                "pretrain": {
                    "steps": 20,
                    "batch_size": 4,
                    "lr": 3e-3,
                    "warmup_steps": 2,
                    "checkpoint_every": 5,
                    "bf16": False,
                    **pretrain_cfg,
                },
            },
        }
    )
    return cfg["model"]


def _sequences(tokenizer):
    docs = pd.DataFrame({"doc_id": range(40), "domain": "Github", "text": TEXTS})
    return chunk_documents(docs, tokenizer, seq_len=32)["input_ids"].tolist()


def test_pretrain_lowers_loss_and_resumes_exactly(tokenizer, tmp_path):
    seqs = _sequences(tokenizer)
    cfg = tiny_model_cfg()
    full = pretrain(seqs, tokenizer, cfg, seed=0, checkpoint_dir=tmp_path / "a", progress=False)
    assert len(full.losses) == 20
    assert sum(full.losses[-3:]) / 3 < sum(full.losses[:3]) / 3 - 1.0  # nats per token

    run_b = tmp_path / "b"
    pretrain(seqs, tokenizer, cfg, seed=0, checkpoint_dir=run_b, progress=False)
    # simulate a kill after step 15: only the step-15 checkpoint survives
    shutil.rmtree(run_b / "step-000020")
    assert latest_checkpoint(run_b).name == "step-000015"
    resumed = pretrain(seqs, tokenizer, cfg, seed=0, checkpoint_dir=run_b, progress=False)
    assert resumed.resumed_from == 15
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    resumed_state = resumed.model.state_dict()
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(tensor, resumed_state[name], msg=name)

    with pytest.raises(ValueError, match="checkpoint-dir"):
        pretrain(seqs, tokenizer, tiny_model_cfg(lr=1e-3), 0, run_b, progress=False)


def test_saved_model_reloads(tokenizer, tmp_path):
    seqs = _sequences(tokenizer)
    result = pretrain(
        seqs, tokenizer, tiny_model_cfg(steps=2), 0, tmp_path / "ckpt", progress=False
    )
    result.model.save_pretrained(tmp_path / "model")
    model = load_causal_lm(tmp_path / "model", "cpu")
    ids, mask = pad_batch(seqs[:2], tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(
            lm_loss(model(ids, attention_mask=mask).logits, ids, mask),
            lm_loss(result.model(ids, attention_mask=mask).logits, ids, mask),
        )
    with pytest.raises(FileNotFoundError):
        load_causal_lm(tmp_path / "nope")


def test_data_stage_clis(tmp_path):
    """tokenizer -> chunk -> pretrain through the CLI on a tiny documents.parquet."""
    import json

    from transformers import AutoTokenizer

    from testtime.cli import main

    rows = []
    for domain in ("Github", "FreeLaw"):
        for split, n in (("pretrain", 6), ("memory", 3), ("test", 2)):
            for i in range(n):
                text = f"{domain} {split} {i}: " + TEXTS[(len(rows) * 3) % 40] * 2
                rows.append((domain, split, f"src{len(rows)}", text))
    docs = pd.DataFrame(rows, columns=["domain", "split", "source", "text"])
    docs.insert(0, "doc_id", range(len(docs)))
    docs.to_parquet(tmp_path / "documents.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  domains: [Github, FreeLaw]\n  seq_len: 32\n  prompts_per_domain: 2\n"
        "  prompt_tokens: 8\n  eval_tokens: 16\n"
        "model:\n  vocab_size: 320\n  n_layer: 1\n  n_embd: 16\n  n_head: 2\n  n_positions: 32\n"
        "  pretrain: {steps: 3, batch_size: 2, checkpoint_every: 2, bf16: false}\n"
    )
    c, d, r = str(cfg), str(tmp_path / "documents.parquet"), tmp_path
    assert main(["tokenizer", "--config", c, "--documents", d, "--out", str(r / "tok")]) == 0
    assert len(AutoTokenizer.from_pretrained(r / "tok")) == 320
    assert json.loads((r / "tok" / "run.json").read_text())["tokenizer"]["trained_on_docs"] == 12
    outs = ["--pretrain-out", str(r / "pre.parquet"), "--memory-out", str(r / "mem.parquet")]
    argv = ["chunk", "--config", c, "--documents", d, "--tokenizer", str(r / "tok"), *outs]
    assert main([*argv, "--prompts-out", str(r / "prompts.parquet")]) == 0
    memory = pd.read_parquet(r / "mem.parquet")
    assert memory["seq_id"].tolist() == list(range(len(memory)))
    assert set(memory["doc_id"]) == set(docs.loc[docs["split"] == "memory", "doc_id"])
    assert (memory["n_tokens"] <= 32).all() and memory["input_ids"].map(len).eq(
        memory["n_tokens"]
    ).all()
    prompts = pd.read_parquet(r / "prompts.parquet")
    assert prompts["prompt_id"].tolist() == [0, 1, 2, 3]
    assert set(prompts["doc_id"]) <= set(docs.loc[docs["split"] == "test", "doc_id"])
    assert prompts["eval_text"].str.len().gt(0).all()
    argv = ["pretrain", "--config", c, "--tokenizer", str(r / "tok"), "--pretrain"]
    argv += [str(r / "pre.parquet"), "--checkpoint-dir", str(r / "ckpt"), "--out", str(r / "base")]
    assert main(argv) == 0
    record = json.loads((r / "base" / "run.json").read_text())
    assert record["steps"] == 3 and record["final_train_loss"] > 0
    model = load_causal_lm(r / "base")
    assert model.config.n_positions == 32
    assert AutoTokenizer.from_pretrained(r / "base").pad_token == EOT


def test_missing_local_model_is_never_looked_up_online(monkeypatch):
    import transformers

    def online(*args, **kwargs):
        raise AssertionError("from_pretrained called")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", online)
    with pytest.raises(FileNotFoundError, match="'./no_such_model' does not exist"):
        load_causal_lm("./no_such_model")


def test_schedule_warmup_then_cosine_and_how_it_differs_from_hf():
    """Our pre-training LR factor, by hand, and against transformers' cosine-with-warm-up:
    the cosine phase is the same; the warm-up is one step ahead (HF starts at lr 0), which is
    why the workflow keeps its own schedule (switching would change every result)."""
    from transformers import get_cosine_schedule_with_warmup

    from testtime.lm import _schedule

    warmup, total = 4, 12
    ours = _schedule(warmup, total)
    hand = [0.25, 0.5, 0.75, 1.0]  # (step + 1) / warmup
    hand += [0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in range(4, 12)]
    assert [ours(s) for s in range(total)] == pytest.approx(hand, abs=1e-15)
    assert ours(4) == 1.0 and ours(8) == pytest.approx(0.5) and ours(total) == 0.0
    assert ours(total + 5) == 0.0  # held at 0 past the end

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_cosine_schedule_with_warmup(opt, warmup, total).lr_lambdas[0]
    # cosine phase: identical
    assert [ours(s) for s in range(warmup, total + 1)] == [hf(s) for s in range(warmup, total + 1)]
    # warm-up: HF is one step behind (0 at step 0), i.e. ours(s) == hf(s + 1)
    assert hf(0) == 0.0 and ours(0) == 1 / warmup
    assert all(ours(s) != hf(s) for s in range(warmup))
    assert [ours(s) for s in range(warmup)] == [hf(s + 1) for s in range(warmup)]
