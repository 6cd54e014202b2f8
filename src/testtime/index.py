"""Faiss index over memory embeddings and candidate pre-selection (docs/pipeline.md §3).

Inner product on unit vectors = cosine similarity. ``flat`` (IndexFlatIP) is exact; ``ivf``
(IndexIVFFlat) and ``ivfpq`` (IndexIVFPQ) are for memories too large for exact search: they are
trained on the memory itself with the seed, probe ``index.nprobe`` cells per query, and their
``nlist`` is clamped to what the data supports (Faiss wants about 39 points per centroid).
With ``index.gpu`` and a GPU build of Faiss the index is built and searched on GPU.
``auto`` resolves by memory size (:mod:`testtime.index_size`: flat while it fits in
``index.ram_gb``, IVF-PQ beyond); the index stage prints the estimate.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.embedding import ids_path
from testtime.index_size import choose_index_type, describe_choice
from testtime.io import load_npy

POINTS_PER_CENTROID = 39


class Memory(NamedTuple):
    """Memory embeddings ``(M, d)`` float32 whose row r is memory_id r."""

    embeddings: np.ndarray


def check_finite(x: np.ndarray, what: str) -> None:
    """ValueError naming ``what`` when any entry is NaN or infinite."""
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=-1))[:5].tolist()
        raise ValueError(f"{what} holds non-finite values (rows {rows})")


def load_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One embedding file ``(N, d)`` float32 and its ids ``(N,)`` int64, checked consistent."""
    for p in (str(path), ids_path(path)):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"embedding file {p!r} does not exist")
    emb, ids = load_npy(path), load_npy(ids_path(path))
    if emb.ndim != 2 or ids.shape != (emb.shape[0],):
        raise ValueError(
            f"embedding file {str(path)!r} has shape {emb.shape} but its ids have {ids.shape}"
        )
    emb = emb.astype(np.float32)
    check_finite(emb, f"embedding file {str(path)!r}")
    return emb, ids.astype(np.int64)


def merge_shards(paths: Sequence[str | os.PathLike[str]]) -> Memory:
    """Concatenate shards and order rows by id; ids must be exactly 0..M-1.

    >>> import tempfile, pathlib
    >>> from testtime.io import save_npy
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> save_npy(d / "a.npy", np.eye(3)[[0, 2]]); save_npy(d / "a.ids.npy", np.array([0, 2]))
    >>> save_npy(d / "b.npy", np.eye(3)[[1]]); save_npy(d / "b.ids.npy", np.array([1]))
    >>> merge_shards([d / "a.npy", d / "b.npy"]).embeddings.tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if not paths:
        raise ValueError("--embeddings: no embedding files given")
    parts = [load_embeddings(p) for p in paths]
    dims = {p.shape[1] for p, _ in parts}
    if len(dims) != 1:
        raise ValueError(f"--embeddings: shards have different dimensions {sorted(dims)}")
    emb = np.concatenate([p for p, _ in parts])
    ids = np.concatenate([i for _, i in parts])
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(len(ids))):
        raise ValueError(
            f"--embeddings: ids of the {len(paths)} shards are not exactly 0..{len(ids) - 1} "
            "(missing, duplicated or foreign rows; pass every shard of one memory)"
        )
    return Memory(np.ascontiguousarray(emb[order]))


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(x: np.ndarray, index_cfg: Mapping[str, Any], seed: int) -> Any:
    """A trained Faiss index holding ``x`` ``(M, d)``; row r gets id r. Returns a CPU index."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    check_finite(x, "memory embeddings")
    m, d = x.shape
    kind = choose_index_type(index_cfg, m, d)
    print(describe_choice(index_cfg, m, d), flush=True)  # the index stage's log
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, min(index_cfg["nlist"], m // POINTS_PER_CENTROID))
        if nlist != index_cfg["nlist"]:
            warnings.warn(
                f"config key 'index.nlist': {index_cfg['nlist']} cells need "
                f"{POINTS_PER_CENTROID * index_cfg['nlist']} points, memory has {m}; using {nlist}",
                stacklevel=2,
            )
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            pq_m = index_cfg["pq_m"]
            if d % pq_m:
                raise ValueError(f"config key 'index.pq_m': {pq_m} does not divide dimension {d}")
            nbits = int(min(8, max(1, np.floor(np.log2(m)))))  # 2**nbits PQ centroids <= M
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.seed = seed
        index.cp.seed = seed
        index.nprobe = index_cfg["nprobe"]
    if index_cfg["gpu"] and gpu_available():
        res = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
        gpu_index.train(x)
        gpu_index.add(x)
        return faiss.index_gpu_to_cpu(gpu_index)
    if index_cfg["gpu"]:
        warnings.warn(
            "config key 'index.gpu': faiss has no GPU support here; using CPU", stacklevel=2
        )
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


def read_index(path: str | os.PathLike[str], flag: str = "index") -> Any:
    """Load a Faiss index file; FileNotFoundError / ValueError naming ``flag`` and the file
    (Faiss reports a corrupt or truncated file as a RuntimeError with a C++ trace)."""
    import faiss

    if not os.path.isfile(path):
        state = "is not a file" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"{flag} {str(path)!r} {state}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ValueError(
            f"{flag} {str(path)!r} is not a readable Faiss index (corrupt or truncated?); "
            "rebuild it with `testtime index`"
        ) from exc


def check_index_matches(index: Any, embeddings: np.ndarray) -> None:
    """ValueError when a loaded index does not hold exactly these ``(M, d)`` memory rows."""
    m, d = embeddings.shape
    if index.d != d or index.ntotal != m:
        raise ValueError(
            f"--index holds {index.ntotal} rows of dimension {index.d}, the memory embeddings "
            f"{m} rows of dimension {d}; rebuild the index from these embeddings"
        )


def memory_subset(memory: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Sorted memory ids ``(M',)`` int64 of the documents kept in a ``fraction`` of the memory.

    ``memory`` has one row per sequence (``seq_id``, ``doc_id``, ``domain``). Each domain keeps
    ``max(1, round(fraction * D_domain))`` of its documents, those with the smallest
    sha256(seed, "memory-subset", doc_id), with all their sequences: subsets for growing
    fractions are nested and keep the domain mix.

    >>> mem = pd.DataFrame({"seq_id": range(6), "doc_id": [0, 0, 1, 2, 3, 3],
    ...                     "domain": ["a"] * 6})
    >>> kept = memory_subset(mem, 0.5, 0)
    >>> mem.loc[mem.seq_id.isin(kept), "doc_id"].nunique(), set(kept) < set(range(6))
    (2, True)
    """
    from testtime.corpus.split import seeded_hash

    if not 0 < fraction <= 1:
        raise ValueError(f"config key 'select.memory_fractions': {fraction} is not in (0, 1]")
    keep: list[int] = []
    for _, docs in memory.groupby("domain", sort=True)["doc_id"]:
        unique = sorted(set(int(d) for d in docs))
        unique.sort(key=lambda d: seeded_hash(seed, "memory-subset", str(d)))
        keep += unique[: max(1, round(fraction * len(unique)))]
    ids = memory.loc[memory["doc_id"].isin(keep), "seq_id"].to_numpy(dtype=np.int64)
    return np.sort(ids)


def _is_ivf(index: Any, kind: str) -> bool:
    """Whether ``index`` is an IVF index (``index.type`` ivf / ivfpq, or auto that chose one)."""
    import faiss

    if kind != "auto":
        return kind != "flat"
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def search(
    index: Any,
    queries: np.ndarray,
    k: int,
    index_cfg: Mapping[str, Any] | None = None,
    subset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products ``(P, k)`` float32 and memory ids ``(P, k)`` int64, best first.

    ``subset`` (memory ids) restricts the search to those rows (a Faiss ID selector, on CPU).
    """
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    check_finite(q, "query embeddings")
    if q.ndim != 2 or q.shape[1] != index.d:
        raise ValueError(f"query embeddings have shape {q.shape}, the index dimension is {index.d}")
    size = index.ntotal if subset is None else len(subset)
    if k > size:
        what = "the memory size" if subset is None else "the memory subset's size"
        raise ValueError(f"config key 'select.k': {k} exceeds {what} {size}")
    params = None
    ivf = index_cfg is not None and _is_ivf(index, index_cfg["type"])
    if subset is not None:
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
        if ivf:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index_cfg["nprobe"])
        else:
            params = faiss.SearchParameters(sel=selector)
    if ivf:
        faiss.extract_index_ivf(index).nprobe = index_cfg["nprobe"]
    # Faiss GPU indexes take no ID selector: a restricted search stays on the CPU.
    if index_cfg is not None and index_cfg["gpu"] and gpu_available() and subset is None:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    scores, ids = index.search(q, k) if params is None else index.search(q, k, params=params)
    if (ids < 0).any():
        raise ValueError(
            f"the index returned fewer than select.k={k} neighbours for some queries; raise "
            "index.nprobe or use index.type 'flat'"
        )
    return scores.astype(np.float32), ids.astype(np.int64)


def candidates_table(prompt_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Long table ``prompt_id, rank, memory_id, score`` sorted by (prompt_id, rank).

    >>> candidates_table(np.array([7]), np.array([[0.9, 0.5]]), np.array([[3, 1]])).values.tolist()
    [[7.0, 0.0, 3.0, 0.8999999761581421], [7.0, 1.0, 1.0, 0.5]]
    """
    p, k = ids.shape
    frame = pd.DataFrame(
        {
            "prompt_id": np.repeat(prompt_ids.astype(np.int64), k),
            "rank": np.tile(np.arange(k, dtype=np.int32), p),
            "memory_id": ids.reshape(-1).astype(np.int64),
            "score": scores.reshape(-1).astype(np.float32),
        }
    )
    return frame.sort_values(["prompt_id", "rank"], kind="stable").reset_index(drop=True)
