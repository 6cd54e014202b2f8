"""Chunking (testtime.chunking) on tiny inputs.

Checks: windows and prompts follow the contract (lengths computed by hand) under both
protocols, and bad data settings are errors naming the config key.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.unit.tiny_code import TEXTS, code_tokenizer
from testtime.chunking import check_seq_len, chunk_documents, make_prompts


@pytest.fixture(scope="module")
def tokenizer():
    return code_tokenizer()


def test_chunks_and_prompts(tokenizer):
    docs = pd.DataFrame(
        {"doc_id": [5, 9], "domain": ["Github", "Github"], "text": [TEXTS[0], TEXTS[1][:50]]}
    )
    n0 = len(tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"])
    n1 = len(tokenizer(TEXTS[1][:50], add_special_tokens=False)["input_ids"])
    seqs = chunk_documents(docs, tokenizer, seq_len=20)
    # full windows of 20, then a tail kept only when it has >= 16 tokens
    expect = [20] * (n0 // 20) + ([n0 % 20] if n0 % 20 >= 16 else [])
    expect += [20] * (n1 // 20) + ([n1 % 20] if n1 % 20 >= 16 else [])
    assert seqs["n_tokens"].tolist() == expect
    assert seqs["seq_id"].tolist() == list(range(len(expect)))
    assert seqs["input_ids"].map(len).tolist() == expect
    joined = "".join(seqs.loc[seqs["doc_id"] == 5, "text"])
    assert TEXTS[0].startswith(joined)
    ids = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    split = make_prompts(docs, tokenizer, 1, 10, 12, domains=["Github"], protocol="split")
    assert split.loc[0, "prompt_text"] == split.loc[0, "context_text"] == tokenizer.decode(ids[:10])
    assert split.loc[0, "eval_text"] == tokenizer.decode(ids[10:22])
    # same (the paper's protocol): the embedded text is the scored text, no context
    same = make_prompts(docs, tokenizer, 1, 10, 12, domains=["Github"], protocol="same")
    assert same.loc[0, "prompt_text"] == same.loc[0, "eval_text"] == tokenizer.decode(ids[:12])
    assert same.loc[0, "context_text"] == ""
    assert list(same.columns) == list(split.columns)
    with pytest.raises(ValueError, match=r"data\.prompts_per_domain"):
        make_prompts(docs, tokenizer, 2, 10, 12, domains=["Github"], protocol="split")
    with pytest.raises(ValueError, match=r"data\.prompts_per_domain.*data\.eval_tokens"):
        make_prompts(docs, tokenizer, 1, 10, n0 + 1, domains=["Github"], protocol="same")
    with pytest.raises(ValueError, match=r"data\.protocol"):
        make_prompts(docs, tokenizer, 1, 10, 12, domains=["Github"], protocol="both")
    with pytest.raises(ValueError, match=r"data\.seq_len"):
        check_seq_len(64, tokenizer)
