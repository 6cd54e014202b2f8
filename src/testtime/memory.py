"""A memory directory: your documents as training sequences, their embeddings and a Faiss index.

``testtime memory build`` (:func:`build_memory`) turns documents into::

    mem/
      manifest.json            embedder, tokenizer (+ fingerprint), seq_len, index settings,
                               counts, content fingerprint, generation g and the files below
      sequences.g.parquet      seq_id 0..M-1, doc_id, source, doc_sha, input_ids, n_tokens, text
      embeddings.g.npy         (M, d) float16 unit-norm embeddings of ``text`` (row r = seq_id r)
      index.g.faiss            Faiss index over the embeddings (flat, ivf or ivfpq)

The pieces are the workflow's own: documents are chunked with
:func:`testtime.chunking.chunk_documents` (tokenizer of the target model, ``seq_len`` tokens per
sequence), embedded with :func:`testtime.embedding.embed_texts` and indexed with
:func:`testtime.index.build_index`.

Incremental: building into an existing memory appends the new documents (a document whose text
is already in the memory is skipped): old sequences keep their ids and embeddings (nothing is
re-embedded) and the index gets the new rows added. Atomic: a new memory is written to a
temporary directory renamed at the end; an update writes generation g+1's files beside g's and
commits by atomically replacing ``manifest.json``, then deletes g's files. A killed build leaves
the previous memory readable and unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testtime.io import atomic_path, load_npy, package_versions, save_npy, write_json

MANIFEST = "manifest.json"
FORMAT = 1
TEXT_SUFFIXES = (".txt", ".md")
INDEX_DEFAULTS = {"type": "flat", "nlist": 256, "nprobe": 16, "pq_m": 16, "gpu": False}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 (16 hex digits) of a tokenizer's vocabulary and special tokens: two tokenizers
    with the same fingerprint map text to the same ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    blob = json.dumps(
        {"vocab": vocab, "special": sorted(map(str, tokenizer.all_special_tokens))},
        ensure_ascii=False,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_documents(source: str | os.PathLike[str], text_column: str = "text", split: str = "train"):
    """Documents as a DataFrame ``source, text`` (in a stable order).

    ``source`` is a ``.jsonl`` / ``.parquet`` file with a ``text_column``, a directory whose
    ``.txt`` / ``.md`` files (recursive, sorted by path) are one document each, or otherwise a
    Hugging Face dataset name (``name`` or ``name:config``; ``split`` selects the split).
    Empty texts are dropped.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"--input {str(source)!r}: directory has no .txt or .md files")
        frame = pd.DataFrame(
            {
                "source": [str(p.relative_to(path)) for p in files],
                "text": [p.read_text(encoding="utf-8", errors="replace") for p in files],
            }
        )
    elif path.suffix in (".jsonl", ".parquet"):
        if not path.is_file():
            raise FileNotFoundError(f"--input {str(source)!r} does not exist")
        if path.suffix == ".jsonl":
            table = pd.read_json(path, lines=True, dtype=False)
        else:
            table = pd.read_parquet(path)
        if text_column not in table.columns:
            raise ValueError(
                f"--input {str(source)!r} has no column {text_column!r} "
                f"(columns: {list(table.columns)[:8]}); pick one with --text-column"
            )
        frame = pd.DataFrame(
            {
                "source": [f"{path.name}:{i}" for i in range(len(table))],
                "text": table[text_column].astype("string").fillna("").tolist(),
            }
        )
    elif path.exists():
        raise ValueError(f"--input {str(source)!r}: use a .jsonl/.parquet file or a directory")
    else:
        import datasets

        name, _, config = str(source).partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split=split)
        except Exception as exc:  # the hub raises many types; name the input in one error
            raise FileNotFoundError(
                f"--input {str(source)!r} is neither a file, a directory nor a loadable "
                f"Hugging Face dataset: {exc}"
            ) from exc
        if text_column not in ds.column_names:
            raise ValueError(f"dataset {name!r} has no column {text_column!r}: {ds.column_names}")
        texts = ds[text_column]
        frame = pd.DataFrame(
            {"source": [f"{source}/{split}:{i}" for i in range(len(texts))], "text": texts}
        )
    frame = frame[frame["text"].str.strip().str.len() > 0].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"--input {str(source)!r} holds no non-empty documents")
    return frame


class Memory:
    """An opened memory directory (see the module docstring).

    Attributes:
        path: the directory.
        manifest: the parsed ``manifest.json``.
        sequences: DataFrame, one row per sequence, row r = ``seq_id`` r.
        embeddings: ``(M, d)`` float32 unit-norm.
        index: the Faiss index (row r = seq_id r).
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        import faiss

        from testtime.index import check_index_matches

        self.path = path
        self.manifest = manifest
        files = manifest["files"]
        for key in ("sequences", "embeddings", "index"):
            if not (path / files[key]).is_file():
                raise FileNotFoundError(f"memory {str(path)!r}: {files[key]} is missing")
        self.sequences = pd.read_parquet(path / files["sequences"])
        self.embeddings = load_npy(path / files["embeddings"]).astype(np.float32)
        self.index = faiss.read_index(str(path / files["index"]))
        m = len(self.sequences)
        if m == 0:
            raise ValueError(f"memory {str(path)!r} is empty (no sequences)")
        if self.embeddings.shape[0] != m or manifest["counts"]["sequences"] != m:
            raise ValueError(
                f"memory {str(path)!r} is inconsistent: {m} sequences, "
                f"{self.embeddings.shape[0]} embeddings, manifest says "
                f"{manifest['counts']['sequences']}; rebuild it"
            )
        check_index_matches(self.index, self.embeddings)
        self._encoder = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Memory:
        """Open and check a memory directory; FileNotFoundError / ValueError naming the problem."""
        p = Path(path)
        if not (p / MANIFEST).is_file():
            what = "does not exist" if not p.exists() else f"has no {MANIFEST}"
            raise FileNotFoundError(
                f"memory {str(path)!r} {what}; build one with `testtime memory build`"
            )
        manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"memory {str(path)!r}: unknown format {manifest.get('format')!r}")
        return cls(p, manifest)

    def __len__(self) -> int:
        return len(self.sequences)

    def __repr__(self) -> str:
        c = self.manifest["counts"]
        return (
            f"Memory({str(self.path)!r}: {c['sequences']} sequences of <= "
            f"{self.manifest['seq_len']} tokens from {c['documents']} documents, embedder "
            f"{self.manifest['embedder']!r})"
        )

    @property
    def embedder(self) -> str:
        """Name of the embedding model the memory was built with (``minilm`` or a hub id/dir)."""
        return self.manifest["embedder"]

    def check_tokenizer(self, tokenizer: Any, model_name: str = "the model") -> None:
        """ValueError when ``tokenizer`` is not the one the memory's sequences were cut with."""
        got = tokenizer_fingerprint(tokenizer)
        want = self.manifest["tokenizer_fingerprint"]
        if got != want:
            raise ValueError(
                f"memory {str(self.path)!r} was tokenised with {self.manifest['tokenizer']!r} "
                f"(fingerprint {want}), but {model_name} has a different tokenizer ({got}); "
                "rebuild the memory with --tokenizer set to this model"
            )

    def check_embedder(self, name: str | None) -> None:
        """ValueError when ``name`` (if given) is not the memory's embedder."""
        if name is not None and name != self.embedder:
            raise ValueError(
                f"memory {str(self.path)!r} was embedded with {self.embedder!r}, not {name!r}: "
                "queries must use the memory's embedder (or rebuild the memory)"
            )

    def encoder(self, device: str = "cpu"):
        """The memory's embedding model with its pooling and truncation (loaded once)."""
        from testtime.embedding import load_embedding_model

        if self._encoder is None:
            e = self.manifest["embed"]
            self._encoder = load_embedding_model(
                self.embedder, device, pooling=e["pooling"], max_length=e["max_length"]
            )
        return self._encoder

    def embed(self, texts: list[str], device: str = "cpu") -> np.ndarray:
        """``(P, d)`` float32 unit-norm query embeddings, as the memory's texts were embedded."""
        from testtime.embedding import embed_texts

        return embed_texts(texts, self.encoder(device), progress=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (clamped to the memory size) scores and seq_ids ``(P, k)``, best first."""
        from testtime.index import search

        return search(self.index, queries, min(k, len(self)), self.manifest["index"])

    def input_ids(self, seq_id: int) -> np.ndarray:
        """Token ids ``(L,)`` of one sequence."""
        return np.asarray(self.sequences["input_ids"].iat[int(seq_id)], dtype=np.int64)

    def text(self, seq_id: int) -> str:
        """Decoded text of one sequence (what the embedder saw)."""
        return str(self.sequences["text"].iat[int(seq_id)])


def _manifest(
    *,
    embedder: str,
    embed: Mapping[str, Any],
    tokenizer: Any,
    tokenizer_name: str,
    seq_len: int,
    index_cfg: Mapping[str, Any],
    sequences: pd.DataFrame,
    embeddings: np.ndarray,
    generation: int,
) -> dict[str, Any]:
    h = hashlib.sha256()
    for ids in sequences["input_ids"]:
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
    h.update(np.ascontiguousarray(embeddings).tobytes())
    return {
        "format": FORMAT,
        "embedder": embedder,
        "embed": dict(embed),
        "dim": int(embeddings.shape[1]),
        "tokenizer": tokenizer_name,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "seq_len": int(seq_len),
        "index": dict(index_cfg),
        "counts": {
            "documents": int(sequences["doc_id"].nunique()),
            "sequences": len(sequences),
            "tokens": int(sequences["n_tokens"].sum()),
        },
        "fingerprint": h.hexdigest()[:16],
        "generation": generation,
        "files": {
            "sequences": f"sequences.{generation}.parquet",
            "embeddings": f"embeddings.{generation}.npy",
            "index": f"index.{generation}.faiss",
        },
        "packages": package_versions(("testtime", "torch", "transformers", "faiss-cpu")),
    }


def build_memory(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tokenizer_name: str,
    embedder: str = "minilm",
    seq_len: int = 256,
    text_column: str = "text",
    split: str = "train",
    index: Mapping[str, Any] | None = None,
    embed_batch_size: int = 64,
    embed_max_length: int = 256,
    pooling: str = "mean",
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ``out`` from the documents of ``source``, or append them to it; the new manifest.

    Args:
        tokenizer_name: directory or hub id of the target model's tokenizer.
        embedder: ``minilm`` (offline) or a hub id / directory of an encoder.
        seq_len: tokens per sequence (the model's training length; <= its context).
        index: ``type`` (flat | ivf | ivfpq), ``nlist``, ``nprobe``, ``pq_m``, ``gpu``; an
            existing memory keeps its own index (IVF/PQ are not retrained on append).
        embed_max_length: the embedder's truncation length in its own tokens.
    """
    import faiss

    from testtime.chunking import chunk_documents
    from testtime.embedding import embed_texts, load_embedding_model, to_float16
    from testtime.index import build_index
    from testtime.tokenizer import load_tokenizer

    if seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, got {seq_len}")
    index_cfg = {**INDEX_DEFAULTS, **(index or {})}
    if index_cfg["type"] not in ("flat", "ivf", "ivfpq"):
        raise ValueError(f"--index {index_cfg['type']!r}: use flat, ivf or ivfpq")
    out = Path(out)
    tokenizer = load_tokenizer(tokenizer_name)
    old = Memory.open(out) if (out / MANIFEST).exists() else None
    if old is None and out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {str(out)!r} exists, is not empty and holds no memory")
    if old is not None:
        m = old.manifest
        old.check_embedder(embedder)
        old.check_tokenizer(tokenizer, f"--tokenizer {tokenizer_name!r}")
        if m["seq_len"] != seq_len:
            raise ValueError(f"memory {str(out)!r} has --seq-len {m['seq_len']}, not {seq_len}")
        embed_max_length, pooling = m["embed"]["max_length"], m["embed"]["pooling"]
        index_cfg = m["index"]

    docs = read_documents(source, text_column, split)
    docs["doc_sha"] = [_sha(t) for t in docs["text"]]
    docs = docs.drop_duplicates("doc_sha").reset_index(drop=True)
    n_old_docs = 0
    if old is not None:
        docs = docs[~docs["doc_sha"].isin(set(old.sequences["doc_sha"]))].reset_index(drop=True)
        n_old_docs = int(old.sequences["doc_id"].max()) + 1
    if docs.empty:
        if old is None:
            raise ValueError(f"--input {str(source)!r} holds no documents")
        return old.manifest
    docs.insert(0, "doc_id", np.arange(n_old_docs, n_old_docs + len(docs), dtype=np.int64))
    chunks = chunk_documents(docs.rename(columns={"source": "domain"}), tokenizer, seq_len)
    if chunks.empty:
        raise ValueError(f"--input {str(source)!r}: no document has enough tokens for one sequence")
    chunks = chunks.rename(columns={"domain": "source"})
    chunks["doc_sha"] = chunks["doc_id"].map(
        dict(zip(docs["doc_id"], docs["doc_sha"], strict=True))
    )
    encoder = load_embedding_model(embedder, device, pooling=pooling, max_length=embed_max_length)
    new_emb = embed_texts(
        chunks["text"].tolist(), encoder, batch_size=embed_batch_size, progress=progress
    )
    if old is None:
        sequences, embeddings = chunks, to_float16(new_emb)
        faiss_index = build_index(embeddings.astype(np.float32), index_cfg, seed)
        generation = 0
    else:
        chunks["seq_id"] += len(old)
        sequences = pd.concat([old.sequences, chunks], ignore_index=True)
        stored = load_npy(old.path / old.manifest["files"]["embeddings"])
        embeddings = np.concatenate([stored, to_float16(new_emb)])
        faiss_index = old.index
        faiss_index.add(np.ascontiguousarray(to_float16(new_emb).astype(np.float32)))
        generation = old.manifest["generation"] + 1
    manifest = _manifest(
        embedder=embedder,
        embed={"max_length": embed_max_length, "pooling": pooling},
        tokenizer=tokenizer,
        tokenizer_name=str(tokenizer_name),
        seq_len=seq_len,
        index_cfg=index_cfg,
        sequences=sequences,
        embeddings=embeddings,
        generation=generation,
    )
    _write(out, manifest, sequences, embeddings, faiss_index, faiss, fresh=old is None)
    return manifest


def _write(out: Path, manifest, sequences, embeddings, faiss_index, faiss, *, fresh: bool) -> None:
    """Write one generation's files and commit it (see the module docstring)."""
    from testtime.io import write_parquet

    files = manifest["files"]

    def write_files(root: Path) -> None:
        write_parquet(root / files["sequences"], sequences)
        save_npy(root / files["embeddings"], embeddings)
        with atomic_path(root / files["index"]) as tmp:
            faiss.write_index(faiss_index, str(tmp))

    if fresh:
        with atomic_path(out, is_dir=True) as tmp:
            write_files(tmp)
            write_json(tmp / MANIFEST, manifest)
        return
    write_files(out)
    write_json(out / MANIFEST, manifest)  # the commit point
    keep = set(files.values()) | {MANIFEST}
    for p in out.iterdir():  # the previous generation's files and leftovers of killed builds
        if p.name not in keep and p.name.split(".")[0] in ("sequences", "embeddings", "index"):
            p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)
