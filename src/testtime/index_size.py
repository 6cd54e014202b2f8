"""How much memory a Faiss index over M vectors of dimension d takes, and ``index.type: auto``.

Sizes (bytes) of what the index holds, Faiss's own overheads aside:

* ``flat`` (IndexFlatIP): the float32 vectors, ``4 M d``;
* ``ivf`` (IndexIVFFlat): the vectors plus an int64 id each and the coarse centroids,
  ``(4 d + 8) M + 4 nlist d``;
* ``ivfpq`` (IndexIVFPQ): a code of ``pq_m`` bytes (8-bit sub-quantisers) and an int64 id per
  vector, the centroids and the PQ codebooks, ``(pq_m + 8) M + 4 nlist d + 4 * 256 d``.

``auto`` picks ``flat`` (exact) while its vectors fit in ``index.ram_gb`` and ``ivfpq``
otherwise. The index stage prints this estimate; ``testtime plan`` tabulates it.

>>> choose_index_type({"type": "auto", "ram_gb": 64}, 340_000, 1024)
'flat'
>>> choose_index_type({"type": "auto", "ram_gb": 64}, 210_000_000, 1024)
'ivfpq'
>>> index_bytes("flat", 1000, 8, {})
32000
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GB = 1e9


def index_bytes(kind: str, m: int, d: int, index_cfg: Mapping[str, Any]) -> int:
    """Bytes held by an index of ``kind`` over ``m`` vectors of dimension ``d``."""
    if kind == "flat":
        return 4 * m * d
    nlist = int(index_cfg.get("nlist", 1024))
    if kind == "ivf":
        return (4 * d + 8) * m + 4 * nlist * d
    if kind == "ivfpq":
        return (int(index_cfg.get("pq_m", 16)) + 8) * m + 4 * nlist * d + 4 * 256 * d
    raise ValueError(f"config key 'index.type': unknown index type {kind!r}")


def choose_index_type(index_cfg: Mapping[str, Any], m: int, d: int) -> str:
    """``index.type``, with ``auto`` resolved: flat if ``4 M d`` bytes fit in ``ram_gb``."""
    kind = index_cfg["type"]
    if kind != "auto":
        return kind
    return "flat" if index_bytes("flat", m, d, index_cfg) <= index_cfg["ram_gb"] * GB else "ivfpq"


def describe_choice(index_cfg: Mapping[str, Any], m: int, d: int) -> str:
    """One line: the type chosen for ``m`` x ``d`` and what flat and the choice would take."""
    kind = choose_index_type(index_cfg, m, d)
    flat = index_bytes("flat", m, d, index_cfg) / GB
    chosen = index_bytes(kind, m, d, index_cfg) / GB
    why = (
        f" (index.type auto, ram_gb {index_cfg['ram_gb']:g}: flat would need {flat:.3g} GB)"
        if index_cfg["type"] == "auto"
        else ""
    )
    return f"index: {m:,} vectors x {d} dims -> {kind}, about {chosen:.3g} GB{why}"
