"""The paper's data path on a local stand-in shaped like monology/pile-uncopyrighted.

Sources per role (prompts from test.jsonl.zst, memory from train/*.jsonl.zst, read with
``data_files=`` as the hub copy needs), the natural prompt sample (seeded, nested, the mix it
comes in), the memory sample by count, document-mode memory, the ``same`` protocol scoring short
documents whole, and each bad input failing in one line naming the key before a long stream.
Run: `.venv/bin/pytest tests/unit/test_paper_sources.py -q` (about 10 s).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.paper_standin import gpt2_style_tokenizer, pile_records, write_pile, write_zst
from testtime.chunking import chunk_documents, make_prompts
from testtime.config import ConfigError, validate_config
from testtime.corpus import build_corpus
from testtime.corpus.records import PILE_UNCOPYRIGHTED, check_known_domains
from testtime.corpus.split import BottomK

FILES = {"train": "train/*.jsonl.zst", "val": "val.jsonl.zst", "test": "test.jsonl.zst"}


@pytest.fixture(scope="module")
def pile(tmp_path_factory):
    return write_pile(tmp_path_factory.mktemp("pile"))


def config(path, **data):
    hf = {"path": str(path), "split": "train", "prompt_split": "test", "data_files": FILES}
    hf.update(data.pop("hf", {}))
    base = {
        "source": "hf",
        "domains": ["Github", "FreeLaw", "Enron Emails"],
        "prompt_sampling": "natural",
        "num_prompts": 6,
        "memory_docs": 20,
        "hf": hf,
    }
    return validate_config(
        {"model": {"source": "pretrained", "name_or_path": "x"}, "data": {**base, **data}}
    )


def test_roles_come_from_their_splits(pile):
    docs = build_corpus(config(pile)).documents
    assert set(docs["split"]) == {"memory", "test"}
    assert docs.loc[docs.split == "test", "source"].str.contains(":test#").all()
    assert docs.loc[docs.split == "memory", "source"].str.contains(":train#").all()
    assert (docs.split == "test").sum() == 6 and (docs.split == "memory").sum() == 20
    assert docs["text"].is_unique
    # the test split holds 60 records cycling through 17 domains: 4 of each configured domain
    # (rows 3, 20, 37, 54 for Github), so 6 of the 12 documents are sampled
    tests = docs[docs.split == "test"]
    assert tests["domain"].isin(["Github", "FreeLaw", "Enron Emails"]).all()


def test_natural_sample_is_seeded_and_nested(pile):
    small = build_corpus(config(pile, num_prompts=4)).documents
    large = build_corpus(config(pile, num_prompts=8)).documents
    other = build_corpus({**config(pile, num_prompts=4), "seed": 1}).documents
    pick = lambda d: set(d.loc[d.split == "test", "text"])  # noqa: E731
    assert pick(small) < pick(large)
    assert pick(small) != pick(other)
    again = build_corpus(config(pile, num_prompts=4)).documents
    pd.testing.assert_frame_equal(small, again)


def test_bottom_k_is_a_uniform_order_free_sample():
    keys = [bytes([i]) for i in (5, 3, 9, 1, 7, 2)]
    forward, backward = BottomK(3), BottomK(3)
    for k in keys:
        forward.offer(k, k[0])
    for k in reversed(keys):
        backward.offer(k, k[0])
    assert forward.items() == backward.items() == [1, 2, 3]
    assert len(BottomK(None)) == 0


def test_memory_docs_all_and_too_many(pile):
    everything = build_corpus(config(pile, memory_docs=None)).documents
    # null keeps every distinct train document of the configured domains
    n_train = sum(
        1
        for r in pile_records(120, 1) + pile_records(120, 2)
        if r["meta"]["pile_set_name"] in ("Github", "FreeLaw", "Enron Emails")
    )
    assert (everything.split == "memory").sum() == n_train
    with pytest.raises(ValueError, match=r"data\.memory_docs.*1000 requested"):
        build_corpus(config(pile, memory_docs=1000))


def test_unknown_domain_fails_before_the_train_stream(pile, monkeypatch):
    import testtime.corpus.records as records

    opened = []
    real = records.open_split
    monkeypatch.setattr(
        records, "open_split", lambda cfg, split, key: opened.append(split) or real(cfg, split, key)
    )
    with pytest.raises(ValueError, match=r"data\.domains.*\['Books3'\]"):
        build_corpus(config(pile, domains=["Github", "Books3"]))
    assert opened == ["test"], "the memory split must not be streamed"
    with pytest.raises(ValueError, match=r"data\.domains.*no domain \['OpenWebText2'\]"):
        check_known_domains(
            {
                "source": "hf",
                "hf": {"path": "monology/pile-uncopyrighted"},
                "domains": ["Pile-CC", "OpenWebText2"],
            }
        )
    assert len(PILE_UNCOPYRIGHTED) == 17


def test_split_that_does_not_exist(pile):
    with pytest.raises(ValueError, match=r"'data\.hf\.prompt_split'.*'tset'.*\['test'"):
        build_corpus(config(pile, hf={"prompt_split": "tset"}))
    # without data_files datasets infers only train from the train/ folder: the hub's symptom
    with pytest.raises(ValueError, match=r"'data\.hf\.prompt_split'.*Bad split.*data_files"):
        build_corpus(config(pile, hf={"data_files": None}))


@pytest.mark.parametrize(
    ("field", "key"),
    [("text_field", "data.hf.text_field"), ("domain_field", "data.hf.domain_field")],
)
def test_record_without_the_field(pile, field, key):
    wrong = {"text_field": "content", "domain_field": "meta.set"}[field]
    with pytest.raises(ValueError, match=rf"'{key}'.*{wrong!r}.*\['text', 'meta.pile_set_name'\]"):
        build_corpus(config(pile, hf={field: wrong}))


def test_prompt_split_needs_hf():
    with pytest.raises(ConfigError, match=r"data\.hf\.prompt_split"):
        validate_config({"data": {"hf": {"prompt_split": "test"}, "source": "demo"}})
    with pytest.raises(ConfigError, match=r"data\.min_eval_tokens"):
        validate_config({"data": {"min_eval_tokens": 200, "eval_tokens": 100}})


TEXTS = [r["text"] for r in pile_records(40, 0)]


def _test_docs(lengths):
    """Test documents of ``lengths`` words (one token each under the word-level vocab)."""
    rows = [
        (i, "Github", "test", "s", " ".join(["Github:"] + ["a"] * (n - 1)))
        for i, n in enumerate(lengths)
    ]
    return pd.DataFrame(rows, columns=["doc_id", "domain", "split", "source", "text"])


def test_same_scores_short_documents_whole():
    tok = gpt2_style_tokenizer(TEXTS + ["Github: a a a"], 128)
    docs = _test_docs([30, 8, 3])
    n = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in docs["text"]]
    assert n[0] > 10 > n[1] > n[2]
    full = make_prompts(docs, tok, 1, 4, 10, ["Github"], "same")  # default: full windows only
    assert full["doc_id"].tolist() == [0]
    every = make_prompts(docs, tok, 3, 4, 10, ["Github"], "same", min_eval_tokens=n[2])
    assert every["doc_id"].tolist() == [0, 1, 2]
    # a short document is scored whole: its eval text is the document itself
    assert every["eval_text"].tolist()[1:] == docs["text"].tolist()[1:]
    assert len(tok(every["eval_text"][0], add_special_tokens=False)["input_ids"]) == 10
    with pytest.raises(ValueError, match=r"data\.num_prompts.*data\.min_eval_tokens = 9"):
        make_prompts(
            docs,
            tok,
            1,
            4,
            10,
            ["Github"],
            "same",
            min_eval_tokens=9,
            sampling="natural",
            num_prompts=3,
        )


def test_natural_prompts_are_a_seeded_sample_in_doc_order():
    tok = gpt2_style_tokenizer(TEXTS, 128)
    rows = [
        (i, d, "test", "s", f"{d}: doc {i} " + "x " * 20)
        for i, d in enumerate(["Github", "FreeLaw"] * 5)
    ]
    docs = pd.DataFrame(rows, columns=["doc_id", "domain", "split", "source", "text"])
    p = make_prompts(
        docs, tok, 1, 4, 8, ["Github", "FreeLaw"], "same", sampling="natural", num_prompts=4, seed=0
    )
    assert len(p) == 4 and p["doc_id"].is_monotonic_increasing
    assert p["prompt_id"].tolist() == [0, 1, 2, 3]
    q = make_prompts(
        docs, tok, 1, 4, 8, ["Github", "FreeLaw"], "same", sampling="natural", num_prompts=6, seed=0
    )
    assert set(p["doc_id"]) < set(q["doc_id"])


def test_document_memory_unit():
    tok = gpt2_style_tokenizer(TEXTS, 128)
    docs = pd.DataFrame({"doc_id": [0, 1], "domain": ["a", "b"], "text": TEXTS[:2]})
    n = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS[:2]]
    chunks = chunk_documents(docs, tok, 16)
    whole = chunk_documents(docs, tok, 16, "document")
    assert len(chunks) > 2 and len(whole) == 2
    assert whole["text"].tolist() == TEXTS[:2]  # the embedder sees the document
    assert whole["n_tokens"].tolist() == [min(16, k) for k in n]
    ids0 = tok(TEXTS[0], add_special_tokens=False)["input_ids"][:16]
    assert whole["input_ids"][0].tolist() == ids0
    assert whole["seq_id"].tolist() == [0, 1]


def test_zst_round_trip(tmp_path):
    from datasets import load_dataset

    write_zst(tmp_path / "test.jsonl.zst", pile_records(3, 0))
    ds = load_dataset(
        str(tmp_path), data_files={"test": "test.jsonl.zst"}, split="test", streaming=True
    )
    assert [r["meta"]["pile_set_name"] for r in ds] == list(PILE_UNCOPYRIGHTED[:3])


@pytest.mark.parametrize(
    ("data", "key"),
    [({"seq_len": 64}, "data.seq_len"), ({"seq_len": 16, "eval_tokens": 48}, "data.eval_tokens")],
)
def test_model_context_too_short_fails_before_streaming(tmp_path, capsys, data, key):
    """The corpus stage reads the model's config and stops before opening the dataset (whose
    path does not exist here, so reaching it would fail differently)."""
    import yaml

    from tests.paper_standin import save_tiny_gpt2
    from testtime.cli import main

    model = save_tiny_gpt2(tmp_path / "gpt2", TEXTS, n_positions=32)
    cfg = {
        "data": {
            "source": "hf",
            "hf": {"path": str(tmp_path / "no-such-dataset"), "prompt_split": "test"},
            "min_eval_tokens": 8,
            **data,
        },
        "model": {"source": "pretrained", "name_or_path": str(model)},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "documents.parquet"
    capsys.readouterr()  # the model's save progress bar
    assert main(["corpus", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "context of 32" in err, err
    assert not out.exists()
