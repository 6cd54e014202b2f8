"""Embeddings of known sentences (offline: the packaged all-MiniLM-L6-v2 and a tiny random
RoBERTa saved to a temporary directory).

Checks unit norm, that paraphrases are closer than unrelated sentences, agreement with an
independent reference (``transformers.AutoModel`` run text by text, mean or first-token pooling
and L2 normalisation written out here), that length-sorted batching returns rows in input order,
and the CLI's sharding, float16 output and id file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from testtime.cli import main
from testtime.embedding import (
    embed_texts,
    ids_path,
    load_embedding_model,
    resolve_model_path,
    to_float16,
)

SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on the rug.",
    "Quarterly revenue rose by twelve percent.",
    "def add(a, b): return a + b",
    "Solve 3*x + 5 = 20 for x.",
]


def reference(path, texts, max_length, pooling):
    """Each text alone through ``AutoModel`` (no padding), pooled and L2-normalised by hand."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
            states = model(**ids).last_hidden_state[0].double().numpy()  # (T, d), all real
            vec = states.mean(axis=0) if pooling == "mean" else states[0]
            rows.append(vec / np.sqrt(np.sum(vec * vec)))
    return np.stack(rows)


@pytest.fixture(scope="module")
def encoder():
    return load_embedding_model("minilm", max_length=64)


@pytest.fixture(scope="module")
def vectors(encoder):
    return embed_texts(SENTENCES, encoder, batch_size=2, progress=False)


def test_unit_norm_and_paraphrase_closer(vectors):
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    assert sim[0, 1] > 0.6
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4]) + 0.3


def test_matches_automodel_mean_pooling(vectors):
    expect = reference(resolve_model_path("minilm"), SENTENCES, 64, "mean")
    np.testing.assert_allclose(vectors, expect, atol=1e-5)


def test_truncation_and_cls_pooling():
    short = load_embedding_model("minilm", pooling="cls", max_length=6)
    got = embed_texts(SENTENCES, short, batch_size=3, progress=False)
    np.testing.assert_allclose(
        got, reference(resolve_model_path("minilm"), SENTENCES, 6, "cls"), atol=1e-5
    )


def test_any_local_encoder(tmp_path):
    """A RoBERTa (the paper's embedder family) from a local directory, never the hub."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    config = RobertaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "roberta")
    tok.save_pretrained(tmp_path / "roberta")
    enc = load_embedding_model(str(tmp_path / "roberta"), max_length=16)
    got = embed_texts(SENTENCES, enc, batch_size=2, progress=False)
    np.testing.assert_allclose(
        got, reference(str(tmp_path / "roberta"), SENTENCES, 16, "mean"), atol=1e-5
    )
    with pytest.raises(FileNotFoundError, match="embed.model"):
        load_embedding_model(str(tmp_path / "missing"))


def test_order_kept_and_bf16_close(encoder, vectors):
    one_by_one = np.concatenate([embed_texts([s], encoder, progress=False) for s in SENTENCES])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)
    bf16 = embed_texts(SENTENCES, encoder, bf16=True, progress=False)
    assert (np.sum(bf16 * vectors, axis=1) > 0.99).all()
    assert embed_texts([], encoder, progress=False).shape == (0, 384)


def test_float16_and_ids_path():
    assert ids_path("x/memory.3.npy") == "x/memory.3.ids.npy"
    with pytest.raises(ValueError):
        ids_path("x/memory.parquet")
    with pytest.raises(ValueError, match="not finite"):
        to_float16(np.array([[1e6, 0.0]]))


def test_cli_shards(tmp_path):
    table = pd.DataFrame({"seq_id": np.arange(5, dtype=np.int64), "text": SENTENCES})
    table.to_parquet(tmp_path / "memory.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("embed:\n  max_length: 32\n  bf16: false\n")
    for shard in (0, 1):
        out = tmp_path / f"memory.{shard}.npy"
        argv = ["embed", "--config", str(cfg), "--input", str(tmp_path / "memory.parquet")]
        argv += ["--text-column", "text", "--id-column", "seq_id", "--shard", str(shard)]
        assert main([*argv, "--num-shards", "2", "--out", str(out)]) == 0
    emb0, ids0 = np.load(tmp_path / "memory.0.npy"), np.load(tmp_path / "memory.0.ids.npy")
    assert emb0.dtype == np.float16 and emb0.shape == (3, 384)
    assert ids0.tolist() == [0, 2, 4] and np.load(tmp_path / "memory.1.ids.npy").tolist() == [1, 3]
    np.testing.assert_allclose(np.linalg.norm(emb0.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert (tmp_path / "memory.0.npy.run.json").is_file()
    bad = [*argv[:7], "--id-column", "nope", "--out", str(tmp_path / "bad.npy")]
    assert main(bad) == 2
    assert not (tmp_path / "bad.npy").exists()
