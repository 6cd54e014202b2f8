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

Locked: a writer holds a kernel ``flock`` on ``.<name>.lock`` beside the directory for the whole
build, so concurrent builds of one memory run one after the other (the second appends to what the
first wrote) instead of overwriting each other; it waits up to ``lock_timeout`` seconds, then
fails naming the holder's pid. Holding the lock proves that temporaries of earlier builds
(``.<name>.*.tmp`` beside it, ``.index.<g>.faiss.*.tmp`` etc. inside it) are dead: the writer
removes them. Readers take no lock: :meth:`Memory.open` re-reads the manifest when a commit
replaced the generation it was opening.

Defaults (``seq_len``, the embedder's pooling and truncation, the index settings) are the
workflow config schema's (:mod:`testtime.config`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from testtime.config import validate_config
from testtime.io import atomic_path, load_npy, save_npy, write_json
from testtime.locations import looks_local
from testtime.provenance import package_versions

MANIFEST = "manifest.json"
FORMAT = 1
#: suffixes of a directory's files read as one document each (compared case-insensitively)
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".mdown", ".rst", ".adoc", ".org", ".tex")
#: columns of a table that name its documents (the first present one is shown as their source)
SOURCE_COLUMNS = ("source", "title", "path", "url", "name", "id")
_DEFAULTS = validate_config({})
INDEX_DEFAULTS = dict(_DEFAULTS["index"])
LOCK_TIMEOUT = 600.0
_TMP = r"\.[a-z0-9_]{8}\.tmp"  # tempfile's 8 random characters, then atomic_path's suffix
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


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


def decode_text(data: bytes, where: str, encoding: str = "utf-8") -> str:
    """``data`` decoded, or ValueError naming ``where`` for binary or undecodable bytes.

    >>> decode_text("café".encode("latin-1"), "a.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a.txt is not valid utf-8 text (byte 3: b'\\xe9'); pass --encoding ...
    >>> decode_text("café".encode("latin-1"), "a.txt", "latin-1")
    'café'
    """
    if b"\x00" in data:
        raise ValueError(f"{where} is binary (it holds NUL bytes), not text")
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise ValueError(f"--encoding {encoding!r}: unknown encoding") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{where} is not valid {encoding} text (byte {exc.start}: "
            f"{data[exc.start : exc.start + 1]!r}); pass --encoding (e.g. latin-1) or convert it"
        ) from exc
    if len(_CONTROL.findall(text)) > 0.01 * len(text) + 2:
        raise ValueError(f"{where} is binary (control characters), not text")
    return text.removeprefix("\ufeff")


class Documents(NamedTuple):
    """What :func:`read_documents` read.

    Attributes:
        frame: DataFrame ``source, text``, one row per non-empty document, in a stable order.
        notes: one line per thing read or left out (counts and reasons), for the user.
    """

    frame: pd.DataFrame
    notes: list[str]


def _count_text(values: list[Any]) -> tuple[list[int], Counter]:
    """Indices of the values that are non-empty strings and the reasons the others are not."""
    keep, dropped = [], Counter()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v):
            dropped["without text"] += 1
        elif not isinstance(v, str):
            dropped[f"with a non-string text ({type(v).__name__})"] += 1
        elif not v.strip():
            dropped["with empty text"] += 1
        else:
            keep.append(i)
    return keep, dropped


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _summary(kept: int, total: int, unit: str, dropped: Counter) -> str:
    why = ", ".join(f"{n} {reason}" for reason, n in dropped.most_common())
    return f"kept {kept} of {_plural(total, unit)}" + (f": {why}" if why else "")


def _read_jsonl(path: Path, encoding: str) -> tuple[list[int], list[dict[str, Any]]]:
    lines, rows = [], []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = decode_text(raw, f"--input {str(path)!r} line {number}", encoding)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"--input {str(path)!r} line {number}: invalid JSON ({exc.msg}, column "
                    f"{exc.colno})"
                ) from exc
            if not isinstance(row, dict):
                raise ValueError(
                    f"--input {str(path)!r} line {number}: expected a JSON object, got "
                    f"{type(row).__name__}"
                )
            lines.append(number)
            rows.append(row)
    return lines, rows


def _read_table(
    path: Path, text_column: str, source_column: str | None, encoding: str
) -> tuple[pd.DataFrame, list[str]]:
    if path.suffix.lower() == ".jsonl":
        numbers, rows = _read_jsonl(path, encoding)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        get = lambda col: [r.get(col) for r in rows]  # noqa: E731
        where = [f"{path.name} line {n}" for n in numbers]
    else:
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ValueError(
                f"--input {str(path)!r} is not a readable Parquet file: {exc}"
            ) from exc
        columns = list(table.columns)
        get = lambda col: table[col].tolist()  # noqa: E731
        where = [f"{path.name} row {i}" for i in range(len(table))]
    if text_column not in columns:
        raise ValueError(
            f"--input {str(path)!r} has no column {text_column!r} "
            f"(columns: {columns[:8]}); pick one with --text-column"
        )
    if source_column is None:
        source_column = next((c for c in SOURCE_COLUMNS if c in columns and c != text_column), None)
    elif source_column not in columns:
        raise ValueError(f"--input {str(path)!r} has no column {source_column!r} (--source-column)")
    texts = get(text_column)
    keep, dropped = _count_text(texts)
    names = get(source_column) if source_column else [None] * len(texts)
    sources = [where[i] + (f": {names[i]}" if names[i] is not None else "") for i in keep]
    frame = pd.DataFrame({"source": sources, "text": [texts[i] for i in keep]})
    unit = "line" if path.suffix.lower() == ".jsonl" else "row"
    return frame, [_summary(len(keep), len(texts), unit, dropped)]


def _read_dir(
    path: Path, suffixes: tuple[str, ...], encoding: str
) -> tuple[pd.DataFrame, list[str]]:
    wanted = {s.lower() for s in suffixes}
    files, by_suffix, hidden = [], Counter(), 0
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        if any(part.startswith(".") for part in p.relative_to(path).parts):
            hidden += 1
        elif p.suffix.lower() in wanted:
            files.append(p)
        else:
            by_suffix[p.suffix.lower() or "(no suffix)"] += 1
    notes = []
    if by_suffix:
        listed = ", ".join(f"{s} ({n})" for s, n in sorted(by_suffix.items()))
        notes.append(
            f"skipped {_plural(sum(by_suffix.values()), 'file')} by suffix: {listed} "
            "(read them with --suffixes)"
        )
    if hidden:
        notes.append(f"skipped {_plural(hidden, 'hidden file')} (names starting with '.')")
    if not files:
        raise ValueError(
            f"--input {str(path)!r}: directory has no files ending in {', '.join(sorted(wanted))}"
        )
    texts = [decode_text(p.read_bytes(), f"--input file {str(p)!r}", encoding) for p in files]
    keep, dropped = _count_text(texts)
    notes.insert(0, _summary(len(keep), len(files), "file", dropped))
    frame = pd.DataFrame(
        {
            "source": [str(files[i].relative_to(path)) for i in keep],
            "text": [texts[i] for i in keep],
        }
    )
    return frame, notes


def _path_like(source: str | os.PathLike[str]) -> bool:
    s = os.fspath(source)
    suffix = Path(s).suffix.lower()
    known = {".jsonl", ".parquet", ".json", ".csv", ".gz", ".zst", *TEXT_SUFFIXES}
    return looks_local(source) or s.endswith(("/", os.sep)) or suffix in known


def read_documents(
    source: str | os.PathLike[str],
    text_column: str = "text",
    split: str = "train",
    *,
    encoding: str = "utf-8",
    suffixes: tuple[str, ...] = TEXT_SUFFIXES,
    source_column: str | None = None,
) -> Documents:
    """Documents of ``source`` and notes on what was read and left out (:class:`Documents`).

    ``source`` is a ``.jsonl`` / ``.parquet`` file with a ``text_column`` (rows without text are
    counted, not kept), a text file (one document), a directory whose files ending in one of
    ``suffixes`` (case-insensitive, recursive, sorted by path, hidden ones skipped) are one
    document each, or a Hugging Face dataset name (``name`` or ``name:config``; ``split``). A
    path-like source that does not exist is an error, never looked up on the hub. Text must
    decode with ``encoding``; binary files are refused. A table's ``source_column`` (default:
    the first of :data:`SOURCE_COLUMNS` present) names its documents.
    """
    path = Path(source)
    if path.is_dir():
        frame, notes = _read_dir(path, suffixes, encoding)
    elif path.is_file() and path.suffix.lower() in (".jsonl", ".parquet"):
        frame, notes = _read_table(path, text_column, source_column, encoding)
    elif path.is_file() and path.suffix.lower() in {s.lower() for s in suffixes}:
        text = decode_text(path.read_bytes(), f"--input {str(source)!r}", encoding)
        keep, dropped = _count_text([text])
        frame = pd.DataFrame({"source": [path.name] * len(keep), "text": [text] * len(keep)})
        notes = [_summary(len(keep), 1, "file", dropped)]
    elif path.exists():
        raise ValueError(
            f"--input {str(source)!r}: use a .jsonl/.parquet file, a text file or a directory"
        )
    elif _path_like(source):
        raise FileNotFoundError(
            f"--input {str(source)!r} does not exist (a local path, not looked up on the hub)"
        )
    else:
        frame, notes = _read_dataset(str(source), text_column, split)
    if frame.empty:
        raise ValueError(f"--input {str(source)!r} holds no non-empty documents ({notes[0]})")
    return Documents(frame.reset_index(drop=True), notes)


def _read_dataset(source: str, text_column: str, split: str) -> tuple[pd.DataFrame, list[str]]:
    import datasets

    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # the hub raises many types; name the input in one error
        raise FileNotFoundError(
            f"--input {source!r} is neither a file, a directory nor a loadable "
            f"Hugging Face dataset: {exc}"
        ) from exc
    if text_column not in ds.column_names:
        raise ValueError(f"dataset {name!r} has no column {text_column!r}: {ds.column_names}")
    texts = list(ds[text_column])
    keep, dropped = _count_text(texts)
    frame = pd.DataFrame(
        {"source": [f"{source}/{split}:{i}" for i in keep], "text": [texts[i] for i in keep]}
    )
    return frame, [_summary(len(keep), len(texts), "row", dropped)]


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
        try:
            files = {
                key: path / manifest["files"][key] for key in ("sequences", "embeddings", "index")
            }
            counted = int(manifest["counts"]["sequences"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"memory {str(path)!r}: {MANIFEST} lacks {exc}; rebuild it") from exc
        for f in files.values():
            if not f.is_file():
                raise FileNotFoundError(f"memory {str(path)!r}: {f.name} is missing")
        self.sequences = _load(files["sequences"], pd.read_parquet)
        self.embeddings = _load(files["embeddings"], load_npy).astype(np.float32)
        self.index = _load(files["index"], lambda f: faiss.read_index(str(f)))
        m = len(self.sequences)
        if m == 0:
            raise ValueError(f"memory {str(path)!r} is empty (no sequences)")
        if self.embeddings.shape[0] != m or counted != m:
            raise ValueError(
                f"memory {str(path)!r} is inconsistent: {m} sequences, "
                f"{self.embeddings.shape[0]} embeddings, manifest says {counted}; rebuild it"
            )
        check_index_matches(self.index, self.embeddings)
        self._encoder = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Memory:
        """Open and check a memory directory; FileNotFoundError / ValueError naming the problem.

        A writer committing a new generation while this opens (and deleting the old one's
        files) makes it read the new manifest and try again.
        """
        p = Path(path)
        for attempt in range(5):
            manifest = _read_manifest(p)
            try:
                return cls(p, manifest)
            except (FileNotFoundError, ValueError):
                if attempt == 4 or _read_manifest(p).get("generation") == manifest.get(
                    "generation"
                ):
                    raise
        raise AssertionError("unreachable")

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

    def source(self, seq_id: int) -> str:
        """Where a sequence comes from: its document's source (file path, ``file line N``,
        ``file row N: <name>``) and its place in the document, e.g. ``notes/a.md, part 2 of 3``."""
        row = self.sequences.iloc[int(seq_id)]
        parts = self.sequences["doc_id"].to_numpy() == row["doc_id"]
        ids = self.sequences["seq_id"].to_numpy()[parts]
        where = int(np.searchsorted(ids, row["seq_id"])) + 1
        return f"{row['source']}, part {where} of {len(ids)}"


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of memory ``path``; errors name the memory and the file."""
    f = path / MANIFEST
    if not f.is_file():
        what = "does not exist" if not path.exists() else f"has no {MANIFEST}"
        raise FileNotFoundError(
            f"memory {str(path)!r} {what}; build one with `testtime memory build`"
        )
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"memory {str(path)!r}: {MANIFEST} is damaged ({exc}); rebuild it"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"memory {str(path)!r}: {MANIFEST} has unknown format {got!r}")
    return manifest


def _load(path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``; a damaged file is a ValueError naming it."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # numpy, pyarrow and faiss each raise their own types
        raise ValueError(
            f"memory {str(path.parent)!r}: {path.name} is truncated or damaged "
            f"({' '.join(str(exc).split())[:200]}); rebuild the memory"
        ) from exc


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


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


@contextlib.contextmanager
def write_lock(
    out: str | os.PathLike[str],
    timeout: float = LOCK_TIMEOUT,
    note: Callable[[str], None] = _stderr,
) -> Iterator[Path]:
    """Hold the write lock of memory ``out`` (an exclusive ``flock`` on ``.<name>.lock`` beside
    it, holding the writer's pid); wait up to ``timeout`` seconds, then TimeoutError naming the
    holder. Released when the block ends or the process dies."""
    target = Path(os.path.abspath(out))
    lock = target.parent / f".{target.name}.lock"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"memory {str(out)!r} is being written by {_holder(lock)} (lock "
                        f"{str(lock)!r}); gave up after {timeout:g} s (--lock-timeout)"
                    ) from None
                if not waiting:
                    note(f"memory {str(out)!r}: waiting for {_holder(lock)}, which is writing it")
                    waiting = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        os.close(fd)  # releases the lock


def _remove_stale(out: Path, keep: set[str] | None, note: Callable[[str], None]) -> None:
    """Remove what killed builds of ``out`` left beside it and, unless ``keep`` is None (no
    memory there yet), its files other than ``keep`` (the caller holds the write lock)."""
    name = re.escape(Path(os.path.abspath(out)).name)
    beside = re.compile(rf"\.{name}{_TMP}\Z")
    inside = re.compile(
        rf"\.?(?:(?:sequences|embeddings|index)\.\d+\.(?:parquet|npy|faiss)|{MANIFEST})"
        rf"(?:{_TMP})?\Z"
    )
    stale = [p for p in out.parent.iterdir() if beside.match(p.name)] if out.parent.is_dir() else []
    if keep is not None:
        stale += [p for p in out.iterdir() if inside.match(p.name) and p.name not in keep]
    for p in stale:
        p.unlink() if p.is_file() or p.is_symlink() else shutil.rmtree(p, ignore_errors=True)
    temps = [p for p in stale if p.name.endswith(".tmp")]
    if temps:
        note(f"removed {_plural(len(temps), 'temporary')} of killed builds: {temps[0].name} ...")


def _model_context(tokenizer_name: str, tokenizer: Any) -> int | None:
    """The context (tokens) of the model whose tokenizer this is, where it can be told."""
    config = Path(os.path.expanduser(tokenizer_name)) / "config.json"
    if config.is_file():
        with contextlib.suppress(ValueError, OSError):
            cfg = json.loads(config.read_text(encoding="utf-8"))
            for key in ("n_positions", "max_position_embeddings", "n_ctx"):
                if isinstance(cfg.get(key), int):
                    return cfg[key]
    m = getattr(tokenizer, "model_max_length", None)
    return int(m) if isinstance(m, int) and m < 10**7 else None


def _index(embeddings: np.ndarray, cfg: dict[str, Any], seed: int, note: Callable[[str], None]):
    """The Faiss index and the settings it really has (nlist clamped to the memory size)."""
    import faiss

    from testtime.index import build_index

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            index = build_index(embeddings.astype(np.float32), cfg, seed)
        except ValueError as exc:
            raise ValueError(str(exc).replace("config key 'index.pq_m'", "--pq-m")) from exc
    for w in caught:
        if "index.nlist" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    used = dict(cfg)
    if cfg["type"] != "flat":
        used["nlist"] = int(faiss.extract_index_ivf(index).nlist)
        if used["nlist"] != cfg["nlist"]:
            note(
                f"--nlist {cfg['nlist']}: {len(embeddings)} sequences are too few (Faiss wants "
                f"~39 per cell); using {used['nlist']} cells"
            )
    return index, used


def build_memory(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tokenizer_name: str,
    embedder: str = _DEFAULTS["embed"]["model"],
    seq_len: int = _DEFAULTS["data"]["seq_len"],
    text_column: str = "text",
    split: str = "train",
    index: Mapping[str, Any] | None = None,
    embed_batch_size: int = _DEFAULTS["embed"]["batch_size"],
    embed_max_length: int = _DEFAULTS["embed"]["max_length"],
    pooling: str = _DEFAULTS["embed"]["pooling"],
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    encoding: str = "utf-8",
    suffixes: tuple[str, ...] = TEXT_SUFFIXES,
    source_column: str | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    note: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Build ``out`` from the documents of ``source``, or append them to it; the new manifest.

    Args:
        tokenizer_name: directory or hub id of the target model's tokenizer.
        embedder: ``minilm`` (offline) or a hub id / directory of an encoder.
        seq_len: tokens per sequence (the model's training length; <= its context).
        index: ``type`` (flat | ivf | ivfpq), ``nlist``, ``nprobe``, ``pq_m``, ``gpu``; an
            existing memory keeps its own index (IVF/PQ are not retrained on append).
        embed_max_length: the embedder's truncation length in its own tokens.
        encoding, suffixes, source_column: how documents are read (:func:`read_documents`).
        lock_timeout: seconds to wait for another writer of ``out`` (:func:`write_lock`).
        note: called with one line per count worth telling (rows dropped, files skipped, ...).
    """
    import faiss

    from testtime.chunking import chunk_documents
    from testtime.embedding import embed_texts, load_embedding_model, to_float16
    from testtime.tokenizer import load_tokenizer

    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"--seq-len must be an integer >= 2, got {seq_len!r}")
    index_cfg = {**INDEX_DEFAULTS, **(index or {})}
    if index_cfg["type"] not in ("flat", "ivf", "ivfpq"):
        raise ValueError(f"--index {index_cfg['type']!r}: use flat, ivf or ivfpq")
    for key in ("nlist", "nprobe", "pq_m"):
        if not isinstance(index_cfg[key], int) or index_cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {index_cfg[key]!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a memory directory")
    tokenizer = load_tokenizer(tokenizer_name, flag="--tokenizer")
    context = _model_context(str(tokenizer_name), tokenizer)
    if context is not None and seq_len > context:
        raise ValueError(
            f"--seq-len {seq_len} exceeds the context of {str(tokenizer_name)!r} ({context} "
            "tokens): sequences that long cannot be trained on"
        )
    docs = read_documents(
        source,
        text_column,
        split,
        encoding=encoding,
        suffixes=suffixes,
        source_column=source_column,
    )
    for line in docs.notes:
        note(f"--input {str(source)!r}: {line}")
    with write_lock(out, lock_timeout, note):
        old = Memory.open(out) if (out / MANIFEST).exists() else None
        _remove_stale(
            out, None if old is None else {MANIFEST, *old.manifest["files"].values()}, note
        )
        if old is None and out.exists() and any(out.iterdir()):
            raise ValueError(f"--out {str(out)!r} exists, is not empty and holds no memory")
        if old is not None:
            m = old.manifest
            old.check_embedder(embedder)
            old.check_tokenizer(tokenizer, f"--tokenizer {str(tokenizer_name)!r}")
            if m["seq_len"] != seq_len:
                raise ValueError(f"memory {str(out)!r} has --seq-len {m['seq_len']}, not {seq_len}")
            embed_max_length, pooling = m["embed"]["max_length"], m["embed"]["pooling"]
            index_cfg = m["index"]
        docs = docs.frame.copy()
        docs["doc_sha"] = [_sha(t) for t in docs["text"]]
        n_read = len(docs)
        docs = docs.drop_duplicates("doc_sha").reset_index(drop=True)
        if len(docs) < n_read:
            note(f"skipped {_plural(n_read - len(docs), 'duplicate document')} (same text)")
        n_old_docs = 0
        if old is not None:
            known = docs["doc_sha"].isin(set(old.sequences["doc_sha"]))
            if known.any():
                note(f"skipped {_plural(int(known.sum()), 'document')} already in the memory")
            docs = docs[~known].reset_index(drop=True)
            n_old_docs = int(old.sequences["doc_id"].max()) + 1
        if docs.empty:
            return old.manifest
        docs.insert(0, "doc_id", np.arange(n_old_docs, n_old_docs + len(docs), dtype=np.int64))
        chunks = chunk_documents(docs.rename(columns={"source": "domain"}), tokenizer, seq_len)
        if chunks.empty:
            raise ValueError("--input: no document has enough tokens for one sequence")
        short = len(docs) - chunks["doc_id"].nunique()
        if short:
            note(f"skipped {_plural(short, 'document')} too short for one sequence")
        chunks = chunks.rename(columns={"domain": "source"})
        chunks["doc_sha"] = chunks["doc_id"].map(
            dict(zip(docs["doc_id"], docs["doc_sha"], strict=True))
        )
        try:
            encoder = load_embedding_model(
                embedder, device, pooling=pooling, max_length=embed_max_length
            )
        except (OSError, ValueError) as exc:
            raise type(exc)(
                str(exc).replace("config key 'embed.model'", "--model (embedder)")
            ) from exc
        new_emb = to_float16(
            embed_texts(
                chunks["text"].tolist(), encoder, batch_size=embed_batch_size, progress=progress
            )
        )
        if old is None:
            sequences, embeddings = chunks, new_emb
            faiss_index, index_cfg = _index(embeddings, index_cfg, seed, note)
            generation = 0
        else:
            chunks["seq_id"] += len(old)
            sequences = pd.concat([old.sequences, chunks], ignore_index=True)
            stored = load_npy(old.path / old.manifest["files"]["embeddings"])
            embeddings = np.concatenate([stored, new_emb])
            faiss_index = old.index
            faiss_index.add(np.ascontiguousarray(new_emb.astype(np.float32)))
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
    _remove_stale(out, set(files.values()) | {MANIFEST}, lambda _: None)  # generation g's files
