"""TestTimeTuner and ``testtime generate`` on a tiny pre-trained model and a tiny memory built
from demo-corpus sources (offline, CPU).

Checks: the selection equals the registry's selector run on exact inner-product neighbours
(nn = the top-n by brute force); adaptive stopping follows ``adaptive_stop_steps``; every
selector runs; each prompt starts from the base model and the base weights never change
(hashed); batched adaptation/generation of a list equals one prompt at a time; the adapted
model scores the text it was trained on lower; ``full`` mode restores its weights; bad input
fails with one clear error each; the CLI builds a memory and answers (text and --json).

Run: PYTHONPATH=src:. pytest tests/unit/test_tuner.py
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.unit.tiny_memory import SEQ_LEN, demo_documents, pretrained_model, write_text_dir
from testtime import Memory, TestTimeTuner
from testtime.memory import build_memory
from testtime.selection import SELECTORS, adaptive_stop_steps

PROMPTS = ["def hls_to_rgb(h, l, s):", "Wrap a single paragraph of text"]
LORA = {"target_modules": ["c_attn", "c_proj", "c_fc"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuner")
    docs = demo_documents()
    model = pretrained_model(root, docs, steps=40)
    write_text_dir(root / "docs", docs)
    build_memory(root / "docs", root / "mem", tokenizer_name=str(model), seq_len=SEQ_LEN,
                 progress=False)  # fmt: skip
    return root, model, Memory.open(root / "mem")


def _tuner(setup, **kw):
    _, model, memory = setup
    args = {"n": 4, "lam": 0.1, "k": 40, "lr": 1e-2, "device": "cpu", "lora": LORA} | kw
    return TestTimeTuner.from_pretrained(str(model), memory, **args)


def test_selection_matches_registry_on_exact_neighbours(setup):
    _, _, memory = setup
    tuner = _tuner(setup, selector="nn", n=3)
    q = memory.embed(PROMPTS[:1])
    brute = np.argsort(-(q @ memory.embeddings.T)[0], kind="stable")[:3]
    adaptation = tuner.adapt(PROMPTS[0])
    assert adaptation.seq_ids == brute.tolist()
    assert adaptation.texts == [memory.text(i) for i in brute]
    tuner = _tuner(setup, selector="sift", n=4)
    _, ids = memory.search(q, 40)
    ref = SELECTORS["sift"](torch.from_numpy(q), torch.from_numpy(memory.embeddings[ids]), 4,
                            lam=0.1)  # fmt: skip
    got = tuner.adapt(PROMPTS[0])
    assert got.seq_ids == ids[0, ref.indices[0].numpy()].tolist()
    assert got.variances == pytest.approx(ref.variances[0].tolist())
    assert got.sigmas[0] == pytest.approx(1.0, abs=1e-3)  # unit-norm query


def test_adaptive_stopping(setup):
    tuner = _tuner(setup, n=6, alpha=2.0)
    a = tuner.adapt(PROMPTS[0])
    want = int(adaptive_stop_steps(torch.tensor([a.variances]), 2.0)[0])
    assert a.steps == want == len(a.seq_ids) < 6


@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_every_selector_adapts(setup, selector):
    a = _tuner(setup, selector=selector, n=2).adapt(PROMPTS[1])
    assert a.steps == 2 and len(a.seq_ids) == 2 and len(a.variances) == 3


def test_base_unchanged_batched_equals_one_at_a_time(setup):
    tuner = _tuner(setup)
    base = tuner.base_fingerprint()
    many = tuner.generate(PROMPTS, max_new_tokens=8)
    scores = [tuner.score(p, "return (r, g, b)") for p in PROMPTS]
    assert tuner.base_fingerprint() == base
    fresh = _tuner(setup)
    for p, text, s in zip(PROMPTS[::-1], many[::-1], scores[::-1], strict=True):
        assert fresh.generate(p, max_new_tokens=8) == text  # starts from base, not from p1
        assert fresh.score(p, "return (r, g, b)") == pytest.approx(s, rel=1e-5)
        for name, v in fresh.adapt(p).adapter.items():
            torch.testing.assert_close(v, tuner.adapt(p).adapter[name], rtol=1e-5, atol=1e-6)
    assert fresh.base_fingerprint() == base


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_adapted_model_fits_its_selection(setup, mode):
    tuner = _tuner(setup, mode=mode, lr=3e-3, n=3)
    base = tuner.base_fingerprint()
    a = tuner.adapt(PROMPTS[0])
    text = a.texts[0]
    before, after = tuner.score(PROMPTS[0], text, adapted=False), tuner.score(PROMPTS[0], text)
    assert math.isfinite(after) and after < before
    assert isinstance(tuner.generate(PROMPTS[0], max_new_tokens=4), str)
    assert tuner.base_fingerprint() == base


def test_bad_input_errors(setup, tmp_path):
    root, model, memory = setup
    with pytest.raises(ValueError, match="unknown selector 'sfit'"):
        _tuner(setup, selector="sfit")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        _tuner(setup, n=0)
    with pytest.raises(FileNotFoundError, match="testtime memory build"):
        TestTimeTuner.from_pretrained(str(model), tmp_path / "none")
    with pytest.raises(ValueError, match="embedded with 'minilm'"):
        _tuner(setup, embedder="sentence-transformers/other")
    tuner = _tuner(setup)
    with pytest.raises(ValueError, match="the model context is 64 tokens"):
        tuner.adapt("x = 1; " * 60)
    with pytest.raises(ValueError, match="exceeds the model context"):
        tuner.generate(PROMPTS[0], max_new_tokens=200)
    with pytest.raises(ValueError, match="non-empty string"):
        tuner.adapt("  ")
    with pytest.raises(ValueError, match="non-finite training loss"):
        _tuner(setup, lr=1e30, n=3).adapt(PROMPTS[0])
    from transformers import GPT2Config, GPT2LMHeadModel

    from testtime.tokenizer import train_bpe_tokenizer

    other = tmp_path / "other"
    train_bpe_tokenizer(["zzz yyy"] * 5, 280, 64).save_pretrained(other)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=280, n_positions=64)
                    ).save_pretrained(other)  # fmt: skip
    with pytest.raises(ValueError, match="different tokenizer"):
        TestTimeTuner.from_pretrained(str(other), memory)


def test_cli_memory_build_and_generate(setup, tmp_path, capsys):
    from testtime.cli import main

    root, model, _ = setup
    docs = write_text_dir(tmp_path / "docs", dict(list(demo_documents().items())[:4]))
    mem = str(tmp_path / "mem")
    argv = ["memory", "build", "--input", str(docs), "--model", "minilm", "--tokenizer"]
    assert (
        main([*argv, str(model), "--seq-len", str(SEQ_LEN), "--out", mem, "--device", "cpu"]) == 0
    )
    assert "generation 0" in capsys.readouterr().out
    gen = ["generate", "--model", str(model), "--memory", mem, "--prompt", PROMPTS[0], "--n", "3"]
    gen += ["--max-new-tokens", "5", "--device", "cpu", "--lr", "1e-2"]
    assert main(gen) == 0
    out = capsys.readouterr().out
    assert "base model:" in out and "adapted (3 steps):" in out and "sigma_n" in out
    assert main([*gen, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 3 and len(record["selected"]) == 3 and len(record["sigma"]) == 4
    assert [s["repeat"] for s in record["selected"]] == [
        s["seq_id"] in {t["seq_id"] for t in record["selected"][:i]}
        for i, s in enumerate(record["selected"])
    ]
    assert main([*gen[:-2], "--n", "0"]) == 2
    assert "n must be an integer >= 1" in capsys.readouterr().err
    assert main(["generate", "--model", str(model), "--memory", str(tmp_path / "x"),
                 "--prompt", "hi"]) == 2  # fmt: skip
    assert "testtime memory build" in capsys.readouterr().err
