"""Documents from a Hugging Face ``datasets`` source or a local JSON-lines file (paper data).

Both go through :func:`iter_records` (``load_dataset(..., streaming=True)``), so the offline test
on a tiny JSONL exercises the same code the Pile uses. The domain is read from a dotted field
(``meta.pile_set_name``); documents of ``data.domains`` are kept in stream order until each
domain holds ``data.docs_per_domain`` (at most ``data.hf.max_scan_docs`` records are scanned).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from testtime.config import get_dotted
from testtime.corpus.split import DocumentCollector


def open_source(data_cfg: Mapping[str, Any]) -> tuple[Any, str]:
    """The streaming dataset for ``data.source`` (hf or jsonl) and a description of it."""
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
    ds = load_dataset(hf["path"], hf["name"], split=hf["split"], streaming=hf["streaming"])
    return ds, f"{hf['path']}:{hf['name']}:{hf['split']}"


def iter_records(
    dataset: Any, text_field: str, domain_field: str, max_scan: int
) -> Iterator[tuple[int, str, str]]:
    """Yield ``(row, text, domain)`` for the first ``max_scan`` records that have both fields."""
    for row, record in enumerate(dataset):
        if row >= max_scan:
            return
        text, domain = get_dotted(record, text_field), get_dotted(record, domain_field)
        if isinstance(text, str) and isinstance(domain, str):
            yield row, text, domain


def collect_records(data_cfg: Mapping[str, Any]) -> tuple[DocumentCollector, dict[str, Any]]:
    """Fill a :class:`DocumentCollector` from the configured records source.

    Returns the collector and provenance (source description, records scanned).
    """
    dataset, description = open_source(data_cfg)
    hf = data_cfg["hf"]
    collector = DocumentCollector(
        data_cfg["domains"],
        data_cfg["docs_per_domain"],
        data_cfg["max_doc_chars"],
        data_cfg["docs_per_domain_override"],
    )
    scanned = 0
    for row, text, domain in iter_records(
        dataset, hf["text_field"], hf["domain_field"], hf["max_scan_docs"]
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
