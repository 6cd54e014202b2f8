"""The paper's code path end to end, offline: config/paper.yaml on stand-ins shaped like the hub.

The test builds (tests/paper_standin.py) a dataset directory laid out like
``monology/pile-uncopyrighted`` (``train/00.jsonl.zst``, ``train/01.jsonl.zst``,
``val.jsonl.zst``, ``test.jsonl.zst``; ``{"text", "meta": {"pile_set_name"}}`` records of all 17
sets), a tiny GPT-2 and a tiny Phi-3 saved with ``save_pretrained`` beside a GPT-2-style
tokenizer, and a tiny Roberta as the embedder. The config is config/paper.yaml plus an overlay
that only swaps hub names for those paths and shrinks sizes (memory documents, prompts, token
counts, shards, K, N, eval steps, bootstrap); every rule runs through Snakemake on the CPU:

1. the GPT-2 row: corpus (prompts from test.jsonl.zst, a natural sample; memory sampled from
   train/), tokenizer, chunk (document memory), pretrained copy, embed, index (auto), candidates,
   every selection variant, fine-tuning, aggregate, report;
2. the LoRA row: the tiny Phi-3 with ``finetune.mode: lora`` through peft, SIFT only, to the
   report.

Run: `.venv/bin/pytest tests/workflow/test_paper_path.py -m workflow -q`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from tests.paper_standin import (
    pile_records,
    save_tiny_gpt2,
    save_tiny_phi3,
    save_tiny_roberta,
    write_pile,
)
from tests.workflow.test_workflow import REPO, _assert_ok, _run

PAPER = REPO / "config" / "paper.yaml"
RUN = ["scripts/run-workflow.sh", "--cores", "2", "--configfile", "config/paper-tiny.yaml"]


def overlay(assets: dict[str, Path], name: str) -> dict:
    """What the test changes in config/paper.yaml: hub names -> local paths, smaller sizes."""
    return {
        "name": name,
        "device": "cpu",
        "data": {
            "hf": {"path": str(assets["pile"])},
            "memory_docs": 60,
            "num_prompts": 6,
            "seq_len": 64,
            "eval_tokens": 48,
            "prompt_tokens": 24,
        },
        "model": {"name_or_path": str(assets["gpt2"])},
        "embed": {"model": str(assets["roberta"]), "max_length": 64, "batch_size": 32, "shards": 1},
        "select": {"k": 16, "n": 4, "lam_sweep": [1.0]},
        "finetune": {"eval_at": [1, 2, 4], "shards": 1, "batch_prompts": 2},
        "report": {"bootstrap": 50, "bins": 3},
    }


def _workdir(root: Path, config: dict) -> Path:
    root.mkdir(parents=True)
    for sub in ("workflow", "config", "scripts"):
        shutil.copytree(REPO / sub, root / sub)
    (root / "config" / "paper-tiny.yaml").write_text(yaml.safe_dump(config))
    return root


def _config(changes: dict) -> dict:
    config = yaml.safe_load(PAPER.read_text())
    update_config(config, changes)
    return config


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    texts = [r["text"] for r in pile_records(200, 0)]
    return {
        "pile": write_pile(root / "pile-uncopyrighted"),
        "gpt2": save_tiny_gpt2(root / "gpt2", texts),
        "phi3": save_tiny_phi3(root / "phi3", texts),
        "roberta": save_tiny_roberta(root / "roberta"),
    }


def _timed(workdir: Path) -> float:
    start = time.monotonic()
    _assert_ok(_run(workdir, RUN))
    return time.monotonic() - start


@pytest.mark.workflow
def test_paper_config_runs_end_to_end(assets: dict[str, Path], tmp_path: Path) -> None:
    workdir = _workdir(tmp_path / "wf", _config(overlay(assets, "paper-tiny")))
    seconds = _timed(workdir)
    print(f"paper path (GPT-2 row): {seconds:.1f} s")
    data, results = workdir / "data" / "paper-tiny", workdir / "results" / "paper-tiny"

    docs = pd.read_parquet(data / "documents.parquet")
    tests, memory_docs = docs[docs.split == "test"], docs[docs.split == "memory"]
    assert set(docs["split"]) == {"test", "memory"}
    assert tests["source"].str.contains(":test#").all() and len(tests) == 6
    assert memory_docs["source"].str.contains(":train#").all() and len(memory_docs) == 60
    memory = pd.read_parquet(data / "memory.parquet")
    assert len(memory) == 60 and memory["doc_id"].is_unique  # one entry per document
    assert (memory["n_tokens"] <= 64).all()
    prompts = pd.read_parquet(data / "prompts.parquet")
    assert prompts["doc_id"].tolist() == sorted(tests["doc_id"])
    assert "-> flat" in (workdir / "logs" / "paper-tiny" / "index.log").read_text()

    bpb = pd.read_csv(results / "bpb.csv")
    methods = set(bpb["method"])
    assert {"base", "sift", "nn", "nn_f", "us", "random", "sift_lam1"} <= methods, methods
    per_prompt = pd.read_parquet(results / "per_prompt.parquet")
    assert per_prompt["prompt_id"].nunique() == 6
    assert (workdir / "figures" / "paper-tiny" / "bpb_table.md").stat().st_size > 0


@pytest.mark.workflow
def test_lora_row_runs_end_to_end(assets: dict[str, Path], tmp_path: Path) -> None:
    changes = overlay(assets, "paper-tiny-lora")
    changes["model"] = {"name_or_path": str(assets["phi3"])}
    changes["finetune"].update(mode="lora", lora={"r": 4})
    changes["select"].update(methods=["sift"], lam_sweep=[], adaptive_alphas=[])
    changes["data"]["memory_docs"] = 30
    workdir = _workdir(tmp_path / "wf", _config(changes))
    seconds = _timed(workdir)
    print(f"paper path (Phi-3 LoRA row): {seconds:.1f} s")
    results = workdir / "results" / "paper-tiny-lora"
    bpb = pd.read_csv(results / "bpb.csv")
    assert {"base", "sift"} <= set(bpb["method"])
    model_cfg = yaml.safe_load(
        (workdir / "data" / "paper-tiny-lora" / "base_model" / "config.json").read_text()
    )
    assert model_cfg["model_type"] == "phi3"
