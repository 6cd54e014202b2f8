"""Token-level chunking: memory / pretrain sequences and test prompts (docs/pipeline.md §1).

A document's token stream is cut into consecutive non-overlapping windows of ``seq_len`` tokens;
a last partial window is kept when it has at least :data:`MIN_TOKENS`. A test document becomes a
prompt according to ``data.protocol``:

* ``same`` (Hardt & Sun's TTT-NN and the SIFT paper): its first ``eval_tokens`` tokens, decoded,
  are both the query that is embedded and the text scored in bits per byte;
* ``split``: its first ``prompt_tokens`` tokens are the query and the model's context, the next
  ``eval_tokens`` are scored conditioned on them.
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


def chunk_documents(docs: pd.DataFrame, tokenizer: Any, seq_len: int) -> pd.DataFrame:
    """Sequences of the documents in ``docs`` (in row order), ``seq_id`` 0..M-1 contiguous.

    Columns: ``seq_id`` int64, ``doc_id`` int64, ``domain``, ``input_ids`` list<int32>,
    ``n_tokens`` int32, ``text`` (decoded tokens, what the embedding model sees).
    """
    rows = []
    for doc_id, domain, ids in zip(
        docs["doc_id"], docs["domain"], encode(docs["text"].tolist(), tokenizer), strict=True
    ):
        for w in windows(ids, seq_len):
            rows.append((int(doc_id), domain, np.asarray(w, dtype=np.int32), len(w)))
    frame = pd.DataFrame(rows, columns=["doc_id", "domain", "input_ids", "n_tokens"])
    frame.insert(0, "seq_id", np.arange(len(frame), dtype=np.int64))
    frame["doc_id"] = frame["doc_id"].astype(np.int64)
    frame["n_tokens"] = frame["n_tokens"].astype(np.int32)
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
) -> pd.DataFrame:
    """The first ``per_domain`` test documents (doc_id order) of each domain that are long enough.

    ``same``: a document qualifies with at least ``eval_tokens`` tokens; ``prompt_text`` (the
    query) and ``eval_text`` (scored) are both its first ``eval_tokens`` tokens, ``context_text``
    is empty. ``split``: a document qualifies with at least ``prompt_tokens + MIN_TOKENS``
    tokens; ``prompt_text`` = ``context_text`` = its first ``prompt_tokens`` tokens, ``eval_text``
    the next ``eval_tokens``. Columns: ``prompt_id`` int64 (0..P-1), ``doc_id``, ``domain``,
    ``prompt_text``, ``context_text``, ``eval_text`` (decoded strings).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"config key 'data.protocol': {protocol!r} is not one of {PROTOCOLS}")
    need = eval_tokens if protocol == "same" else prompt_tokens + MIN_TOKENS
    tests = tests.sort_values("doc_id")
    ids_all = encode(tests["text"].tolist(), tokenizer)
    rows = []
    for domain in domains:
        taken = 0
        for doc_id, dom, ids in zip(tests["doc_id"], tests["domain"], ids_all, strict=True):
            if dom != domain or len(ids) < need:
                continue
            if protocol == "same":
                context = ""
                evaluation = tokenizer.decode(ids[:eval_tokens])
                query = evaluation
            else:
                context = tokenizer.decode(ids[:prompt_tokens])
                evaluation = tokenizer.decode(ids[prompt_tokens : prompt_tokens + eval_tokens])
                query = context
            if not evaluation.strip():
                continue
            rows.append((int(doc_id), domain, query, context, evaluation))
            taken += 1
            if taken == per_domain:
                break
        if taken < per_domain:
            keys = (
                "data.eval_tokens" if protocol == "same" else f"data.prompt_tokens + {MIN_TOKENS}"
            )
            raise ValueError(
                f"config key 'data.prompts_per_domain': domain {domain!r} has {taken} test "
                f"documents with at least {keys} = {need} tokens (data.protocol {protocol!r}), "
                f"{per_domain} needed; lower data.prompts_per_domain or {keys.split(' ')[0]}"
            )
    columns = ["doc_id", "domain", "prompt_text", "context_text", "eval_text"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "prompt_id", np.arange(len(frame), dtype=np.int64))
    frame["doc_id"] = frame["doc_id"].astype(np.int64)
    return frame
