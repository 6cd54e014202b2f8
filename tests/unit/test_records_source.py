"""The Hugging Face ``datasets`` records path, exercised offline on a tiny local JSONL.

Checks that the dotted domain field selects documents of data.domains in stream order until
each domain is full, that exact duplicates are dropped before the split, that the split is
disjoint with the hand-computed counts, and that a missing file or too few documents raise
errors naming the config key.
"""

from __future__ import annotations

import json

import pytest

from testtime.config import validate_config
from testtime.corpus import build_corpus
from testtime.corpus.records import collect_records


def _text(domain: str, i: int) -> str:
    return f"{domain} document {i}: " + " ".join(f"w{domain[:3]}{i}x{j}" for j in range(60))


@pytest.fixture
def jsonl(tmp_path):
    rows = []
    for i in range(12):
        rows.append({"text": _text("Github", i), "meta": {"pile_set_name": "Github"}})
        rows.append({"text": _text("FreeLaw", i), "meta": {"pile_set_name": "FreeLaw"}})
        rows.append({"text": _text("Enron", i), "meta": {"pile_set_name": "Enron Emails"}})
    rows.insert(1, dict(rows[0]))  # exact duplicate of the first Github document
    rows.insert(2, {"text": "too short", "meta": {"pile_set_name": "Github"}})
    rows.insert(3, {"text": _text("NoMeta", 0)})  # no domain field: skipped
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(path, **data):
    base = {
        "source": "jsonl",
        "jsonl": {"path": str(path)},
        "domains": ["Github", "FreeLaw"],
        "docs_per_domain": 10,
        "prompts_per_domain": 1,
    }
    return validate_config({"data": {**base, **data}})


def test_domains_filled_in_stream_order_with_dedup(jsonl):
    collector, info = collect_records(config(jsonl)["data"])
    github = [d.text for d in collector.docs["Github"]]
    assert github == [_text("Github", i) for i in range(10)]
    assert [d.text for d in collector.docs["FreeLaw"]] == [_text("FreeLaw", i) for i in range(10)]
    assert collector.n_duplicates == 1 and collector.n_short == 1
    assert collector.docs["Github"][0].source.endswith("#0")
    assert info["records_scanned"] < 39  # stops once both domains are full


def test_split_disjoint_and_counts(jsonl):
    docs = build_corpus(config(jsonl)).documents
    # 10 docs: test round(1.2)=1, memory round(2.8)=3, pretrain 6
    counts = docs.groupby(["domain", "split"]).size().unstack()
    assert counts.loc["Github"].to_dict() == {"memory": 3, "pretrain": 6, "test": 1}
    assert docs["text"].is_unique
    assert set(docs["domain"]) == {"Github", "FreeLaw"}


def test_errors_name_the_key(jsonl, tmp_path):
    with pytest.raises(ValueError, match=r"data\.docs_per_domain.*'Github' has 12"):
        collect_records(config(jsonl, docs_per_domain=13)["data"])
    with pytest.raises(FileNotFoundError, match=r"data\.jsonl\.path"):
        collect_records(config(tmp_path / "missing.jsonl")["data"])
    limited = config(jsonl)
    limited["data"]["hf"]["max_scan_docs"] = 5
    with pytest.raises(ValueError, match="after scanning 5 records"):
        collect_records(limited["data"])


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_jsonl_is_a_one_line_error(tmp_path, capsys, content):
    import yaml

    from testtime.cli import main

    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"source": "jsonl", "jsonl": {"path": str(path)}}}))
    assert main(["corpus", "--config", str(cfg), "--out", str(tmp_path / "d.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "data.jsonl.path" in err and str(path) in err
    assert not (tmp_path / "d.parquet").exists()
