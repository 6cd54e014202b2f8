"""Memory directories: build from a text directory or JSONL, append without re-embedding, keep
the old memory on a killed build, and fail clearly on bad input; input counts and refusals
(rows without text, suffixes, encodings, binary files), errors naming the damaged file, the
write lock (two real builder processes at once, a held lock naming its pid) and the removal of
what SIGKILLed builds leave behind (real processes killed with kill -9).

Checks against independent references: each sequence is the tokenizer's own ids of its document
cut into ``seq_len`` windows; embeddings equal a direct :func:`embed_texts` of the sequence
texts; the index returns exact inner-product neighbours.

Run: PYTHONPATH=src:. pytest tests/unit/test_memory.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.unit.tiny_memory import SEQ_LEN, demo_documents, pretrained_model, write_text_dir
from testtime.memory import (
    MANIFEST,
    Memory,
    build_memory,
    read_documents,
    tokenizer_fingerprint,
    write_lock,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    docs = demo_documents()
    model = pretrained_model(root, docs, steps=4)
    names = sorted(docs)
    first = {k: docs[k] for k in names[:6]}
    rest = {k: docs[k] for k in names[6:]}
    return root, model, docs, first, rest


def _build(src, out, model, **kw):
    kw = {"note": lambda _: None} | kw
    return build_memory(src, out, tokenizer_name=str(model), seq_len=SEQ_LEN, progress=False, **kw)


def _hidden(*dirs: Path) -> list[str]:
    """Names starting with '.' (temporaries) in ``dirs``, the lock files excepted."""
    return sorted(
        p.name for d in dirs if d.is_dir() for p in d.iterdir()
        if p.name.startswith(".") and not p.name.endswith(".lock")
    )  # fmt: skip


def test_build_from_text_dir_matches_references(setup, tmp_path):
    from testtime.embedding import embed_texts, load_embedding_model
    from testtime.tokenizer import load_tokenizer

    root, model, _, first, _ = setup
    manifest = _build(write_text_dir(tmp_path / "docs", first), tmp_path / "mem", model)
    mem = Memory.open(tmp_path / "mem")
    tok = load_tokenizer(model)
    assert manifest["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert manifest["counts"]["documents"] == len(first) and len(mem) > len(first)
    assert mem.sequences["seq_id"].tolist() == list(range(len(mem)))
    for _, grp in mem.sequences.groupby("doc_id"):
        ids = tok(first[grp["source"].iat[0].rsplit(".", 1)[0]], add_special_tokens=False)
        joined = np.concatenate(grp["input_ids"].tolist()).tolist()
        assert joined == ids["input_ids"][: len(joined)]
        assert (grp["n_tokens"] <= SEQ_LEN).all()
    direct = embed_texts(
        mem.sequences["text"].tolist(), load_embedding_model("minilm"), progress=False
    )
    np.testing.assert_allclose(mem.embeddings, direct, atol=2e-3)  # stored as float16
    scores, ids = mem.search(direct[:2], 3)
    exact = np.argsort(-(direct[:2] @ mem.embeddings.T), axis=1)[:, :3]
    assert ids[:, 0].tolist() == [0, 1] and set(ids[0]) == set(exact[0])


def test_append_does_not_reembed_and_skips_known_documents(setup, tmp_path):
    _, model, docs, first, rest = setup
    out = tmp_path / "mem"
    _build(write_text_dir(tmp_path / "a", first), out, model)
    old = Memory.open(out)
    jsonl = tmp_path / "more.jsonl"
    rows = [{"text": t} for t in rest.values()] + [{"text": next(iter(first.values()))}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    manifest = _build(jsonl, out, model)
    new = Memory.open(out)
    assert manifest["generation"] == 1 and manifest["counts"]["documents"] == len(docs)
    np.testing.assert_array_equal(new.embeddings[: len(old)], old.embeddings)  # kept as is
    assert new.sequences["seq_id"].tolist() == list(range(len(new)))
    assert new.index.ntotal == len(new)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *manifest["files"].values()])
    again = _build(jsonl, out, model)  # nothing new: unchanged
    assert again["fingerprint"] == manifest["fingerprint"] and again["generation"] == 1
    # the appended memory holds what a one-shot build of all documents holds
    both = tmp_path / "both"
    write_text_dir(both, first)
    for i, t in enumerate(rest.values()):
        (both / f"zz{i}.md").write_text(t)
    _build(both, tmp_path / "one", model)
    one_shot = Memory.open(tmp_path / "one")
    assert sorted(map(tuple, one_shot.sequences["input_ids"])) == sorted(
        map(tuple, new.sequences["input_ids"])
    )


def test_killed_build_leaves_old_memory(setup, tmp_path, monkeypatch):
    import testtime.memory as memory_module

    _, model, _, first, rest = setup
    out = tmp_path / "mem"
    _build(write_text_dir(tmp_path / "a", first), out, model)
    before = Memory.open(out).manifest

    def killed(*args, **kwargs):  # the process dies at the commit point
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_module, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(write_text_dir(tmp_path / "b", rest), out, model)
    with pytest.raises(KeyboardInterrupt):
        _build(write_text_dir(tmp_path / "b", rest), tmp_path / "fresh", model)
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists()
    after = Memory.open(out)
    assert after.manifest == before and len(after) == before["counts"]["sequences"]
    manifest = _build(tmp_path / "b", out, model)  # the next build succeeds and cleans up
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *manifest["files"].values()])


def test_ivf_index_flag_records_the_nlist_used(setup, tmp_path):
    _, model, _, first, _ = setup
    notes = []
    manifest = _build(
        write_text_dir(tmp_path / "a", first), tmp_path / "m", model, index={"type": "ivf"},
        note=notes.append,
    )  # fmt: skip
    mem = Memory.open(tmp_path / "m")
    assert manifest["index"]["type"] == "ivf" and type(mem.index).__name__ == "IndexIVFFlat"
    assert manifest["index"]["nlist"] == mem.index.nlist < 1024  # clamped, and recorded
    assert any(n.startswith("--nlist 1024:") and f"using {mem.index.nlist}" in n for n in notes)
    assert mem.search(mem.embeddings[:1], 1)[1][0, 0] == 0


def test_bad_inputs_fail_clearly(setup, tmp_path):
    from testtime.tokenizer import train_bpe_tokenizer

    _, model, _, first, _ = setup
    with pytest.raises(FileNotFoundError, match="testtime memory build"):
        Memory.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        Memory.open(tmp_path / "empty")
    (tmp_path / "nodocs").mkdir()
    with pytest.raises(ValueError, match=r"has no files ending in .*\.md"):
        _build(tmp_path / "nodocs", tmp_path / "m0", model)
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="no column 'text'"):
        _build(bad, tmp_path / "m1", model)
    out = tmp_path / "m2"
    _build(write_text_dir(tmp_path / "a", first), out, model)
    with pytest.raises(ValueError, match="embedded with 'minilm'"):
        _build(tmp_path / "a", out, model, embedder="other/encoder")
    other = tmp_path / "othertok"
    train_bpe_tokenizer(["zzz yyy"] * 5, 280, 64).save_pretrained(other)
    with pytest.raises(ValueError, match="different tokenizer"):
        build_memory(tmp_path / "a", out, tokenizer_name=str(other), seq_len=SEQ_LEN)
    with pytest.raises(ValueError, match="seq-len 32, not 16"):
        build_memory(tmp_path / "a", out, tokenizer_name=str(model), seq_len=16)
    with pytest.raises(ValueError, match=r"--seq-len 128 exceeds the context .*\(64 tokens\)"):
        build_memory(tmp_path / "a", tmp_path / "m3", tokenizer_name=str(model), seq_len=128)
    with pytest.raises(FileNotFoundError, match=r"--model \(embedder\): './nope' does not exist"):
        _build(tmp_path / "a", tmp_path / "m4", model, embedder="./nope")
    with pytest.raises(FileNotFoundError, match="--tokenizer './nope' does not exist"):
        build_memory(tmp_path / "a", tmp_path / "m3", tokenizer_name="./nope", seq_len=SEQ_LEN)


def test_input_counts_suffixes_and_refusals(tmp_path):
    rows = [{"text": "kept", "title": "Doc A"}, {"body": "no text"}, {"text": None}, {"text": " "}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = read_documents(jsonl)
    assert docs.frame["text"].tolist() == ["kept"]
    assert docs.frame["source"].tolist() == ["rows.jsonl line 1: Doc A"]
    assert docs.notes == ["kept 1 of 4 lines: 2 without text, 1 with empty text"]
    d = tmp_path / "dir"
    for name in ("a.MD", "b.rst", "c.markdown", "d.Txt", "e.py", "f.json", ".hidden.txt"):
        (d / name).parent.mkdir(exist_ok=True)
        (d / name).write_text(f"text of {name}")
    docs = read_documents(d)
    assert docs.frame["source"].tolist() == ["a.MD", "b.rst", "c.markdown", "d.Txt"]
    assert docs.notes == [
        "kept 4 of 4 files",
        "skipped 2 files by suffix: .json (1), .py (1) (read them with --suffixes)",
        "skipped 1 hidden file (names starting with '.')",
    ]
    assert len(read_documents(d, suffixes=(".py",)).frame) == 1
    latin = d / "latin.txt"
    latin.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt' is not valid utf-8 text .*--encoding"):
        read_documents(d)
    assert "café au lait" in read_documents(latin, encoding="latin-1").frame["text"].tolist()
    latin.unlink()
    garbage = d / "garbage.txt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"garbage\.txt' (is binary|is not valid utf-8)"):
        read_documents(d)
    with pytest.raises(ValueError, match="is binary"):
        read_documents(garbage, encoding="latin-1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl' line 2: invalid JSON"):
        read_documents(bad)
    for missing in ("more_docs/", "./docs", "notes.jsonl", "data/x.parquet"):
        with pytest.raises(FileNotFoundError, match="does not exist .*not looked up"):
            read_documents(tmp_path / "nowhere" / missing if missing[0] == "." else missing)


def test_damaged_files_are_named(setup, tmp_path):
    _, model, _, first, _ = setup
    good = tmp_path / "good"
    _build(write_text_dir(tmp_path / "a", first), good, model)
    files = Memory.open(good).manifest["files"]
    cases = {
        MANIFEST: (lambda p: p.write_text('{"format": 1, "files": '), "manifest.json is damaged"),
        files["embeddings"]: (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated"),
        files["sequences"]: (lambda p: p.write_bytes(b"PAR1 nope"), "truncated or damaged"),
        files["index"]: (lambda p: p.write_bytes(b"\0" * 64), "truncated or damaged"),
    }
    for name, (damage, message) in cases.items():
        mem = tmp_path / f"m_{name}"
        shutil.copytree(good, mem)
        damage(mem / name)
        with pytest.raises(ValueError, match=f"{name}.*{message}|{message}.*{name}"):
            Memory.open(mem)


def test_held_lock_names_its_holder(setup, tmp_path):
    _, model, _, first, _ = setup
    notes = []
    with write_lock(tmp_path / "mem") as lock:
        assert lock == tmp_path / ".mem.lock" and lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(TimeoutError, match=rf"being written by pid {os.getpid()}"):
            _build(write_text_dir(tmp_path / "a", first), tmp_path / "mem", model,
                   lock_timeout=0.3, note=notes.append)  # fmt: skip
    assert any("waiting for pid" in n for n in notes)
    assert not (tmp_path / "mem").exists()


def _python(*args: str) -> subprocess.Popen:
    """``python -c args[0] args[1:]`` in a new process that imports this checkout."""
    env = os.environ | {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-c", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _small(docs: dict[str, str], chars: int = 300) -> dict[str, str]:
    """Two short documents: the real-process tests embed little."""
    return {k: v[:chars] for k, v in list(docs.items())[:2]}


def test_two_builders_at_once_lose_nothing(setup, tmp_path):
    _, model, _, first, rest = setup
    first, rest = _small(first), _small(rest)
    docs = first | rest
    out = tmp_path / "mem"
    cli = "import sys; from testtime.cli import main; sys.exit(main(sys.argv[1:]))"
    build = ["memory", "build", "--tokenizer", str(model), "--seq-len", str(SEQ_LEN), "--out"]
    procs = [
        _python(cli, *build, str(out), "--device", "cpu", "--input", str(src))
        for src in (write_text_dir(tmp_path / "a", first), write_text_dir(tmp_path / "b", rest))
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    generations = sorted(int(o.split("generation ")[1][0]) for o, _ in results)
    assert generations == [0, 1]
    for _, err in results:  # quiet: no library warnings or loading bars
        assert "Loading weights" not in err and "Warning" not in err, err
    mem = Memory.open(out)
    assert mem.manifest["counts"]["documents"] == len(docs) and mem.index.ntotal == len(mem)
    assert sorted(mem.sequences["source"].unique()) == sorted(
        f"{k}{'.txt' if k.startswith('code') else '.md'}" for k in docs
    )
    assert _hidden(out, tmp_path) == []


KILLED_BUILD = """
    import os, signal, sys
    import faiss
    from testtime.memory import build_memory

    write = faiss.write_index

    def write_then_die(index, path):  # SIGKILL with a half-written generation on disk
        write(index, path)
        os.kill(os.getpid(), signal.SIGKILL)

    faiss.write_index = write_then_die
    build_memory(sys.argv[1], sys.argv[2], tokenizer_name=sys.argv[3], seq_len=int(sys.argv[4]),
                 progress=False)
"""


def test_next_writer_removes_what_killed_builds_left(setup, tmp_path):
    _, model, _, first, rest = setup
    first, rest = _small(first), _small(rest)
    docs = first | rest
    a, b = write_text_dir(tmp_path / "a", first), write_text_dir(tmp_path / "b", rest)
    out = tmp_path / "mem"

    def killed(src):
        p = _python(textwrap.dedent(KILLED_BUILD), str(src), str(out), str(model), str(SEQ_LEN))
        _, err = p.communicate(timeout=300)
        assert p.returncode == -9, err

    killed(a)  # a fresh build dies: its temporary directory stays beside --out
    assert not out.exists() and [n.startswith(".mem.") for n in _hidden(tmp_path)] == [True]
    notes = []
    _build(a, out, model, note=notes.append)
    assert _hidden(tmp_path) == [] and any("removed 1 temporary" in n for n in notes)
    before = Memory.open(out).manifest
    killed(b)  # an append dies after writing generation 1's index to a temporary
    assert any(n.startswith(".index.1.faiss.") for n in _hidden(out))
    assert Memory.open(out).manifest == before  # still the previous generation
    manifest = _build(b, out, model)
    assert _hidden(out, tmp_path) == [] and manifest["generation"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *manifest["files"].values()])
    assert Memory.open(out).manifest["counts"]["documents"] == len(docs)
