"""Exact deduplication, truncation and the document-level pretrain / memory / test split.

Shared by the offline demo builder and the records (HF datasets / JSONL) source, so both
produce the same ``documents.parquet`` contract (docs/pipeline.md section 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

SPLITS = ("pretrain", "memory", "test")
MIN_DOC_CHARS = 200  # shorter documents yield no 16-token chunk worth embedding


class Document(NamedTuple):
    """One document before the split: its domain, provenance string and text."""

    domain: str
    source: str
    text: str


def normalise(text: str) -> str:
    """Whitespace-collapsed text used for exact-duplicate detection.

    >>> normalise("  a\\n\\tb  c ")
    'a b c'
    """
    return " ".join(text.split())


def clean_text(text: str, max_chars: int) -> str:
    """A document as the corpus keeps it: stripped, truncated to ``max_chars``, stripped again.

    >>> clean_text("  abc def ", 5)
    'abc d'
    """
    return text.strip()[:max_chars].strip()


def content_key(text: str) -> bytes:
    """sha256 of the whitespace-normalised text: equal keys are exact duplicates."""
    return hashlib.sha256(normalise(text).encode("utf-8")).digest()


class BottomK:
    """The ``k`` items with the smallest keys among all offered (``k=None``: every item).

    With keys from :func:`seeded_hash` of the content this is a seeded uniform sample of a stream
    that does not depend on the stream's order, and samples for growing ``k`` are nested.
    Memory: at most ``2k`` items at a time.

    >>> s = BottomK(2)
    >>> for key, item in [(b"c", 3), (b"a", 1), (b"d", 4), (b"b", 2)]:
    ...     s.offer(key, item)
    >>> s.items()
    [1, 2]
    """

    def __init__(self, k: int | None) -> None:
        self.k = k
        self._kept: list[tuple[bytes, object]] = []

    def offer(self, key: bytes, item: object) -> None:
        self._kept.append((key, item))
        if self.k is not None and len(self._kept) >= 2 * self.k + 1:
            self._truncate()

    def _truncate(self) -> None:
        self._kept.sort(key=lambda pair: pair[0])
        del self._kept[self.k :]

    def items(self) -> list:
        """The kept items, smallest key first."""
        self._kept.sort(key=lambda pair: pair[0])
        if self.k is not None:
            del self._kept[self.k :]
        return [item for _, item in self._kept]

    def __len__(self) -> int:
        return min(len(self._kept), self.k) if self.k is not None else len(self._kept)


class DocumentCollector:
    """Collects documents per domain, dropping exact duplicates (after truncation) across domains.

    ``add`` returns True when the document was kept. A domain stops accepting documents once it
    holds its cap: ``min(overrides[domain], per_domain)`` (data.docs_per_domain_override) or
    ``per_domain``;
    near-duplicates (e.g. licence variants) are kept on purpose.

    >>> c = DocumentCollector(["a"], per_domain=2, max_chars=300)
    >>> c.add("a", "s1", "x" * 250), c.add("a", "s2", " " + "x" * 250), c.add("a", "s3", "y" * 250)
    (True, False, True)
    >>> c.full("a"), c.n_duplicates
    (True, 1)
    """

    def __init__(
        self,
        domains: Sequence[str],
        per_domain: int,
        max_chars: int,
        overrides: Mapping[str, int] | None = None,
    ) -> None:
        # Overrides only lower a domain's cap, and entries for domains not in data.domains are
        # ignored: a config layered over the demo's may change the domains or shrink
        # docs_per_domain without restating them; a misspelt domain shows as a shortfall error.
        overrides = dict(overrides or {})
        self.caps = {d: min(int(overrides.get(d, per_domain)), per_domain) for d in domains}
        self.per_domain = per_domain
        self.max_chars = max_chars
        self.docs: dict[str, list[Document]] = {d: [] for d in domains}
        self._seen: set[bytes] = set()
        self.n_duplicates = 0
        self.n_short = 0

    def full(self, domain: str) -> bool:
        return len(self.docs[domain]) >= self.caps[domain]

    def all_full(self) -> bool:
        return all(self.full(d) for d in self.docs)

    def add(self, domain: str, source: str, text: str) -> bool:
        if domain not in self.docs or self.full(domain):
            return False
        text = clean_text(text, self.max_chars)
        if len(text) < MIN_DOC_CHARS:
            self.n_short += 1
            return False
        key = content_key(text)
        if key in self._seen:
            self.n_duplicates += 1
            return False
        self._seen.add(key)
        self.docs[domain].append(Document(domain, source, text))
        return True

    def check_counts(self, where: str) -> None:
        """ValueError naming data.docs_per_domain and each domain that came up short."""
        short = {d: len(v) for d, v in self.docs.items() if len(v) < self.caps[d]}
        if short:
            detail = ", ".join(
                f"{d!r} has {n} of {self.caps[d]} requested" for d, n in short.items()
            )
            raise ValueError(
                f"config key 'data.docs_per_domain': {detail} distinct documents of at least "
                f"{MIN_DOC_CHARS} characters ({where}); lower data.docs_per_domain (or set "
                "data.docs_per_domain_override for that domain) or drop it from data.domains"
            )


def seeded_hash(seed: int, *parts: str) -> bytes:
    """sha256 of the seed and ``parts``: a sort key that is consistent under insertions.

    Sorting items by it and keeping a prefix changes at most the items added or removed.

    >>> key = seeded_hash(0, "Github", "a")
    >>> key == seeded_hash(0, "Github", "a"), key == seeded_hash(1, "Github", "a")
    (True, False)
    """
    h = hashlib.sha256(str(int(seed)).encode("ascii"))
    for part in parts:
        h.update(b"\0")
        h.update(part.encode("utf-8"))
    return h.digest()


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Documents per split for ``n`` documents; memory and test get at least one each.

    >>> split_counts(400, {"pretrain": 0.6, "memory": 0.28, "test": 0.12})
    {'pretrain': 240, 'memory': 112, 'test': 48}
    """
    n_test = max(1, round(fractions["test"] * n))
    n_mem = max(1, round(fractions["memory"] * n))
    n_pre = n - n_test - n_mem
    if n_pre < 1:
        raise ValueError(
            f"config key 'data.docs_per_domain': {n} documents cannot fill three splits"
        )
    return {"pretrain": n_pre, "memory": n_mem, "test": n_test}


def assign_splits(
    docs: Mapping[str, Sequence[Document]],
    fractions: Mapping[str, float],
    seed: int,
    min_test: int = 1,
) -> pd.DataFrame:
    """Rank each domain's documents by a seeded hash of their text; cut into the three splits.

    The hash of the whitespace-normalised text does not depend on the source's name or on the
    order documents were collected in, and a document added to a domain moves at most one
    document across each split boundary. Returns the documents table: ``doc_id`` int64
    (0..D-1, ordered by domain, split, source), ``domain``, ``split``, ``source``, ``text``.
    Each document lands in exactly one split. ``min_test`` (data.prompts_per_domain) is
    checked against the test split size.
    """
    rows = []
    for domain, items in docs.items():
        counts = split_counts(len(items), fractions)
        if counts["test"] < min_test:
            raise ValueError(
                f"config key 'data.prompts_per_domain': {min_test} prompts per domain but the "
                f"test split of {domain!r} holds {counts['test']} documents; raise "
                "data.docs_per_domain or data.split.test"
            )
        order = sorted(
            range(len(items)),
            key=lambda i: seeded_hash(seed, "split", domain, normalise(items[i].text)),
        )
        start = 0
        for split in SPLITS:
            for i in order[start : start + counts[split]]:
                d = items[int(i)]
                rows.append((d.domain, split, d.source, d.text))
            start += counts[split]
    return documents_frame(rows, list(docs))


def documents_frame(
    rows: Sequence[tuple[str, str, str, str]], domains: Sequence[str]
) -> pd.DataFrame:
    """The documents table from ``(domain, split, source, text)`` rows: sorted by domain (in
    ``domains`` order), split (:data:`SPLITS` order) and source, ``doc_id`` 0..D-1 in that order.
    """
    frame = pd.DataFrame(rows, columns=["domain", "split", "source", "text"])
    domain_rank = {d: i for i, d in enumerate(domains)}
    split_rank = {s: i for i, s in enumerate(SPLITS)}
    frame = frame.sort_values(
        ["domain", "split", "source"],
        key=lambda col: (
            col.map(domain_rank)
            if col.name == "domain"
            else col.map(split_rank)
            if col.name == "split"
            else col
        ),
        kind="stable",
    ).reset_index(drop=True)
    frame.insert(0, "doc_id", np.arange(len(frame), dtype=np.int64))
    return frame
