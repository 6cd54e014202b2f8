"""Corpus builders: documents with Pile domain labels split into pretrain / memory / test.

:func:`build_corpus` dispatches on ``data.source``: ``demo`` reads local text
(:mod:`~testtime.corpus.demo`, :mod:`~testtime.corpus.mathgen`), ``hf`` / ``jsonl`` stream
records (:mod:`~testtime.corpus.records`). Both dedupe exact duplicates before the split
(:mod:`~testtime.corpus.split`) and return the ``documents.parquet`` table.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd
from tqdm.auto import tqdm

from testtime.corpus.demo import LOCAL_DOMAINS, MATH_DOMAIN, PINNED_DOMAINS, DemoRoots
from testtime.corpus.pinned import load_manifest
from testtime.corpus.split import MIN_DOC_CHARS, DocumentCollector, assign_splits, seeded_hash
from testtime.provenance import package_versions

__all__ = ["Corpus", "DemoRoots", "build_corpus", "build_demo_documents", "fingerprint"]


class Corpus(NamedTuple):
    """The documents table (docs/pipeline.md section 1) and provenance for its run.json."""

    documents: pd.DataFrame
    info: dict[str, Any]


def _collect_local(collector: DocumentCollector, domain: str, roots: DemoRoots, seed: int) -> int:
    candidates = LOCAL_DOMAINS[domain](roots)
    if not candidates:
        raise ValueError(
            f"config key 'data.domains': demo domain {domain!r} found no source files under "
            f"{roots} (Ubuntu IRC needs data.demo.share_dir, e.g. /usr/share)"
        )
    # Consistent sampling: read candidates in the order of a seeded hash of their name until the
    # domain is full, so a file added or removed changes at most the documents it touches.
    for source, load in sorted(candidates, key=lambda c: seeded_hash(seed, domain, c[0])):
        text = load()
        if text is not None:
            collector.add(domain, source, text)
        if collector.full(domain):
            break
    return len(candidates)


def _collect_math(
    collector: DocumentCollector, demo_cfg: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    from testtime.corpus.mathgen import generate_in_subprocess

    start = time.monotonic()
    need = collector.caps[MATH_DOMAIN]
    # a little slack for exact duplicates, which the collector drops
    out = generate_in_subprocess(
        seed,
        need + max(2, need // 20),
        demo_cfg["math_examples_per_doc"],
        MIN_DOC_CHARS,
        demo_cfg["math_max_seconds"],
    )
    for source, text in out["documents"]:
        collector.add(MATH_DOMAIN, source, text)
    return {
        "generators": out["generators"],
        "skipped_generators": out["skipped"],
        "seconds": round(time.monotonic() - start, 2),
    }


def build_demo_documents(
    data_cfg: Mapping[str, Any], seed: int, roots: DemoRoots | None = None
) -> tuple[DocumentCollector, dict[str, Any]]:
    """Collect ``data.docs_per_domain`` distinct documents per demo domain."""
    demo_cfg = data_cfg["demo"]
    roots = roots or DemoRoots.default(demo_cfg["corpus_dir"], demo_cfg["share_dir"])
    known = (*LOCAL_DOMAINS, MATH_DOMAIN)
    unknown = [d for d in data_cfg["domains"] if d not in known]
    if unknown:
        raise ValueError(
            f"config key 'data.domains': the demo source has no domain {unknown}; known: {known}"
        )
    if PINNED_DOMAINS.intersection(data_cfg["domains"]):
        load_manifest(roots.corpus)  # a missing or incomplete corpus dir fails before any work
    collector = DocumentCollector(
        data_cfg["domains"],
        data_cfg["docs_per_domain"],
        data_cfg["max_doc_chars"],
        data_cfg["docs_per_domain_override"],
    )
    info: dict[str, Any] = {
        "roots": {
            "stdlib": str(roots.stdlib),
            "corpus": str(roots.corpus),
            "share": str(roots.share) if roots.share else None,
        },
        "candidates": {},
    }
    for domain in tqdm(data_cfg["domains"], desc="corpus", unit="domain"):
        if domain == MATH_DOMAIN:
            info["math"] = _collect_math(collector, data_cfg["demo"], seed)
        else:
            info["candidates"][domain] = _collect_local(collector, domain, roots, seed)
    collector.check_counts("in the local demo sources")
    return collector, info


def build_corpus(config: Mapping[str, Any], roots: DemoRoots | None = None) -> Corpus:
    """Build the documents table for ``config`` (demo, hf or jsonl source; with
    ``data.hf.prompt_split`` the sources-per-role layout of :mod:`~testtime.corpus.records`)."""
    data_cfg = config["data"]
    if data_cfg["source"] == "hf" and data_cfg["hf"]["prompt_split"] is not None:
        from testtime.corpus.records import collect_by_role

        documents, info = collect_by_role(data_cfg, config["seed"])
    else:
        if data_cfg["source"] == "demo":
            collector, info = build_demo_documents(data_cfg, config["seed"], roots)
        else:
            from testtime.corpus.records import collect_records

            collector, info = collect_records(data_cfg)
        documents = assign_splits(
            collector.docs,
            data_cfg["split"],
            config["seed"],
            min_test=data_cfg["prompts_per_domain"],
        )
        info.update(n_duplicates_dropped=collector.n_duplicates, n_short_dropped=collector.n_short)
    info.update(
        versions=package_versions(("mathematics-dataset", "sympy", "numpy", "datasets")),
        counts=documents.groupby(["domain", "split"]).size().unstack(fill_value=0).to_dict("index"),
        sources=documents["source"].tolist(),
        fingerprint=fingerprint(documents),
    )
    return Corpus(documents, info)


def fingerprint(documents: pd.DataFrame) -> str:
    """sha256 (hex) of every document's id, domain, split and text, in table order.

    Two corpora with the same fingerprint give the same downstream data; the README prints the
    demo's next to its table.
    """
    h = hashlib.sha256()
    for doc_id, domain, split, text in zip(
        documents["doc_id"],
        documents["domain"],
        documents["split"],
        documents["text"],
        strict=True,
    ):
        for part in (str(int(doc_id)), domain, split, text):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()
