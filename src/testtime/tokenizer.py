"""Byte-level BPE tokenizer for the demo LM, saved as a transformers tokenizer directory.

``<|endoftext|>`` is the single special token (bos = eos = pad, as in GPT-2); byte-level BPE
needs no unknown token. ``model.source: pretrained`` instead saves the model's own tokenizer
(pad set to eos when missing) so every later stage loads a local directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

EOT = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> Any:
    """Train byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    >>> tok = train_bpe_tokenizer(["hello world"] * 20, vocab_size=300, model_max_length=64)
    >>> tok.decode(tok("hello world")["input_ids"]), tok.eos_token == tok.pad_token == EOT
    ('hello world', True)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        model_max_length=model_max_length,
    )


def load_tokenizer(
    path_or_id: str | os.PathLike[str], *, local: bool = False, flag: str = "tokenizer"
) -> Any:
    """``AutoTokenizer`` from a directory or hub id, with a pad token (eos when missing).

    A local path (``local=True``, or one that looks like a path) must be an existing directory:
    it is never looked up on the hub. Errors name ``flag``.
    """
    from transformers import AutoTokenizer

    from testtime.locations import resolve_model_location

    where, is_local = resolve_model_location(path_or_id, flag, local=local)
    try:
        tok = AutoTokenizer.from_pretrained(where, local_files_only=is_local)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"{flag}: cannot load a tokenizer from {str(path_or_id)!r}: {exc}"
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
