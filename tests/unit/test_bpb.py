"""bits per byte: the formula, disjoint windows scoring each token once, a hand-computable model.

Run: .venv/bin/pytest tests/unit/test_bpb.py
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.tiny_lm import BigramLM, tiny_tokenizer
from testtime.bpb import IGNORE, bits_per_byte, eval_token_ids, make_windows, text_nll


def test_bits_per_byte_formula():
    assert bits_per_byte(math.log(2) * 12, 3) == pytest.approx(4.0)
    assert bits_per_byte(5.0, 7) == pytest.approx(5.0 / (math.log(2) * 7))
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 0)


@pytest.mark.parametrize("context", [1, 2, 3, 5, 64])
def test_windows_score_every_target_once(context):
    gen = torch.Generator().manual_seed(context)
    seqs = [torch.randint(1, 50, (n,), generator=gen) for n in (2, 7, 12)]
    inputs, targets = make_windows(seqs, context)
    assert inputs.shape[-1] <= context
    for b, seq in enumerate(seqs):
        # each (input, target) pair must be a consecutive pair of the sequence, each once
        pairs = [
            (int(x), int(y))
            for x, y in zip(inputs[b].flatten(), targets[b].flatten(), strict=True)
            if y != IGNORE
        ]
        assert pairs == list(zip(seq[:-1].tolist(), seq[1:].tolist(), strict=True))


def test_bigram_model_matches_hand_computed_nll():
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    seq = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    expected = -sum(math.log(probs[a, b]) for a, b in zip(seq[:-1], seq[1:], strict=True))
    for context in (1, 2, 4, 100):  # windows must not change a bigram model's score
        got = text_nll(BigramLM(probs, context), [seq])
        assert got.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_model_gives_log2_vocab_bits_per_token():
    # uniform over 4 tokens: 2 bits per token; 6 tokens over 3 bytes -> 4 bits per byte
    model = BigramLM(torch.full((4, 4), 0.25), context=4)
    nll = text_nll(model, [torch.tensor([0, 1, 2, 3, 0, 1, 2])]).item()
    assert bits_per_byte(nll, 3) == pytest.approx(4.0)


def test_eval_token_ids_prepends_bos_and_rejects_empty():
    tok = tiny_tokenizer()
    ids = eval_token_ids(tok, "def foo(x):")
    assert ids[0].item() == tok.bos_token_id
    assert ids[1:].tolist() == tok("def foo(x):", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="empty"):
        eval_token_ids(tok, "")
