"""Tiny models and tokenizers shared by the fine-tuning and bpb tests (built in memory, offline)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

TEXTS = [
    "def foo(x):\n    return x + 1\n",
    "The quick brown fox jumps over the lazy dog. ",
    "1 + 2 = 3; 4 * 5 = 20",
]


def tiny_gpt2(vocab: int = 64, n_positions: int = 32, tied: bool = True, seed: int = 0):
    """A 2-layer GPT-2 (d=32) with dropout off, seeded."""
    from testtime.benchmarks.finetune import random_gpt2

    return random_gpt2(2, 32, 2, n_positions, vocab, seed, tied=tied)


def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 300) with ``<|endoftext|>`` as bos/eos (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


class BigramLM(torch.nn.Module):
    """A causal LM with known probabilities: p(next = j | current = i) = probs[i, j]."""

    def __init__(self, probs: torch.Tensor, context: int) -> None:
        super().__init__()
        self.log_probs = torch.nn.Parameter(probs.log())
        self.config = SimpleNamespace(n_positions=context)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.log_probs[input_ids])
