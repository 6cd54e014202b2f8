"""A byte-level BPE tokenizer trained on a few lines of code, shared by the tokenizer, chunking
and LM tests (trained in memory, offline, in about a second)."""

from __future__ import annotations

from typing import Any

TEXTS = [
    f"def f{i}(x):\n    return x * {i} + {i % 7}  # the quick brown fox jumps\n" * 4
    for i in range(40)
]


def code_tokenizer() -> Any:
    """``train_bpe_tokenizer`` on :data:`TEXTS`: vocab 320, context 32 tokens."""
    from testtime.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(TEXTS, vocab_size=320, model_max_length=32)
