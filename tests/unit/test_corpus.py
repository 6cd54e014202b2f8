"""The offline demo corpus builder on a tiny synthetic tree of files.

Checks that splits are disjoint at the document level, that the build is deterministic, that
each domain gets docs_per_domain documents split by the configured fractions (counts computed by
hand), that exact duplicates and test suites are dropped, that bad inputs raise errors naming the
config key (a missing or incomplete pinned corpus directory: one line saying `make install`),
that only the distributions in the corpus directory's manifest are read, and that seeded DM
Mathematics documents are reproducible. The installer and the corpus's independence from the
environment are in test_corpus_pinned.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.tiny_wheels import make_wheel, pinned_corpus
from testtime.cli import main
from testtime.config import validate_config
from testtime.corpus import DemoRoots, build_corpus
from testtime.corpus.demo import _distributions, man_to_text, sections
from testtime.corpus.pinned import extract_wheel

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _prose(i: int, n: int = 60) -> str:
    return " ".join(f"{WORDS[(i * 7 + j) % len(WORDS)]}{i}" for j in range(n))


def make_tree(root: Path, n: int = 8) -> DemoRoots:
    """stdlib with n modules (+ an excluded test suite); a pinned corpus of n distributions."""
    stdlib = root / "stdlib"
    (stdlib / "test").mkdir(parents=True)
    (stdlib / "test" / "test_big.py").write_text(f'"""TESTSUITE {_prose(99)}"""\n')
    for i in range(n):
        body = f'"""Module {i}: {_prose(i)}."""\n\n\ndef f{i}(x):\n    """{_prose(i + 50)}"""\n'
        (stdlib / f"mod{i}.py").write_text(body + "    return x\n" * 3)
    wheels = root / "wheels"
    files = [{"@/LICENSE": f"Licence of pkg{i}. {_prose(i + 30)}"} for i in range(n)]
    # an exact duplicate licence (after whitespace normalisation) must be dropped
    files[0]["@/COPYING"] = f"Licence  of pkg1.\n{_prose(31)}".replace(" ", "  ")
    # a licence inside a test suite is not read (nor extracted)
    files[0]["pkg0/tests/LICENSE"] = f"TESTLICENCE {_prose(98)}"
    pinned = [
        make_wheel(wheels, f"pkg{i}", f"1.{i}", f"# pkg{i}\n\n{_prose(i + 20)}", files[i])
        for i in range(n)
    ]
    corpus = pinned_corpus(root, pinned)
    # a distribution dropped into the directory by hand is not in the manifest: never read
    stray = make_wheel(wheels, "stray", "1.0", _prose(88), {"@/LICENSE": f"STRAY {_prose(89)}"})
    extract_wheel(stray, corpus / "site")
    return DemoRoots(stdlib, corpus, None)


def config(**data) -> dict:
    base = {
        "domains": ["Github", "StackExchange", "Pile-CC", "FreeLaw"],
        "docs_per_domain": 6,
        "prompts_per_domain": 1,
    }
    return validate_config({"data": {**base, **data}})


def test_splits_disjoint_counts_and_deterministic(tmp_path):
    roots = make_tree(tmp_path)
    first = build_corpus(config(), roots)
    docs = first.documents
    assert docs["doc_id"].tolist() == list(range(len(docs)))
    # 6 docs: test round(0.72)=1, memory round(1.68)=2, pretrain 6-1-2=3
    counts = docs.groupby(["domain", "split"]).size().unstack()
    for domain in ["Github", "StackExchange", "Pile-CC", "FreeLaw"]:
        assert counts.loc[domain].to_dict() == {"memory": 2, "pretrain": 3, "test": 1}
    # every text appears once: no document (or copy of it) in two splits
    assert docs["text"].map(lambda t: " ".join(t.split())).is_unique
    assert not docs["text"].str.contains("TESTSUITE").any()
    assert not docs["text"].str.contains("TESTLICENCE").any()
    assert not docs["text"].str.contains("STRAY|alpha88").any()  # not in the manifest
    # source names are relative to their root: the same on every machine and clone
    assert docs["source"].str.match(r"^(stdlib/|docstrings:stdlib/|metadata:|site-packages/)").all()
    again = build_corpus(config(), roots).documents
    pd.testing.assert_frame_equal(docs, again)
    other_seed = build_corpus({**config(), "seed": 1}, roots).documents
    assert not docs["split"].equals(other_seed["split"]) or not docs["text"].equals(
        other_seed["text"]
    )


def test_exact_duplicate_dropped_before_split(tmp_path):
    roots = make_tree(tmp_path)
    corpus = build_corpus(config(docs_per_domain=8, domains=["FreeLaw"]), roots)
    # 9 licence files, one a whitespace-variant copy of another: 8 distinct documents
    assert len(corpus.documents) == 8
    assert corpus.info["n_duplicates_dropped"] == 1


def test_too_few_documents_names_the_key(tmp_path):
    roots = make_tree(tmp_path)
    with pytest.raises(ValueError, match=r"data\.docs_per_domain.*'Github' has 8 of 9"):
        build_corpus(config(docs_per_domain=9), roots)
    # a per-domain cap below the shared one
    corpus = build_corpus(config(docs_per_domain=5, docs_per_domain_override={"FreeLaw": 4}), roots)
    assert corpus.documents.groupby("domain").size().to_dict() == {
        "Github": 5,
        "StackExchange": 5,
        "Pile-CC": 5,
        "FreeLaw": 4,
    }


def test_missing_source_and_unknown_domain(tmp_path):
    empty = DemoRoots(tmp_path / "nothing", tmp_path / "nothing", None)
    with pytest.raises(ValueError, match="data.domains.*'Github'"):
        build_corpus(config(domains=["Github"]), empty)
    with pytest.raises(ValueError, match="data.domains"):
        build_corpus(config(domains=["Enron Emails"]), make_tree(tmp_path))
    with pytest.raises(ValueError, match="data.domains.*Ubuntu IRC"):
        build_corpus(config(domains=["Ubuntu IRC"]), make_tree(tmp_path / "b"))


def test_distributions_are_the_manifest_of_the_corpus_dir(tmp_path):
    """Exactly the pinned distributions, sorted by canonical name: not one dropped into the
    directory by hand, nothing from the environment the test runs in (pytest is installed)."""
    wheels = [
        make_wheel(tmp_path / "w", "Zeta_Pkg", "2.0"),
        make_wheel(tmp_path / "w", "alpha", "1.0"),
        make_wheel(tmp_path / "w", "b.c", "0.1"),
    ]
    corpus = pinned_corpus(tmp_path, wheels)
    extract_wheel(make_wheel(tmp_path / "w", "stray", "9.9"), corpus / "site")
    roots = DemoRoots(tmp_path / "stdlib", corpus, None)
    selected = [(d.metadata["Name"], d.version) for d in _distributions(roots)]
    assert selected == [("alpha", "1.0"), ("b.c", "0.1"), ("Zeta_Pkg", "2.0")]


def _cli_error(capsys, cfg_path: Path, out: Path) -> str:
    assert main(["corpus", "--config", str(cfg_path), "--out", str(out)]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_missing_or_incomplete_corpus_dir_is_one_line_naming_make_install(tmp_path, capsys):
    roots = make_tree(tmp_path)
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "d.parquet"
    missing = tmp_path / "no-corpus"
    cfg.write_text(f"data:\n  domains: [FreeLaw]\n  demo: {{corpus_dir: {str(missing)!r}}}\n")
    err = _cli_error(capsys, cfg, out)
    assert len(err.strip().splitlines()) == 1, err
    assert "data.demo.corpus_dir" in err and "no-corpus" in err and "make install" in err
    # one extracted licence gone: incomplete, not a silently smaller corpus
    (roots.corpus / "site" / "pkg3-1.3.dist-info" / "LICENSE").unlink()
    cfg.write_text(f"data:\n  domains: [Pile-CC]\n  demo: {{corpus_dir: {str(roots.corpus)!r}}}\n")
    err = _cli_error(capsys, cfg, out)
    assert len(err.strip().splitlines()) == 1, err
    assert "incomplete" in err and "pkg3-1.3.dist-info/LICENSE" in err and "make install" in err
    # a domain that reads no pinned file does not need the directory
    docs = build_corpus(config(domains=["Github"]), DemoRoots(roots.stdlib, missing)).documents
    assert len(docs) == 6


def test_math_documents_seeded():
    cfg = config(domains=["DM Mathematics"], docs_per_domain=4, demo={"math_examples_per_doc": 3})
    a = build_corpus(cfg, DemoRoots(Path("/nonexistent"), Path("/nonexistent"), None))
    b = build_corpus(cfg, DemoRoots(Path("/nonexistent"), Path("/nonexistent"), None))
    pd.testing.assert_frame_equal(a.documents, b.documents)
    text = a.documents["text"].iloc[0]
    assert len(text.strip().splitlines()) == 2 * 3  # three question / answer pairs
    assert a.info["math"]["skipped_generators"]  # numpy 2 breaks some generators; recorded


def test_sections_and_man_pages():
    text = "# Title\nintro\n" + "a" * 50 + "\nUsage\n-----\n" + "b" * 50
    parts = sections(text, min_chars=40)
    assert len(parts) == 2 and parts[1].startswith("Usage\n-----")
    assert man_to_text('.SH OPTIONS\n\\fB\\-a\\fR all\n.\\" comment') == "OPTIONS\n-a all"


def test_cli_writes_parquet_and_run_json(tmp_path, monkeypatch):
    roots = make_tree(tmp_path)
    monkeypatch.setattr(DemoRoots, "default", classmethod(lambda cls, *dirs: roots))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  domains: [Github, FreeLaw]\n  docs_per_domain: 5\n  prompts_per_domain: 1\n"
    )
    out = tmp_path / "run" / "documents.parquet"
    assert main(["corpus", "--config", str(cfg), "--out", str(out)]) == 0
    docs = pd.read_parquet(out)
    assert set(docs.columns) == {"doc_id", "domain", "split", "source", "text"}
    record = json.loads(out.with_name("documents.parquet.run.json").read_text())
    assert sorted(record["corpus"]["sources"]) == sorted(docs["source"])
    assert record["corpus"]["fingerprint"] == _independent_fingerprint(docs)
    cfg.write_text("data:\n  domains: [Github]\n  docs_per_domain: 50\n")
    bad = tmp_path / "bad.parquet"
    assert main(["corpus", "--config", str(cfg), "--out", str(bad)]) == 2
    assert not bad.exists()


def _independent_fingerprint(docs: pd.DataFrame) -> str:
    """The documented layout: sha256 over doc_id, domain, split, text, each NUL-terminated."""
    import hashlib

    payload = b"".join(
        f"{i}\0{d}\0{s}\0{t}\0".encode()
        for i, d, s, t in docs[["doc_id", "domain", "split", "text"]].itertuples(index=False)
    )
    return hashlib.sha256(payload).hexdigest()


def _rows(docs: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(docs[["domain", "source", "text"]].itertuples(index=False, name=None))


def test_sampling_is_consistent_under_an_added_file(tmp_path):
    """Adding a file changes at most the documents it touches (issue: one extra installed
    package used to reshuffle every sampled document)."""
    cfg = config(docs_per_domain=6, domains=["Github", "FreeLaw"])
    base = build_corpus(cfg, make_tree(tmp_path / "a", n=12)).documents
    # an unrelated file (no domain reads .txt in the stdlib): the corpus is byte-identical
    roots = make_tree(tmp_path / "b", n=12)
    (roots.stdlib / "notes.txt").write_text(_prose(5))
    pd.testing.assert_frame_equal(build_corpus(cfg, roots).documents, base)
    # a new module: Github may swap one document for it, nothing else moves between domains
    roots = make_tree(tmp_path / "c", n=12)
    (roots.stdlib / "extra.py").write_text(f'"""{_prose(40)}"""\n' + "x = 1\n" * 5)
    extra = build_corpus(cfg, roots).documents
    added, dropped = _rows(extra) - _rows(base), _rows(base) - _rows(extra)
    assert {r[1] for r in added} <= {"stdlib/extra.py"} and len(dropped) == len(added) <= 1
    assert _rows(extra[extra.domain == "FreeLaw"]) == _rows(base[base.domain == "FreeLaw"])
    # split by a hash of each text: a kept document stays in its split unless it sits next to
    # a boundary the new document shifted (at most one per boundary)
    split_of = dict(zip(base["text"], base["split"], strict=True))
    moved = [
        t for t, s in zip(extra["text"], extra["split"], strict=True) if split_of.get(t, s) != s
    ]
    assert len(moved) <= 2


def test_same_tree_at_another_path_gives_the_same_corpus(tmp_path):
    cfg = config()
    a = build_corpus(cfg, make_tree(tmp_path / "clone-one"))
    b = build_corpus(cfg, make_tree(tmp_path / "elsewhere" / "clone-two"))
    pd.testing.assert_frame_equal(a.documents, b.documents)
    assert a.info["fingerprint"] == b.info["fingerprint"] == _independent_fingerprint(a.documents)
    changed = a.documents.copy()
    changed.loc[0, "text"] += "!"
    assert _independent_fingerprint(changed) != a.info["fingerprint"]


def test_share_dir_is_opt_in():
    assert DemoRoots.default().share is None
    with pytest.raises(ValueError, match=r"data\.demo\.share_dir"):
        DemoRoots.default(share_dir="/nonexistent/share")
    cfg = config(domains=["Ubuntu IRC"], docs_per_domain=3)
    assert cfg["data"]["demo"]["share_dir"] is None
    assert cfg["data"]["demo"]["corpus_dir"] == ".corpus"
