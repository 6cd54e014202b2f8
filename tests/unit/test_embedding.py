"""Embeddings of known sentences with the packaged all-MiniLM-L6-v2 (offline).

Checks unit norm, that paraphrases are closer than unrelated sentences, agreement with the
sentence-transformers pipeline of the same model (an independent implementation of mean pooling
+ normalisation), that length-sorted batching returns rows in input order, and the CLI's
sharding, float16 output and id file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


@pytest.fixture(scope="module")
def encoder():
    return load_embedding_model("minilm")


@pytest.fixture(scope="module")
def vectors(encoder):
    return embed_texts(SENTENCES, encoder, batch_size=2, max_length=64, progress=False)


def test_unit_norm_and_paraphrase_closer(vectors):
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    assert sim[0, 1] > 0.6
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4]) + 0.3


def test_matches_sentence_transformers(vectors):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(resolve_model_path("minilm"), device="cpu")
    expect = ref.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(vectors, expect, atol=1e-4)


def test_order_kept_and_bf16_close(encoder, vectors):
    one_by_one = np.concatenate(
        [embed_texts([s], encoder, max_length=64, progress=False) for s in SENTENCES]
    )
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)
    bf16 = embed_texts(SENTENCES, encoder, max_length=64, bf16=True, progress=False)
    assert (np.sum(bf16 * vectors, axis=1) > 0.99).all()


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
