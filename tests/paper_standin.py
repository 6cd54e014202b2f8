"""Offline stand-ins for the paper's hub files, built by the tests (no network).

* :func:`write_pile`: a dataset directory shaped like ``monology/pile-uncopyrighted``:
  ``train/00.jsonl.zst``, ``train/01.jsonl.zst``, ``val.jsonl.zst``, ``test.jsonl.zst``, records
  ``{"text", "meta": {"pile_set_name"}}``, read through the same ``datasets`` call as the hub;
* :func:`save_tiny_gpt2` / :func:`save_tiny_phi3`: tiny causal LMs saved with
  ``save_pretrained`` beside a GPT-2-style byte-level BPE tokenizer (``<|endoftext|>``);
* :func:`save_tiny_roberta`: a tiny Roberta encoder saved locally (the embedder's family).

Texts are seeded: each domain draws from its own word pool (so retrieval finds the domain),
and a few test documents are short (the ``same`` protocol scores them whole).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from testtime.corpus.records import PILE_UNCOPYRIGHTED


def _text(rng: random.Random, domain: str, n_words: int) -> str:
    stem = "".join(c for c in domain.lower() if c.isalpha())[:5]
    pool = [f"{stem}{i}" for i in range(40)] + ["the", "of", "and", "a", "to", "in"]
    return f"{domain}: " + " ".join(rng.choice(pool) for _ in range(n_words)) + "."


def pile_records(
    n: int, seed: int, domains: Sequence[str] = PILE_UNCOPYRIGHTED, short_every: int = 0
) -> list[dict]:
    """``n`` Pile-shaped records cycling through ``domains``; every ``short_every``-th is short
    (about 45 words: kept by the corpus, shorter than a full evaluation window)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        domain = domains[i % len(domains)]
        words = 45 if short_every and i % short_every == short_every - 1 else rng.randint(90, 160)
        out.append({"text": _text(rng, domain, words), "meta": {"pile_set_name": domain}})
    return out


def write_zst(path: Path, records: Sequence[dict]) -> None:
    """JSON lines compressed with zstandard (the Pile's shard format)."""
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))


def write_pile(
    root: Path,
    train_per_shard: int = 120,
    n_test: int = 60,
    domains: Sequence[str] = PILE_UNCOPYRIGHTED,
) -> Path:
    """The dataset directory (module docstring); returns ``root``."""
    write_zst(root / "train" / "00.jsonl.zst", pile_records(train_per_shard, 1, domains))
    write_zst(root / "train" / "01.jsonl.zst", pile_records(train_per_shard, 2, domains))
    write_zst(root / "val.jsonl.zst", pile_records(n_test, 3, domains))
    write_zst(root / "test.jsonl.zst", pile_records(n_test, 4, domains, short_every=5))
    return root


def gpt2_style_tokenizer(texts: Sequence[str], model_max_length: int):
    """Byte-level BPE with ``<|endoftext|>`` as bos = eos (GPT-2's scheme), vocab 400."""
    from testtime.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(texts, vocab_size=400, model_max_length=model_max_length)


def save_tiny_gpt2(path: Path, texts: Sequence[str], n_positions: int = 128) -> Path:
    """A 2-layer GPT-2 (d=32) and its tokenizer, ``save_pretrained`` into ``path``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_style_tokenizer(texts, n_positions)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_phi3(path: Path, texts: Sequence[str], context: int = 128) -> Path:
    """A 2-layer Phi-3-architecture LM (d=32) and a GPT-2-style tokenizer in ``path``."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    tok = gpt2_style_tokenizer(texts, context)
    cfg = Phi3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=context,
        original_max_position_embeddings=context,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Phi3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_roberta(path: Path) -> Path:
    """A 2-layer Roberta encoder (d=32) with a small WordPiece tokenizer, saved into ``path``."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from testtime.embedding import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    cfg = RobertaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(cfg, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)
    return path
