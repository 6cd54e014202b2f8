"""Random selection is seeded by one helper (testtime.seeding.selection_generator) in the API
and the select stage: for the same seed, prompt id and candidates both pick the same sequences.

The API's prompt ids are :func:`testtime.seeding.text_prompt_id` of the text; the stage is run
on files written from the same memory (its K nearest candidates, its embeddings) with those ids.
Also: the stage's generator is the one it always had (derive_seed of seed, prompt id, variant),
so the workflow's picks are unchanged.

Run: .venv/bin/pytest tests/unit/test_seeding.py
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.unit.tiny_memory import SEQ_LEN, demo_documents, pretrained_model, write_text_dir
from testtime import Memory, TestTimeTuner
from testtime.cli import main
from testtime.io import save_npy, write_parquet
from testtime.memory import build_memory
from testtime.seeding import selection_generator, text_prompt_id

PROMPTS = ["def hls_to_rgb(h, l, s):", "Wrap a single paragraph of text", "glob patterns"]
SEED, N, K = 7, 4, 12


def test_stage_generator_is_the_derived_seed() -> None:
    # the seed the select stage has always used: sha256 of "seed:prompt_id:variant", 63 bits
    blob = hashlib.sha256(b"7:12:random").digest()[:8]
    want = torch.Generator().manual_seed(int.from_bytes(blob, "little") & ((1 << 63) - 1))
    got = selection_generator(7, 12, "random")
    assert torch.equal(torch.randperm(50, generator=got), torch.randperm(50, generator=want))
    assert 0 <= text_prompt_id("x") < 2**63


@pytest.fixture(scope="module")
def memory_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeding")
    docs = demo_documents()
    model = pretrained_model(root, docs, steps=5)
    write_text_dir(root / "docs", docs)
    build_memory(root / "docs", root / "mem", tokenizer_name=str(model), seq_len=SEQ_LEN,
                 progress=False)  # fmt: skip
    return Memory.open(root / "mem"), model


def test_api_and_stage_pick_the_same_random_selection(memory_and_model, tmp_path) -> None:
    memory, model = memory_and_model
    tuner = TestTimeTuner.from_pretrained(
        str(model), memory, selector="random", n=N, k=K, seed=SEED, device="cpu", mode="head"
    )
    api = [seq_ids for seq_ids, _, _ in tuner.select(PROMPTS)]

    # the stage's inputs for the same prompts: the API's prompt ids, the memory's candidates
    ids = np.array([text_prompt_id(p) for p in PROMPTS], dtype=np.int64)
    queries = memory.embed(PROMPTS)
    _, nearest = memory.search(queries, K)
    rows = [(pid, r, int(m), 0.0) for pid, ms in zip(ids, nearest, strict=True)
            for r, m in enumerate(ms)]  # fmt: skip
    cand = pd.DataFrame(rows, columns=["prompt_id", "rank", "memory_id", "score"])
    write_parquet(tmp_path / "candidates.parquet", cand.astype({"rank": "int32"}))
    save_npy(tmp_path / "memory.0.npy", memory.embeddings.astype(np.float16))
    save_npy(tmp_path / "memory.0.ids.npy", np.arange(len(memory.embeddings), dtype=np.int64))
    save_npy(tmp_path / "prompts.npy", queries.astype(np.float16))
    save_npy(tmp_path / "prompts.ids.npy", ids)
    cfg = {"seed": SEED, "device": "cpu", "select": {"k": K, "n": N, "methods": ["random"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["select", "--config", str(tmp_path / "c.yaml"), "--method", "random",
                 "--candidates", str(tmp_path / "candidates.parquet"),
                 "--memory-embeddings", str(tmp_path / "memory.0.npy"),
                 "--prompt-embeddings", str(tmp_path / "prompts.npy"),
                 "--out", str(tmp_path / "random.parquet")])  # fmt: skip
    assert code == 0
    table = pd.read_parquet(tmp_path / "random.parquet")
    picks = table[table["step"] > 0].sort_values(["prompt_id", "step"])
    stage = {int(p): g["memory_id"].tolist() for p, g in picks.groupby("prompt_id")}
    assert [stage[int(p)] for p in ids] == api
    # and the picks depend on the prompt (the key is used, not one stream for all)
    assert len({tuple(a) for a in api}) == len(PROMPTS)
