"""The select stage on files: candidates + embeddings in, one selection table out.

Inputs and output follow docs/pipeline.md §4: ``candidates.parquet`` (K rows per prompt, sorted
by prompt_id, rank), memory embedding shards ``X.npy`` float16 ``(N, d)`` with ``X.ids.npy``
(memory_id per row), the prompt embeddings likewise (prompt_id per row). The output has one row
per prompt and step 0..n: ``prompt_id`` int64, ``step`` int32, ``memory_id`` int64 (-1 at
step 0), ``variance`` float32 (σ²(x* | first ``step`` points); step 0 is k(x*, x*)).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from testtime.embedding import ids_path
from testtime.io import load_npy


class Candidates(NamedTuple):
    """Per-prompt candidate lists: ``prompt_ids`` ``(P,)``, ``memory_ids`` ``(P, K)`` by rank."""

    prompt_ids: np.ndarray
    memory_ids: np.ndarray


class Embeddings(NamedTuple):
    """Vectors ``(N, d)`` (as stored, float16 in the pipeline) and the id of each row ``(N,)``."""

    vectors: np.ndarray
    ids: np.ndarray

    def rows_of(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Row index of each id in ``ids`` (any shape); ValueError naming ``what`` if absent."""
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids, ids, sorter=order).clip(0, len(self.ids) - 1)
        rows = order[pos]
        missing = self.ids[rows] != ids
        if missing.any():
            bad = np.unique(np.asarray(ids)[missing])[:5].tolist()
            raise ValueError(f"{what}: ids {bad} (of {int(missing.sum())}) have no embedding")
        return rows


def read_candidates(path: str | os.PathLike[str], k: int | None = None) -> Candidates:
    """Read and check ``candidates.parquet``: exactly K rows per prompt, ranks 0..K-1, and
    K = ``k`` (``select.k`` of the config) when given."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--candidates: file {str(path)!r} does not exist")
    df = pd.read_parquet(path, columns=["prompt_id", "rank", "memory_id"])
    where = f"--candidates {str(path)!r}"
    expected = k
    if df.empty:
        raise ValueError(f"{where} has no rows")
    df = df.sort_values(["prompt_id", "rank"], kind="stable")
    counts = df.groupby("prompt_id", sort=True).size()
    k = int(counts.iloc[0])
    if (counts != k).any():
        raise ValueError(
            f"{where}: prompts have different numbers of candidates "
            f"({sorted(set(counts.tolist()))[:5]}); expected exactly K rows per prompt"
        )
    ranks = df["rank"].to_numpy().reshape(-1, k)
    if not (ranks == np.arange(k)).all():
        raise ValueError(f"{where}: ranks of some prompt are not exactly 0..{k - 1}")
    if expected is not None and k != expected:
        raise ValueError(
            f"{where} has K={k} candidates per prompt but config key 'select.k' is {expected}; "
            "rebuild the candidates with this config"
        )
    memory_ids = df["memory_id"].to_numpy(np.int64).reshape(-1, k)
    return Candidates(counts.index.to_numpy(np.int64), memory_ids)


def subset_candidates(
    index_path: str | os.PathLike[str],
    memory_path: str | os.PathLike[str],
    prompt_embeddings_path: str | os.PathLike[str],
    fraction: float,
    k: int,
    index_cfg: Mapping[str, Any],
    seed: int,
) -> Candidates:
    """Top-``k`` candidates of every prompt within a ``fraction`` of the memory documents.

    The memory-size curve (``select.memory_fractions``): the same Faiss search as the
    candidates stage, restricted to :func:`testtime.index.memory_subset`.
    """
    import faiss

    from testtime.index import load_embeddings, memory_subset, search

    for arg, path in (("--index", index_path), ("--memory", memory_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{arg} {str(path)!r} does not exist (memory subsets)")
    memory = pd.read_parquet(memory_path, columns=["seq_id", "doc_id", "domain"])
    subset = memory_subset(memory, fraction, seed)
    queries, prompt_ids = load_embeddings(prompt_embeddings_path)
    _, ids = search(faiss.read_index(str(index_path)), queries, k, index_cfg, subset)
    order = np.argsort(prompt_ids, kind="stable")
    return Candidates(prompt_ids[order].astype(np.int64), ids[order])


def check_selection_steps(
    table: pd.DataFrame, n: int, where: str, prompt_ids: Sequence[int] | None = None
) -> None:
    """ValueError naming ``where`` unless every prompt (of ``prompt_ids``, if given) has exactly
    the steps 0..n, n = config key ``select.n`` (the pipeline's selections never stop early)."""
    missing = {"prompt_id", "step"} - set(table.columns)
    if missing:
        raise ValueError(f"{where} lacks columns {sorted(missing)}")
    if prompt_ids is not None:
        table = table[table["prompt_id"].isin(list(prompt_ids))]
    steps = table.groupby("prompt_id")["step"]
    count, first, last = steps.size(), steps.min(), steps.max()
    bad = count.index[(count != n + 1) | (first != 0) | (last != n)]
    if len(bad):
        pid = int(bad[0])
        raise ValueError(
            f"{where}: prompt {pid} has steps {int(first[pid])}..{int(last[pid])} "
            f"({int(count[pid])} rows) but config key 'select.n' is {n} (steps 0..{n}); "
            f"{len(bad)} prompt(s) affected: was the selection made with another config?"
        )


def read_embeddings(paths: Sequence[str | os.PathLike[str]], arg: str) -> Embeddings:
    """Concatenate embedding files and their ``.ids.npy``; errors name ``arg`` and the file."""
    if not paths:
        raise ValueError(f"{arg}: no embedding files given")
    vectors, ids = [], []
    for path in paths:
        for p in (str(path), ids_path(path)):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{arg}: file {p!r} does not exist")
        v, i = load_npy(path), load_npy(ids_path(path))
        if v.ndim != 2 or i.shape != (v.shape[0],):
            raise ValueError(f"{arg} {str(path)!r}: shape {v.shape} but its ids have {i.shape}")
        if vectors and v.shape[1] != vectors[0].shape[1]:
            raise ValueError(
                f"{arg} {str(path)!r}: dimension {v.shape[1]} != {vectors[0].shape[1]} "
                f"of {str(paths[0])!r}"
            )
        vectors.append(v)
        ids.append(i.astype(np.int64))
    all_ids = np.concatenate(ids)
    if len(all_ids) == 0:
        raise ValueError(f"{arg}: the embedding files hold no rows")
    if len(np.unique(all_ids)) != len(all_ids):
        raise ValueError(f"{arg}: some ids appear in more than one row")
    return Embeddings(np.concatenate(vectors), all_ids)


def select_table(
    candidates: Candidates,
    memory: Embeddings,
    prompts: Embeddings,
    selector: str,
    n: int,
    lam: float,
    *,
    device: torch.device,
    generator_of=None,
    batch_size: int = 512,
    progress: bool = True,
) -> pd.DataFrame:
    """Run ``SELECTORS[selector]`` over all prompts in batches and return the selection table.

    Args:
        generator_of: ``prompt_id -> torch.Generator`` (random selection only).
        batch_size: prompts per call (bounded memory: ``batch_size * K * d`` floats).

    ``n`` and ``lam`` are checked by the selector (``nn``: n <= K) on the first batch; from a
    config they were checked on loading (``select.n <= select.k`` for nn).
    """
    from tqdm import tqdm

    from testtime.selection import SELECTORS

    p = candidates.memory_ids.shape[0]
    if memory.vectors.shape[1] != prompts.vectors.shape[1]:
        raise ValueError(
            f"--prompt-embeddings have dimension {prompts.vectors.shape[1]} but "
            f"--memory-embeddings have {memory.vectors.shape[1]}"
        )
    with_candidates = set(candidates.prompt_ids.tolist())
    lacking = [i for i in prompts.ids.tolist() if i not in with_candidates]
    if lacking:
        raise ValueError(f"--candidates: prompts {lacking[:5]} (of {len(lacking)}) have none")
    mem_rows = memory.rows_of(candidates.memory_ids, "--candidates memory_id")
    prompt_rows = prompts.rows_of(candidates.prompt_ids, "--candidates prompt_id")
    fn = SELECTORS[selector]
    parts = []
    starts = range(0, p, batch_size)
    for start in tqdm(starts, desc=f"select {selector}", unit="batch", disable=not progress):
        stop = min(start + batch_size, p)
        q = torch.from_numpy(prompts.vectors[prompt_rows[start:stop]]).to(device)
        c = torch.from_numpy(memory.vectors[mem_rows[start:stop]]).to(device)
        kwargs = {}
        if generator_of is not None:
            kwargs["generator"] = [generator_of(int(i)) for i in candidates.prompt_ids[start:stop]]
        sel = fn(q, c, n, lam=lam, **kwargs)
        parts.append(
            _rows(candidates.prompt_ids[start:stop], candidates.memory_ids[start:stop], sel)
        )
    return pd.concat(parts, ignore_index=True)


def _rows(prompt_ids: np.ndarray, memory_ids: np.ndarray, sel) -> pd.DataFrame:
    """Long table of one batch: steps 0..n per prompt (step 0: no point yet, memory_id -1)."""
    idx = sel.indices.cpu().numpy()  # (b, n)
    var = sel.variances.cpu().numpy()  # (b, n+1)
    b, n = idx.shape
    picked = np.take_along_axis(memory_ids, idx, axis=1)
    mem = np.concatenate([np.full((b, 1), -1), picked], axis=1)
    return pd.DataFrame(
        {
            "prompt_id": np.repeat(prompt_ids, n + 1).astype(np.int64),
            "step": np.tile(np.arange(n + 1), b).astype(np.int32),
            "memory_id": mem.reshape(-1).astype(np.int64),
            "variance": var.reshape(-1).astype(np.float32),
        }
    )
