"""Faiss index and candidate pre-selection against brute-force numpy.

Checks that flat top-K equals the numpy top-K of inner products (ids and scores), that IVF
probing every cell is exact too, that IVF-PQ returns K valid ids, that shard merging orders rows
by id and rejects missing / duplicate ids and dimension mismatches, that K > M, non-finite input
and a query dimension mismatch raise errors naming the cause, and the CLI's candidates table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from testtime.cli import main
from testtime.config import validate_config
from testtime.index import (
    build_index,
    candidates_table,
    check_index_matches,
    merge_shards,
    search,
)
from testtime.io import save_npy


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_top_k(mem: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q.astype(np.float64) @ mem.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def index_cfg(**kw):
    return validate_config({"index": kw})["index"]


@pytest.fixture(scope="module")
def data():
    return unit_rows(500, 32, 0), unit_rows(7, 32, 1)


def test_flat_equals_brute_force(data):
    mem, q = data
    scores, ids = search(build_index(mem, index_cfg(), seed=0), q, 20)
    ref_scores, ref_ids = brute_top_k(mem, q, 20)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_ivf_full_probe_exact_and_ivfpq_valid(data):
    mem, q = data
    with pytest.warns(UserWarning, match="index.nlist"):
        index = build_index(mem, index_cfg(type="ivf", nlist=64, nprobe=64), seed=0)
    assert index.nlist == 500 // 39
    cfg = index_cfg(type="ivf", nlist=12, nprobe=12)
    _, ids = search(index, q, 20, cfg)
    np.testing.assert_array_equal(ids, brute_top_k(mem, q, 20)[1])
    pq_cfg = index_cfg(type="ivfpq", nlist=4, nprobe=4, pq_m=8)
    _, ids = search(build_index(mem, pq_cfg, seed=0), q, 20, pq_cfg)
    assert ids.shape == (7, 20) and ((ids >= 0) & (ids < 500)).all()
    assert all(len(set(row)) == 20 for row in ids.tolist())
    with pytest.raises(ValueError, match=r"index\.pq_m"):
        build_index(mem, index_cfg(type="ivfpq", nlist=4, pq_m=5), seed=0)


def test_search_errors(data):
    mem, q = data
    index = build_index(mem, index_cfg(), seed=0)
    check_index_matches(index, mem)
    for wrong in (mem[:-1], mem[:, :16]):
        with pytest.raises(ValueError, match="rebuild the index"):
            check_index_matches(index, wrong)
    with pytest.raises(ValueError, match=r"select\.k"):
        search(index, q, 501)
    with pytest.raises(ValueError, match="dimension"):
        search(index, q[:, :16], 5)
    bad = q.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        search(index, bad, 5)
    bad_mem = mem.copy()
    bad_mem[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        build_index(bad_mem, index_cfg(), seed=0)


def _write(path, emb, ids):
    save_npy(path, emb.astype(np.float16))
    save_npy(str(path).replace(".npy", ".ids.npy"), np.asarray(ids, dtype=np.int64))


def test_merge_shards(tmp_path, data):
    mem, _ = data
    _write(tmp_path / "m.0.npy", mem[0::2], np.arange(0, 500, 2))
    _write(tmp_path / "m.1.npy", mem[1::2], np.arange(1, 500, 2))
    merged = merge_shards([tmp_path / "m.1.npy", tmp_path / "m.0.npy"]).embeddings
    np.testing.assert_array_equal(merged, mem.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="not exactly 0..249"):
        merge_shards([tmp_path / "m.1.npy"])
    with pytest.raises(ValueError, match="not exactly"):
        merge_shards([tmp_path / "m.0.npy", tmp_path / "m.0.npy"])
    _write(tmp_path / "d.npy", mem[1::2, :16], np.arange(1, 500, 2))
    with pytest.raises(ValueError, match="different dimensions"):
        merge_shards([tmp_path / "m.0.npy", tmp_path / "d.npy"])
    with pytest.raises(FileNotFoundError):
        merge_shards([tmp_path / "missing.npy"])


def test_cli_index_and_candidates(tmp_path, data):
    mem, q = data
    _write(tmp_path / "memory.0.npy", mem[0::2], np.arange(0, 500, 2))
    _write(tmp_path / "memory.1.npy", mem[1::2], np.arange(1, 500, 2))
    _write(tmp_path / "prompts.npy", q, np.arange(10, 17))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("select:\n  k: 15\n  n: 5\n")
    shards = [str(tmp_path / "memory.0.npy"), str(tmp_path / "memory.1.npy")]
    index = str(tmp_path / "memory.faiss")
    assert main(["index", "--config", str(cfg), "--embeddings", *shards, "--out", index]) == 0
    out = tmp_path / "candidates.parquet"
    argv = ["candidates", "--config", str(cfg), "--index", index]
    assert main([*argv, "--queries", str(tmp_path / "prompts.npy"), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table.groupby("prompt_id").size().tolist() == [15] * 7
    assert table["rank"].dtype == np.int32 and table["memory_id"].dtype == np.int64
    mem16 = mem.astype(np.float16).astype(np.float32)
    q16 = q.astype(np.float16).astype(np.float32)
    ref_scores, ref_ids = brute_top_k(mem16, q16, 15)
    np.testing.assert_array_equal(table["memory_id"].to_numpy().reshape(7, 15), ref_ids)
    np.testing.assert_allclose(table["score"].to_numpy().reshape(7, 15), ref_scores, atol=1e-5)
    assert table["prompt_id"].tolist() == np.repeat(np.arange(10, 17), 15).tolist()
    cfg.write_text("select:\n  k: 600\n  n: 5\n")
    bad = tmp_path / "bad.parquet"
    assert main([*argv, "--queries", str(tmp_path / "prompts.npy"), "--out", str(bad)]) == 2
    assert not bad.exists()


def test_candidates_table_sorted():
    table = candidates_table(np.array([3, 1]), np.ones((2, 2)), np.array([[5, 6], [7, 8]]))
    assert table["prompt_id"].tolist() == [1, 1, 3, 3]
    assert table["memory_id"].tolist() == [7, 8, 5, 6]


def _memory_table() -> pd.DataFrame:
    """3 domains with 4, 6 and 2 documents of 1-3 sequences each."""
    rows = []
    for domain, n_docs in (("a", 4), ("b", 6), ("c", 2)):
        for _ in range(n_docs):
            doc = len({r[1] for r in rows})
            rows += [(len(rows) + i, doc, domain) for i in range(1 + doc % 3)]
    return pd.DataFrame(rows, columns=["seq_id", "doc_id", "domain"])


def test_memory_subsets_are_nested_per_domain_and_keep_whole_documents():
    from testtime.index import memory_subset

    mem = _memory_table()
    previous: set[int] = set()
    for fraction, per_domain in ((0.25, {"a": 1, "b": 2, "c": 1}), (0.5, {"a": 2, "b": 3, "c": 1})):
        ids = memory_subset(mem, fraction, seed=0)
        kept = mem[mem.seq_id.isin(ids)]
        assert kept.groupby("domain").doc_id.nunique().to_dict() == per_domain
        docs = set(kept.doc_id)
        assert set(ids) == set(mem[mem.doc_id.isin(docs)].seq_id)  # every sequence of a kept doc
        assert previous <= set(ids)  # nested
        previous = set(ids)
    assert set(memory_subset(mem, 1.0, 0)) == set(mem.seq_id)
    assert set(memory_subset(mem, 0.5, 0)) != set(memory_subset(mem, 0.5, 1))
    with pytest.raises(ValueError, match="select.memory_fractions"):
        memory_subset(mem, 0.0, 0)


def test_search_restricted_to_a_subset_equals_brute_force():
    mem, q = unit_rows(300, 16, 1), unit_rows(5, 16, 2)
    subset = np.sort(np.random.default_rng(3).choice(300, 90, replace=False))
    index = build_index(mem, index_cfg(), 0)
    scores, ids = search(index, q, 10, index_cfg(), subset)
    ref_scores, ref_local = brute_top_k(mem[subset], q, 10)
    np.testing.assert_array_equal(ids, subset[ref_local])
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    with pytest.raises(ValueError, match="select.k.*subset"):
        search(index, q, 91, index_cfg(), subset)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_index_is_a_one_line_error(tmp_path, data, capsys, damage):
    mem, q = data
    _write(tmp_path / "memory.0.npy", mem, np.arange(500))
    _write(tmp_path / "prompts.npy", q, np.arange(7))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("select:\n  k: 5\n  n: 2\n")
    index = tmp_path / "memory.faiss"
    argv = ["index", "--config", str(cfg), "--embeddings", str(tmp_path / "memory.0.npy")]
    assert main([*argv, "--out", str(index)]) == 0
    blob = index.read_bytes()
    index.write_bytes(
        {"truncated": blob[: len(blob) // 2], "garbage": b"not an index" * 10, "empty": b""}[damage]
    )
    out = tmp_path / "candidates.parquet"
    argv = ["candidates", "--config", str(cfg), "--index", str(index)]
    assert main([*argv, "--queries", str(tmp_path / "prompts.npy"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--index '{index}' is not a readable Faiss index" in err
    assert not out.exists()


def test_out_that_is_a_directory_is_a_one_line_error(tmp_path, data, capsys):
    mem, _ = data
    _write(tmp_path / "memory.0.npy", mem, np.arange(500))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("select:\n  k: 5\n  n: 2\n")
    (tmp_path / "out").mkdir()
    argv = ["index", "--config", str(cfg), "--embeddings", str(tmp_path / "memory.0.npy")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"testtime index: error: --out '{tmp_path / 'out'}' is a directory, expected a file path"
    )
    assert list((tmp_path / "out").iterdir()) == []
