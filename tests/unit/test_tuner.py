"""TestTimeTuner and ``testtime generate`` on a tiny pre-trained model and a tiny memory built
from demo-corpus sources (offline, CPU).

Checks: the selection equals the registry's selector run on exact inner-product neighbours
(nn = the top-n by brute force); adaptive stopping follows ``adaptive_stop_steps``; every
selector runs; each prompt starts from the base model and the base weights never change
(hashed); batched adaptation/generation of a list equals one prompt at a time; the adapted
model scores the text it was trained on lower; ``full`` mode restores its weights; bad input
fails with one clear error each; the CLI builds a memory and answers (text and --json) with the
bits per byte before and after and each selection's source document; CLI and API defaults are
the config schema's; flags are checked before anything loads; library noise is hidden.

Run: PYTHONPATH=src:. pytest tests/unit/test_tuner.py
"""

from __future__ import annotations

import inspect
import json
import math
import re

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
    args.setdefault("mode", "lora")
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
    out = capsys.readouterr().out
    assert "kept 4 of 4 files" in out and "generation 0" in out
    gen = ["generate", "--model", str(model), "--memory", mem, "--prompt", PROMPTS[0], "--n", "3"]
    gen += ["--max-new-tokens", "5", "--device", "cpu", "--lr", "1e-2"]
    assert main(gen) == 0
    out = capsys.readouterr().out
    assert "base model:" in out and "adapted (3 steps, full, lr 0.01)" in out and "sigma_n" in out
    assert re.search(r"bits per byte of the prompt: base \d\.\d{4} -> adapted \d\.\d{4}", out)
    assert re.search(r"#\d+ +code_\w+\.txt, part \d+ of \d+", out)  # the source document
    assert main([*gen, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 3 and len(record["selected"]) == 3 and len(record["sigma"]) == 4
    assert (
        record["bpb"]["scored"] == "the prompt"
        and record["bpb"]["adapted"] != record["bpb"]["base"]
    )
    assert {"doc_id", "source", "text"} <= set(record["selected"][0])
    assert [s["repeat"] for s in record["selected"]] == [
        s["seq_id"] in {t["seq_id"] for t in record["selected"][:i]}
        for i, s in enumerate(record["selected"])
    ]
    assert main([*gen[:-2], "--n", "0"]) == 2
    assert "n must be an integer >= 1" in capsys.readouterr().err
    assert main(["generate", "--model", str(model), "--memory", str(tmp_path / "x"),
                 "--prompt", "hi"]) == 2  # fmt: skip
    assert "testtime memory build" in capsys.readouterr().err


def test_defaults_are_the_schema_defaults():
    from testtime.cli import build_parser
    from testtime.config import validate_config

    d = validate_config({})
    sig = inspect.signature(TestTimeTuner)
    assert [sig.parameters[k].default for k in ("n", "k", "lam", "mode")] == [
        d["select"]["n"], d["select"]["k"], d["select"]["lam"], d["finetune"]["mode"]
    ]  # fmt: skip
    sig = inspect.signature(TestTimeTuner.from_pretrained)
    assert sig.parameters["lr"].default == d["finetune"]["lr"]
    assert sig.parameters["optimizer"].default == d["finetune"]["optimizer"]
    parser = build_parser()
    gen = parser.parse_args(["generate", "--model", "m", "--memory", "x", "--prompt", "p"])
    assert (gen.n, gen.k, gen.lam, gen.mode, gen.lr, gen.optimizer) == (
        d["select"]["n"], d["select"]["k"], d["select"]["lam"], d["finetune"]["mode"],
        d["finetune"]["lr"], d["finetune"]["optimizer"],
    )  # fmt: skip
    mem = parser.parse_args(["memory", "build", "--input", "i", "--tokenizer", "t", "--out", "o"])
    assert (mem.seq_len, mem.embed_max_length, mem.nlist, mem.nprobe, mem.index) == (
        d["data"]["seq_len"], d["embed"]["max_length"], d["index"]["nlist"], d["index"]["nprobe"],
        d["index"]["type"],
    )  # fmt: skip
    from testtime.adapters import MODES
    from testtime.cli import generate, memory
    from testtime.memory import TEXT_SUFFIXES

    assert memory.SUFFIXES.split(",") == list(TEXT_SUFFIXES)  # copies kept for a fast --help
    assert set(generate.SELECTORS) == set(SELECTORS) and set(generate.MODES) == set(MODES)
    sub = parser._subparsers._group_actions[0].choices
    assert f"(default: {d['select']['lam']})" in " ".join(sub["generate"].format_help().split())


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--selector", "sfit", "argument --selector: invalid choice: 'sfit'"),
        ("--mode", "lroa", "argument --mode: invalid choice: 'lroa'"),
        ("--device", "gpu", "argument --device: 'gpu': use auto, cpu, cuda or cuda:N"),
    ],
)
def test_flags_are_checked_before_loading(flag, value, message, capsys, tmp_path):
    from testtime.cli import main

    argv = ["generate", "--model", "m", "--memory", str(tmp_path), "--prompt", "p", flag, value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_model_and_device_errors_name_the_flag(setup, tmp_path, capsys):
    from testtime.cli import main

    _, model, _ = setup
    base = ["generate", "--memory", str(setup[0] / "mem"), "--prompt", "p"]
    assert main([*base, "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "does not exist" in err and "tokenizer" not in err
    if not torch.cuda.is_available():
        assert main([*base, "--model", str(model), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device 'cuda' but no CUDA device" in err and "config key" not in err


def test_prompt_bpb_falls_after_adapting_to_its_neighbours(setup):
    _, _, memory = setup
    prompt = memory.text(5)  # a memory sequence: its nearest neighbour is itself
    tuner = _tuner(setup, selector="nn", n=2, mode="full", lr=3e-3)
    before, after = tuner.score(prompt, adapted=False), tuner.score(prompt)
    assert math.isfinite(before) and after < before


def test_library_noise_is_hidden(monkeypatch):
    import warnings

    from transformers.utils import logging as hf_logging

    from testtime.cli._common import quiet_libraries

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries(verbose=False)
        warnings.warn_explicit("fan_in_fan_out is set to False", UserWarning, "layer.py", 1,
                               module="peft.tuners.lora.layer")  # fmt: skip
        warnings.warn_explicit("own note", UserWarning, "memory.py", 1, module="testtime.memory")
    try:
        assert [str(w.message) for w in caught] == ["own note"]
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity_warning()
