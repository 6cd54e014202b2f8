"""Tokenizer (testtime.tokenizer) on tiny inputs.

Checks: the trained byte-level BPE round-trips text, has the single special token and reloads
from its directory; a --tokenizer that does not exist is a one-line error and never a hub lookup.
"""

from __future__ import annotations

import pytest

from tests.unit.tiny_code import code_tokenizer
from testtime.tokenizer import EOT, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return code_tokenizer()


def test_tokenizer_round_trip_and_specials(tokenizer, tmp_path):
    text = "def f3(x):\n    return x * 3  # ünïcödé"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.convert_ids_to_tokens([tokenizer.eos_token_id]) == [EOT]
    assert tokenizer.pad_token_id == tokenizer.bos_token_id == tokenizer.eos_token_id
    assert len(tokenizer) == 320
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.model_max_length == 32


@pytest.mark.parametrize("where", ["missing_tok", "data/demo/tokenizer", "/no/such/tokenizer"])
def test_missing_local_tokenizer_is_never_looked_up_online(tmp_path, monkeypatch, capsys, where):
    """A --tokenizer that does not exist is a one-line error; the hub is never asked."""
    import transformers

    from testtime.cli import main

    def online(*args, **kwargs):
        raise AssertionError(f"from_pretrained called with {args}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", online)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {seq_len: 32, eval_tokens: 32}\nmodel: {n_positions: 32}\n")
    outs = [
        "--pretrain-out",
        "p.parquet",
        "--memory-out",
        "m.parquet",
        "--prompts-out",
        "q.parquet",
    ]
    argv = ["chunk", "--config", str(cfg), "--documents", "d.parquet", "--tokenizer", where]
    assert main([*argv, *outs]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"testtime chunk: error: --tokenizer '{where}' does not exist "
        "(local path, not looked up online)"
    )
