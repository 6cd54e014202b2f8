"""Token-level chunking: memory / pretrain sequences and test prompts (docs/pipeline.md §1).

A document's token stream is cut into consecutive non-overlapping windows of ``seq_len`` tokens;
a last partial window is kept when it has at least :data:`MIN_TOKENS`. A test document becomes a
prompt according to ``data.protocol``:

* ``same`` (Hardt & Sun's TTT-NN and the SIFT paper): its first ``eval_tokens`` tokens, decoded,
  are both the query that is embedded and the text scored in bits per byte;
* ``split``: its first ``prompt_tokens`` tokens are the query and the model's context, the next
  ``eval_tokens`` are scored conditioned on them.

Under ``same``, ``min_eval_tokens`` (``data.min_eval_tokens``) lets shorter test documents in:
one with ``T < eval_tokens`` tokens is scored whole (tttlm and the SIFT paper score every test
document, truncated to the context), and bits per byte divide by the bytes of the text actually
scored. The default (``None`` = ``eval_tokens``) keeps only documents with a full window.

The memory unit (``data.memory_unit``): ``chunk`` makes every window a memory entry; ``document``
(TTT-NN / SIFT paper: "210M sequences" are the Pile's documents) makes one entry per document,
whose ``text`` is the document (the embedder truncates it to its first ``embed.max_length``
tokens) and whose ``input_ids`` are its first ``seq_len`` tokens: one gradient step per
selected document. tttlm instead takes one step per ``seq_len``-token window of each retrieved
document (a long neighbour costs several steps); here N selections are always N steps, of
bounded cost, as SIFT's budget of N steps assumes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MIN_TOKENS = 16


def windows(ids: list[int], seq_len: int, min_tokens: int = MIN_TOKENS) -> list[list[int]]:
    """Consecutive windows of ``seq_len`` tokens; the tail only if >= ``min_tokens`` long.

    >>> windows(list(range(10)), 4, min_tokens=2)
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> windows(list(range(9)), 4, min_tokens=2)
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    out = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    if out and len(out[-1]) < min(min_tokens, seq_len):
        out.pop()
    return out


def check_seq_len(seq_len: int, tokenizer: Any, n_positions: int | None = None) -> None:
    """ValueError naming data.seq_len when it exceeds the model context."""
    limit = n_positions or getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 10**9 and seq_len > limit:
        raise ValueError(
            f"config key 'data.seq_len': {seq_len} exceeds the model context of {limit} tokens"
        )


def encode(texts: list[str], tokenizer: Any, batch: int = 256) -> list[list[int]]:
    """Token ids of each text without special tokens (batched through the fast tokenizer)."""
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], add_special_tokens=False, verbose=False)["input_ids"]
        out.extend(enc)
    return out


MEMORY_UNITS = ("chunk", "document")


def chunk_documents(
    docs: pd.DataFrame, tokenizer: Any, seq_len: int, unit: str = "chunk"
) -> pd.DataFrame:
    """Sequences of the documents in ``docs`` (in row order), ``seq_id`` 0..M-1 contiguous.

    ``unit`` ``chunk``: one row per window (:func:`windows`), ``text`` the decoded window.
    ``document``: one row per document with at least one token, ``input_ids`` its first
    ``seq_len`` tokens, ``text`` the whole document (what the embedder truncates). Columns:
    ``seq_id`` int64, ``doc_id`` int64, ``domain``, ``input_ids`` list<int32>, ``n_tokens``
    int32, ``text`` (what the embedding model sees).
    """
    if unit not in MEMORY_UNITS:
        raise ValueError(f"config key 'data.memory_unit': {unit!r} is not one of {MEMORY_UNITS}")
    rows = []
    texts = docs["text"].tolist()
    doc_texts = []
    for doc_id, domain, text, ids in zip(
        docs["doc_id"], docs["domain"], texts, encode(texts, tokenizer), strict=True
    ):
        parts = windows(ids, seq_len) if unit == "chunk" else [ids[:seq_len]] if ids else []
        for w in parts:
            rows.append((int(doc_id), domain, np.asarray(w, dtype=np.int32), len(w)))
            doc_texts.append(text)
    frame = pd.DataFrame(rows, columns=["doc_id", "domain", "input_ids", "n_tokens"])
    frame.insert(0, "seq_id", np.arange(len(frame), dtype=np.int64))
    frame["doc_id"] = frame["doc_id"].astype(np.int64)
    frame["n_tokens"] = frame["n_tokens"].astype(np.int32)
    if unit == "document":
        frame["text"] = doc_texts
    else:
        frame["text"] = tokenizer.batch_decode(frame["input_ids"].tolist()) if len(frame) else []
    return frame


PROTOCOLS = ("same", "split")


def make_prompts(
    tests: pd.DataFrame,
    tokenizer: Any,
    per_domain: int,
    prompt_tokens: int,
    eval_tokens: int,
    domains: list[str],
    protocol: str = "same",
    *,
    min_eval_tokens: int | None = None,
    sampling: str = "balanced",
    num_prompts: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Prompts from the test documents that are long enough (``doc_id`` order).

    ``sampling`` ``balanced``: the first ``per_domain`` qualifying documents of each domain.
    ``natural``: ``num_prompts`` qualifying documents of ``domains`` in all, those with the
    smallest sha256(seed, "prompt", normalised text) (a seeded uniform sample in the natural
    mix; the sources-per-role corpus already holds exactly such a sample).

    ``same``: a document qualifies with at least ``min_eval_tokens`` tokens (``None``:
    ``eval_tokens``); ``prompt_text`` (the query) and ``eval_text`` (scored) are both its first
    ``min(eval_tokens, T)`` tokens, ``context_text`` is empty. ``split``: a document qualifies
    with at least ``prompt_tokens + MIN_TOKENS`` tokens; ``prompt_text`` = ``context_text`` = its
    first ``prompt_tokens`` tokens, ``eval_text`` the next ``eval_tokens``. Columns:
    ``prompt_id`` int64 (0..P-1), ``doc_id``, ``domain``, ``prompt_text``, ``context_text``,
    ``eval_text`` (decoded strings).
    """
    from testtime.corpus.split import normalise, seeded_hash

    if protocol not in PROTOCOLS:
        raise ValueError(f"config key 'data.protocol': {protocol!r} is not one of {PROTOCOLS}")
    if protocol == "same":
        need = eval_tokens if min_eval_tokens is None else min_eval_tokens
        need_keys = "data.eval_tokens" if min_eval_tokens is None else "data.min_eval_tokens"
    else:
        need, need_keys = prompt_tokens + MIN_TOKENS, f"data.prompt_tokens + {MIN_TOKENS}"
    tests = tests.sort_values("doc_id")
    if sampling == "natural":
        tests = tests[tests["domain"].isin(domains)]
        order = sorted(
            range(len(tests)),
            key=lambda i: seeded_hash(seed, "prompt", normalise(tests["text"].iloc[i])),
        )
        tests = tests.iloc[order]
    ids_all = encode(tests["text"].tolist(), tokenizer)

    def prompt(ids: list[int]) -> tuple[str, str, str] | None:
        if protocol == "same":
            evaluation = tokenizer.decode(ids[:eval_tokens])
            context, query = "", evaluation
        else:
            context = tokenizer.decode(ids[:prompt_tokens])
            evaluation = tokenizer.decode(ids[prompt_tokens : prompt_tokens + eval_tokens])
            query = context
        return (query, context, evaluation) if evaluation.strip() else None

    rows = []
    groups = [None] if sampling == "natural" else domains
    quota = num_prompts if sampling == "natural" else per_domain
    for domain in groups:
        taken = 0
        for doc_id, dom, ids in zip(tests["doc_id"], tests["domain"], ids_all, strict=True):
            if (domain is not None and dom != domain) or len(ids) < need:
                continue
            made = prompt(ids)
            if made is None:
                continue
            rows.append((int(doc_id), dom, *made))
            taken += 1
            if taken == quota:
                break
        if taken < quota:
            key = "data.num_prompts" if domain is None else "data.prompts_per_domain"
            where = "the test split" if domain is None else f"domain {domain!r}"
            raise ValueError(
                f"config key '{key}': {where} has {taken} test documents with at least "
                f"{need_keys} = {need} tokens (data.protocol {protocol!r}), {quota} needed; "
                f"lower {key} or {need_keys.split(' ')[0]}"
            )
    if sampling == "natural":
        rows.sort(key=lambda r: r[0])
    columns = ["doc_id", "domain", "prompt_text", "context_text", "eval_text"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "prompt_id", np.arange(len(frame), dtype=np.int64))
    frame["doc_id"] = frame["doc_id"].astype(np.int64)
    return frame
