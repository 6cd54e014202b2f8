"""Memory directories: build from a text directory or JSONL, append without re-embedding, keep
the old memory on a killed build, and fail clearly on bad input.

Checks against independent references: each sequence is the tokenizer's own ids of its document
cut into ``seq_len`` windows; embeddings equal a direct :func:`embed_texts` of the sequence
texts; the index returns exact inner-product neighbours.

Run: PYTHONPATH=src:. pytest tests/unit/test_memory.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.tiny_memory import SEQ_LEN, demo_documents, pretrained_model, write_text_dir
from testtime.memory import MANIFEST, Memory, build_memory, tokenizer_fingerprint


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
    return build_memory(src, out, tokenizer_name=str(model), seq_len=SEQ_LEN, progress=False, **kw)


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


def test_ivf_index_flag(setup, tmp_path):
    _, model, _, first, _ = setup
    with pytest.warns(UserWarning, match="nlist"):
        manifest = _build(
            write_text_dir(tmp_path / "a", first), tmp_path / "m", model, index={"type": "ivf"}
        )
    mem = Memory.open(tmp_path / "m")
    assert manifest["index"]["type"] == "ivf" and type(mem.index).__name__ == "IndexIVFFlat"
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
    with pytest.raises(ValueError, match=r"no \.txt or \.md"):
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
