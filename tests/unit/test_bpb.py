"""bits per byte: the formula, disjoint windows scoring each token once, a hand-computable model.

Run: .venv/bin/pytest tests/unit/test_bpb.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.unit.tiny_lm import BigramLM, tiny_tokenizer
from testtime.bpb import IGNORE, bits_per_byte, eval_token_ids, make_windows, score_windows


def _windows_nll(model: BigramLM, seqs, unscored=None) -> torch.Tensor:
    """The library's scoring (:func:`make_windows` + :func:`score_windows`) at the model's own
    context; the tests compare it with hand-computed bigram values."""
    inputs, targets = make_windows(seqs, model.config.n_positions, unscored=unscored)
    return score_windows(lambda x: model(x).logits, inputs, targets)


def test_bits_per_byte_formula():
    assert bits_per_byte(math.log(2) * 12, 3) == pytest.approx(4.0)
    assert bits_per_byte(5.0, 7) == pytest.approx(5.0 / (math.log(2) * 7))
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 0)


def test_bits_per_byte_on_arrays_equals_scalar_calls():
    nll = np.array([5.0, math.log(2) * 12, 0.3])
    n_bytes = np.array([7, 3, 11])
    got = bits_per_byte(nll, n_bytes)
    expected = [bits_per_byte(float(a), int(b)) for a, b in zip(nll, n_bytes, strict=True)]
    assert got.tolist() == expected
    assert bits_per_byte(nll, 4).tolist() == [bits_per_byte(float(a), 4) for a in nll]
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(nll, np.array([1, 0, 2]))


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
        got = _windows_nll(BigramLM(probs, context), [seq])
        assert got.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_model_gives_log2_vocab_bits_per_token():
    # uniform over 4 tokens: 2 bits per token; 6 tokens over 3 bytes -> 4 bits per byte
    model = BigramLM(torch.full((4, 4), 0.25), context=4)
    nll = _windows_nll(model, [torch.tensor([0, 1, 2, 3, 0, 1, 2])]).item()
    assert bits_per_byte(nll, 3) == pytest.approx(4.0)


def test_eval_token_ids_prepends_bos_and_rejects_empty():
    tok = tiny_tokenizer()
    ids, n_context = eval_token_ids(tok, "def foo(x):")
    assert ids[0].item() == tok.bos_token_id and n_context == 0
    assert ids[1:].tolist() == tok("def foo(x):", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="empty"):
        eval_token_ids(tok, "")


def test_eval_token_ids_with_context_keeps_text_tokens_last():
    tok = tiny_tokenizer()
    ids, n_context = eval_token_ids(tok, "return x + 1", context="def foo(x):")
    ctx = tok("def foo(x):", add_special_tokens=False)["input_ids"]
    text = tok("return x + 1", add_special_tokens=False)["input_ids"]
    assert n_context == len(ctx)
    assert ids.tolist() == [tok.bos_token_id, *ctx, *text]


# The two evaluation protocols on a bigram model, scored by hand (docs/pipeline.md section 1):
# `same` scores every token of the embedded text after the bos; `split` conditions on a context
# whose own tokens are never scored.
PROBS = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])


def _hand_nll(pairs):
    return -sum(math.log(PROBS[a, b]) for a, b in pairs)


@pytest.mark.parametrize("context", [2, 3, 100])
def test_same_protocol_scores_every_text_token(context):
    seq = torch.tensor([0, 1, 1, 2, 0])  # bos 0, text 1 1 2 0
    got = _windows_nll(BigramLM(PROBS, context), [seq]).item()
    assert got == pytest.approx(_hand_nll([(0, 1), (1, 1), (1, 2), (2, 0)]), rel=1e-6)


@pytest.mark.parametrize("context", [2, 3, 100])
def test_split_protocol_never_scores_the_context(context):
    # bos 0, context 2 2, text 1 0: scored pairs are (2 -> 1) and (1 -> 0) only
    seq = torch.tensor([0, 2, 2, 1, 0])
    got = _windows_nll(BigramLM(PROBS, context), [seq], unscored=[2]).item()
    assert got == pytest.approx(_hand_nll([(2, 1), (1, 0)]), rel=1e-6)
    # the same text without the context is scored from the bos: a different number
    alone = _windows_nll(BigramLM(PROBS, context), [torch.tensor([0, 1, 0])]).item()
    assert alone == pytest.approx(_hand_nll([(0, 1), (1, 0)]), rel=1e-6)
    assert got != pytest.approx(alone)
    # the context's own tokens do not count: changing them changes only the first conditional
    other = _windows_nll(BigramLM(PROBS, context), [torch.tensor([0, 1, 0, 1, 0])], unscored=[2])
    assert other.item() == pytest.approx(_hand_nll([(0, 1), (1, 0)]), rel=1e-6)


def test_context_must_leave_a_scored_token():
    with pytest.raises(ValueError, match="scored token"):
        make_windows([torch.tensor([0, 1, 2])], 4, unscored=[2])
