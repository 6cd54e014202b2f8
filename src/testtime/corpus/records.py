"""Documents from a Hugging Face ``datasets`` source or a local JSON-lines file (paper data).

Both go through :func:`open_split` (``load_dataset(..., streaming=True)``), so the offline tests
on local files exercise the same call the Pile uses. The domain is read from a dotted field
(``meta.pile_set_name``). Two layouts:

* one stream (``data.hf.prompt_split: null``, the default): documents of ``data.domains`` are
  kept in stream order until each domain holds ``data.docs_per_domain`` (at most
  ``data.hf.max_scan_docs`` records), then hash-split into pretrain / memory / test;
* sources per role (``data.hf.prompt_split`` set; the paper): the test documents come from that
  split (the Pile's test split), scanned first and whole, so that a configured domain the
  dataset lacks fails before the long train stream; ``data.prompt_sampling: natural`` keeps a
  seeded uniform sample of ``data.num_prompts`` of them, ``balanced`` ``data.prompts_per_domain``
  per domain. The memory is a seeded uniform sample of ``data.memory_docs`` documents of the
  memory split's first ``data.hf.max_scan_docs`` records (all of them with ``null``). Exact
  duplicates are dropped, memory documents equal to a test document included. No pretrain
  documents: this layout is for a pretrained base model.

Bad input is one line naming the key before any long stream: a domain a known dataset lacks
(:data:`KNOWN_DOMAINS`), a split the dataset does not have, a first record without the text or
domain field (its keys shown).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from testtime.config import get_dotted
from testtime.corpus.split import (
    MIN_DOC_CHARS,
    BottomK,
    Document,
    DocumentCollector,
    clean_text,
    content_key,
    documents_frame,
    normalise,
    seeded_hash,
)

# The 17 Pile sets left in monology/pile-uncopyrighted (Books3, BookCorpus2, OpenSubtitles,
# YoutubeSubtitles and OpenWebText2 were removed); EleutherAI/pile_val_test holds all 22.
PILE_UNCOPYRIGHTED = (
    "Pile-CC",
    "PubMed Central",
    "ArXiv",
    "Github",
    "FreeLaw",
    "StackExchange",
    "USPTO Backgrounds",
    "PubMed Abstracts",
    "Gutenberg (PG-19)",
    "Wikipedia (en)",
    "DM Mathematics",
    "Ubuntu IRC",
    "EuroParl",
    "HackerNews",
    "PhilPapers",
    "NIH ExPorter",
    "Enron Emails",
)
PILE_REMOVED = ("Books3", "BookCorpus2", "OpenSubtitles", "YoutubeSubtitles", "OpenWebText2")
KNOWN_DOMAINS = {
    "monology/pile-uncopyrighted": PILE_UNCOPYRIGHTED,
    "EleutherAI/pile_val_test": PILE_UNCOPYRIGHTED + PILE_REMOVED,
}


def check_known_domains(data_cfg: Mapping[str, Any]) -> None:
    """ValueError naming each configured domain a dataset of :data:`KNOWN_DOMAINS` lacks.

    >>> check_known_domains({"source": "hf", "hf": {"path": "monology/pile-uncopyrighted"},
    ...                      "domains": ["Github", "OpenWebText2"]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: config key 'data.domains': monology/pile-uncopyrighted has no domain ['OpenW...
    """
    if data_cfg["source"] != "hf":
        return
    known = KNOWN_DOMAINS.get(data_cfg["hf"]["path"])
    missing = [d for d in data_cfg["domains"] if known is not None and d not in known]
    if missing:
        raise ValueError(
            f"config key 'data.domains': {data_cfg['hf']['path']} has no domain {missing} "
            f"(it has {list(known)})"
        )


def open_split(data_cfg: Mapping[str, Any], split: str, key: str) -> tuple[Any, str]:
    """The streaming dataset of ``split`` (hf or jsonl source) and a description of it.

    ``key`` is the config key that chose the split, named in the error for a missing one.
    """
    from datasets import load_dataset

    hf = data_cfg["hf"]
    if data_cfg["source"] == "jsonl":
        path = data_cfg["jsonl"]["path"]
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"config key 'data.jsonl.path': file {path!r} does not exist")
        try:
            ds = load_dataset("json", data_files=str(path), split="train", streaming=True)
        except StopIteration:  # datasets infers the schema from the first record
            raise ValueError(
                f"config key 'data.jsonl.path': file {path!r} holds no records"
            ) from None
        return ds, str(path)
    files = hf["data_files"]
    if files is not None and split not in files:
        raise ValueError(
            f"config key '{key}': split {split!r} is not in data.hf.data_files "
            f"(splits: {sorted(files)})"
        )
    try:
        ds = load_dataset(
            hf["path"], hf["name"], data_files=files, split=split, streaming=hf["streaming"]
        )
    except ValueError as exc:
        if "split" not in str(exc).lower():
            raise
        hint = (
            ""
            if files
            else " (with a train/ folder datasets infers only train: set data.hf.data_files)"
        )
        raise ValueError(f"config key '{key}': {hf['path']}: {exc}{hint}") from None
    return ds, f"{hf['path']}:{hf['name']}:{split}"


def _keys(record: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of a record, nested mappings expanded.

    >>> _keys({"text": "x", "meta": {"pile_set_name": "Github"}})
    ['text', 'meta.pile_set_name']
    """
    out: list[str] = []
    for k, v in record.items():
        name = f"{prefix}{k}"
        out += _keys(v, name + ".") if isinstance(v, Mapping) and v else [name]
    return out


def iter_records(
    dataset: Any, text_field: str, domain_field: str, max_scan: int, description: str = "source"
) -> Iterator[tuple[int, str, str]]:
    """Yield ``(row, text, domain)`` for the first ``max_scan`` records that have both fields.

    The first record must have both (ValueError naming the config key and showing its keys);
    later records without them are skipped.
    """
    for row, record in enumerate(dataset):
        if row >= max_scan:
            return
        text, domain = get_dotted(record, text_field), get_dotted(record, domain_field)
        if row == 0:
            for key, field, value in (
                ("data.hf.text_field", text_field, text),
                ("data.hf.domain_field", domain_field, domain),
            ):
                if not isinstance(value, str):
                    raise ValueError(
                        f"config key '{key}': the first record of {description} has no string "
                        f"field {field!r} (its keys: {_keys(record)})"
                    )
        if isinstance(text, str) and isinstance(domain, str):
            yield row, text, domain


def collect_records(data_cfg: Mapping[str, Any]) -> tuple[DocumentCollector, dict[str, Any]]:
    """Fill a :class:`DocumentCollector` from the configured records source (one stream).

    Returns the collector and provenance (source description, records scanned).
    """
    check_known_domains(data_cfg)
    hf = data_cfg["hf"]
    dataset, description = open_split(data_cfg, hf["split"], "data.hf.split")
    collector = DocumentCollector(
        data_cfg["domains"],
        data_cfg["docs_per_domain"],
        data_cfg["max_doc_chars"],
        data_cfg["docs_per_domain_override"],
    )
    scanned = 0
    for row, text, domain in iter_records(
        dataset, hf["text_field"], hf["domain_field"], hf["max_scan_docs"], description
    ):
        scanned = row + 1
        collector.add(domain, f"{description}#{row}", text)
        if collector.all_full():
            break
    if scanned == 0:
        key = "data.jsonl.path" if data_cfg["source"] == "jsonl" else "data.hf.path"
        raise ValueError(
            f"config key '{key}': {description} yielded no record with fields "
            f"{hf['text_field']!r} and {hf['domain_field']!r}"
        )
    collector.check_counts(f"after scanning {scanned} records of {description}")
    return collector, {"source": description, "records_scanned": scanned}


def _sample_split(
    data_cfg: Mapping[str, Any],
    split: str,
    key: str,
    samplers: Mapping[str, BottomK] | BottomK,
    seen: set[bytes],
    salt: str,
    seed: int,
) -> dict[str, Any]:
    """Offer each distinct document of ``data.domains`` in ``split`` to its sampler.

    ``samplers`` is one :class:`BottomK` for all domains or one per domain; the sort key is
    sha256(seed, salt, normalised text). Returns provenance: description, records scanned,
    documents per domain seen (every domain, configured or not).
    """
    hf = data_cfg["hf"]
    dataset, description = open_split(data_cfg, split, key)
    domains = set(data_cfg["domains"])
    found: dict[str, int] = {}
    scanned = n_short = n_dup = 0
    for row, text, domain in iter_records(
        dataset, hf["text_field"], hf["domain_field"], hf["max_scan_docs"], description
    ):
        scanned = row + 1
        found[domain] = found.get(domain, 0) + 1
        if domain not in domains:
            continue
        text = clean_text(text, data_cfg["max_doc_chars"])
        if len(text) < MIN_DOC_CHARS:
            n_short += 1
            continue
        digest = content_key(text)
        if digest in seen:
            n_dup += 1
            continue
        seen.add(digest)
        sampler = samplers if isinstance(samplers, BottomK) else samplers[domain]
        doc = Document(domain, f"{description}#{row}", text)
        sampler.offer(seeded_hash(seed, salt, normalise(text)), doc)
    return {
        "source": description,
        "records_scanned": scanned,
        "records_per_domain": dict(sorted(found.items())),
        "n_short_dropped": n_short,
        "n_duplicates_dropped": n_dup,
    }


def collect_by_role(data_cfg: Mapping[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
    """The documents table of the sources-per-role layout (module docstring) and provenance.

    Test documents: ``hf.prompt_split``; memory documents: ``hf.split``. The table has the
    ``documents.parquet`` columns, splits ``memory`` and ``test`` only.
    """
    check_known_domains(data_cfg)
    hf = data_cfg["hf"]
    domains = list(data_cfg["domains"])
    seen: set[bytes] = set()
    natural = data_cfg["prompt_sampling"] == "natural"
    tests: BottomK | dict[str, BottomK] = (
        BottomK(data_cfg["num_prompts"])
        if natural
        else {d: BottomK(data_cfg["prompts_per_domain"]) for d in domains}
    )
    test_info = _sample_split(
        data_cfg, hf["prompt_split"], "data.hf.prompt_split", tests, seen, "prompt", seed
    )
    absent = [d for d in domains if d not in test_info["records_per_domain"]]
    if absent:
        raise ValueError(
            f"config key 'data.domains': {test_info['source']} has no document of {absent} "
            f"(found {sorted(test_info['records_per_domain'])} in "
            f"{test_info['records_scanned']} records)"
        )
    memory = BottomK(data_cfg["memory_docs"])
    memory_info = _sample_split(
        data_cfg, hf["split"], "data.hf.split", memory, seen, "memory", seed
    )
    test_docs = tests.items() if natural else [d for s in tests.values() for d in s.items()]
    rows = [(d.domain, "test", d.source, d.text) for d in test_docs]
    rows += [(d.domain, "memory", d.source, d.text) for d in memory.items()]
    if data_cfg["memory_docs"] is not None and len(memory) < data_cfg["memory_docs"]:
        raise ValueError(
            f"config key 'data.memory_docs': {data_cfg['memory_docs']} requested, "
            f"{memory_info['source']} has {len(memory)} distinct documents of data.domains in "
            f"its first {memory_info['records_scanned']} records (data.hf.max_scan_docs)"
        )
    frame = documents_frame(rows, domains)
    return frame, {"prompts": test_info, "memory": memory_info}
