"""`testtime select` on tiny hand-made files (docs/pipeline.md §4).

Writes candidates.parquet, two float16 memory shards and prompt embeddings by hand, runs the
CLI and checks the table's columns and dtypes, steps 0..n per prompt, that step 0 is k(x*, x*),
that SIFT's picks are the greedy argmin of a float64 direct solve over the prompt's candidates,
that the lam of a sweep variant is used, that random is reproducible and independent of the
batching, the run.json record, and the errors for bad inputs (exit status 2, message naming
the file or argument; nn with select.n > select.k stops at the config).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from testtime.cli import main
from testtime.io import save_npy, write_parquet

D, M, K, N = 6, 12, 5, 3


def post_var(q: np.ndarray, xs: np.ndarray, lam: float) -> float:
    """σ²(q | xs) by a direct float64 solve."""
    if len(xs) == 0:
        return float(q @ q)
    kx = xs @ q
    return float(q @ q - kx @ np.linalg.solve(xs @ xs.T + lam * np.eye(len(xs)), kx))


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    mem = rng.standard_normal((M, D))
    mem = (mem / np.linalg.norm(mem, axis=1, keepdims=True)).astype(np.float16)
    mem[7] = mem[3]  # an exact duplicate inside the memory
    ids = np.arange(M)
    for shard in (0, 1):  # shard I holds rows i % 2 == I, as the embed stage writes them
        save_npy(tmp_path / f"memory.{shard}.npy", mem[ids % 2 == shard])
        save_npy(tmp_path / f"memory.{shard}.ids.npy", ids[ids % 2 == shard])
    prompts = rng.standard_normal((3, D))
    prompts = (prompts / np.linalg.norm(prompts, axis=1, keepdims=True)).astype(np.float16)
    prompt_ids = np.array([12, 10, 11])  # not 0-based, not sorted: mapping is by id
    save_npy(tmp_path / "prompts.npy", prompts)
    save_npy(tmp_path / "prompts.ids.npy", prompt_ids)
    rows = []
    for pid, q in zip(prompt_ids, prompts, strict=True):
        scores = mem.astype(np.float64) @ q.astype(np.float64)
        for rank, mid in enumerate(np.argsort(-scores, kind="stable")[:K]):
            rows.append((pid, rank, mid, scores[mid]))
    cand = pd.DataFrame(rows, columns=["prompt_id", "rank", "memory_id", "score"])
    cand = cand.astype({"prompt_id": "int64", "rank": "int32", "memory_id": "int64"})
    write_parquet(tmp_path / "candidates.parquet", cand.astype({"score": "float32"}))
    config = {
        "seed": 3,
        "device": "cpu",
        "select": {"k": K, "n": N, "lam": 0.5, "lam_sweep": [0.01]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def select(run_dir, method: str, *extra: str, candidates: str = "candidates.parquet") -> int:
    return main(
        [
            "select",
            "--config",
            str(run_dir / "config.yaml"),
            "--method",
            method,
            "--candidates",
            str(run_dir / candidates),
            "--memory-embeddings",
            str(run_dir / "memory.0.npy"),
            str(run_dir / "memory.1.npy"),
            "--prompt-embeddings",
            str(run_dir / "prompts.npy"),
            "--out",
            str(run_dir / "selections" / f"{method}.parquet"),
            *extra,
        ]
    )


def inputs(run_dir):
    mem = np.empty((M, D))
    for shard in (0, 1):
        mem[np.load(run_dir / f"memory.{shard}.ids.npy")] = np.load(run_dir / f"memory.{shard}.npy")
    prompts = dict(
        zip(
            np.load(run_dir / "prompts.ids.npy").tolist(),
            np.load(run_dir / "prompts.npy"),
            strict=True,
        )
    )
    cand = pd.read_parquet(run_dir / "candidates.parquet")
    return mem, prompts, cand


@pytest.mark.parametrize(("method", "lam"), [("sift", 0.5), ("sift_lam0.01", 0.01)])
def test_sift_table_matches_direct_solve(run_dir, method: str, lam: float) -> None:
    assert select(run_dir, method) == 0
    out = pd.read_parquet(run_dir / "selections" / f"{method}.parquet")
    assert list(out.columns) == ["prompt_id", "step", "memory_id", "variance"]
    assert [str(t) for t in out.dtypes] == ["int64", "int32", "int64", "float32"]
    mem, prompts, cand = inputs(run_dir)
    assert sorted(out.prompt_id.unique()) == [10, 11, 12]
    for pid, rows in out.groupby("prompt_id"):
        q = prompts[pid].astype(np.float64)
        assert rows.step.tolist() == list(range(N + 1))
        assert rows.memory_id.iloc[0] == -1
        options = cand[cand.prompt_id == pid].sort_values("rank").memory_id.tolist()
        chosen: list[int] = []
        for step, mid, var in rows[["step", "memory_id", "variance"]].itertuples(index=False):
            if step > 0:  # the pick is the greedy argmin over the prompt's K candidates
                scores = [post_var(q, mem[chosen + [o]], lam) for o in options]
                assert mid in options
                assert post_var(q, mem[chosen + [mid]], lam) == pytest.approx(min(scores), abs=1e-6)
                chosen.append(mid)
            assert var == pytest.approx(post_var(q, mem[chosen], lam), abs=1e-5)
    record = json.loads((run_dir / "selections" / f"{method}.parquet.run.json").read_text())
    assert record["method"] == method and record["lam"] == lam and record["device"] == "cpu"


def test_nn_picks_candidates_by_rank(run_dir) -> None:
    assert select(run_dir, "nn") == 0
    out = pd.read_parquet(run_dir / "selections" / "nn.parquet")
    _, _, cand = inputs(run_dir)
    for pid, rows in out.groupby("prompt_id"):
        by_rank = cand[cand.prompt_id == pid].sort_values("rank").memory_id.tolist()
        assert rows.memory_id.tolist()[1:] == by_rank[:N]


def test_random_is_reproducible_and_batch_independent(run_dir) -> None:
    assert select(run_dir, "random") == 0
    first = pd.read_parquet(run_dir / "selections" / "random.parquet")
    assert select(run_dir, "random", "--batch-prompts", "1") == 0
    second = pd.read_parquet(run_dir / "selections" / "random.parquet")
    pd.testing.assert_frame_equal(first, second)
    _, _, cand = inputs(run_dir)
    for pid, rows in first.groupby("prompt_id"):
        picked = rows.memory_id.tolist()[1:]
        assert len(set(picked)) == N  # distinct while n <= K
        assert set(picked) <= set(cand[cand.prompt_id == pid].memory_id)


def test_missing_memory_id_is_an_error_naming_candidates(run_dir, capsys) -> None:
    cand = pd.read_parquet(run_dir / "candidates.parquet")
    cand.loc[3, "memory_id"] = 99
    write_parquet(run_dir / "bad.parquet", cand)
    assert select(run_dir, "sift", candidates="bad.parquet") == 2
    err = capsys.readouterr().err
    assert "--candidates memory_id" in err and "[99]" in err
    assert not (run_dir / "selections" / "sift.parquet").exists()


def test_prompt_without_candidates_is_an_error(run_dir, capsys) -> None:
    cand = pd.read_parquet(run_dir / "candidates.parquet")
    write_parquet(run_dir / "bad.parquet", cand[cand.prompt_id != 11])
    assert select(run_dir, "sift", candidates="bad.parquet") == 2
    assert "--candidates: prompts [11]" in capsys.readouterr().err


def test_uneven_candidate_lists_are_an_error(run_dir, capsys) -> None:
    cand = pd.read_parquet(run_dir / "candidates.parquet")
    write_parquet(run_dir / "bad.parquet", cand.drop(index=0))
    assert select(run_dir, "sift", candidates="bad.parquet") == 2
    assert "bad.parquet" in capsys.readouterr().err


def test_dimension_mismatch_is_an_error(run_dir, capsys) -> None:
    save_npy(run_dir / "prompts.npy", np.ones((3, D + 1), dtype=np.float16))
    assert select(run_dir, "sift") == 2
    assert "--prompt-embeddings have dimension 7" in capsys.readouterr().err


def test_unknown_method_is_an_error(run_dir, capsys) -> None:
    assert select(run_dir, "sift_lam7") == 2
    assert "unknown method 'sift_lam7'" in capsys.readouterr().err


def test_memory_subset_variant_selects_within_the_subset(run_dir) -> None:
    """nn_mem0.5 = NN over the top-K of a seeded half of the memory documents."""
    import faiss

    from testtime.config import validate_config
    from testtime.index import build_index, memory_subset

    mem, prompts, _ = inputs(run_dir)
    memory = pd.DataFrame(
        {"seq_id": np.arange(M), "doc_id": np.arange(M) // 2, "domain": ["a"] * 6 + ["b"] * 6}
    )
    write_parquet(run_dir / "memory.parquet", memory)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["select"]["memory_fractions"] = [0.5]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    index = build_index(mem.astype(np.float32), validate_config({})["index"], 0)
    faiss.write_index(index, str(run_dir / "m.faiss"))
    extra = ["--index", str(run_dir / "m.faiss"), "--memory", str(run_dir / "memory.parquet")]
    assert select(run_dir, "nn_mem0.5", *extra) == 0
    out = pd.read_parquet(run_dir / "selections" / "nn_mem0.5.parquet")
    subset = memory_subset(memory, 0.5, seed=3)
    assert len(subset) == 8  # round(0.5 * 3) = 2 of 3 two-sequence documents per domain
    for pid, rows in out.groupby("prompt_id"):
        sims = mem[subset] @ prompts[pid].astype(np.float64)
        expected = subset[np.argsort(-sims, kind="stable")[:N]]
        assert rows.memory_id.tolist()[1:] == expected.tolist()
    record = json.loads((run_dir / "selections" / "nn_mem0.5.parquet.run.json").read_text())
    assert record["memory_fraction"] == 0.5
    # without the index the subset cannot be searched: a clear error, exit 2
    assert select(run_dir, "sift_mem0.5") == 2


def test_candidates_with_another_k_are_an_error(run_dir, capsys) -> None:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["select"]["k"] = K + 1  # the candidates hold K per prompt
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert select(run_dir, "sift") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "candidates.parquet" in err and f"K={K}" in err and f"'select.k' is {K + 1}" in err
    assert not (run_dir / "selections" / "sift.parquet").exists()


def test_nn_with_n_above_k_is_refused_by_the_config(run_dir, capsys) -> None:
    """The config check (select.n <= select.k for nn) is the one the CLI user sees."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["select"]["n"] = K + 1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert select(run_dir, "nn") == 2
    err = capsys.readouterr().err
    assert "config key 'select.n'" in err and f"n={K + 1}" in err
    assert not (run_dir / "selections" / "nn.parquet").exists()
