"""A tiny pre-trained model and tiny documents from the demo corpus's own sources (offline).

Documents: a few standard-library files as the demo's ``Github`` domain reads them and their
docstrings as its ``StackExchange`` domain does (:mod:`testtime.corpus.demo`), cut to
``CHARS`` characters. The model: a byte-level BPE tokenizer and a 2-layer GPT-2 (context 64)
pre-trained for a few steps on those documents with :func:`testtime.lm.pretrain`.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from testtime.chunking import encode, windows
from testtime.corpus.demo import module_docstrings, read_text

MODULES = ("colorsys", "bisect", "textwrap", "fnmatch", "glob", "shlex")
CHARS = 1200
CONTEXT = 64
SEQ_LEN = 32


def demo_documents() -> dict[str, str]:
    """``name -> text``: code and docstrings of a few stdlib modules (demo corpus sources)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = {}
    for name in MODULES:
        path = stdlib / f"{name}.py"
        docs[f"code_{name}"] = (read_text(path) or "")[:CHARS]
        docs[f"doc_{name}"] = (module_docstrings(path) or "")[:CHARS]
    return {k: v for k, v in docs.items() if v.strip()}


def write_text_dir(root: Path, docs: dict[str, str]) -> Path:
    """One ``.txt`` (code) or ``.md`` (docstrings) file per document."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (root / f"{name}{'.txt' if name.startswith('code') else '.md'}").write_text(text)
    return root


def pretrained_model(root: Path, docs: dict[str, str], steps: int = 30) -> Path:
    """Train the tokenizer and pre-train the tiny GPT-2 on ``docs``; the model directory."""
    from testtime.config import validate_config
    from testtime.lm import pretrain
    from testtime.tokenizer import train_bpe_tokenizer

    texts = list(docs.values())
    tokenizer = train_bpe_tokenizer(texts * 3, vocab_size=400, model_max_length=CONTEXT)
    seqs = [w for ids in encode(texts, tokenizer) for w in windows(ids, CONTEXT)]
    model_cfg = validate_config(
        {
            "data": {"seq_len": CONTEXT, "eval_tokens": CONTEXT},
            "model": {
                "vocab_size": 400,
                "n_layer": 2,
                "n_embd": 32,
                "n_head": 2,
                "n_positions": CONTEXT,
                "pretrain": {
                    "steps": steps,
                    "batch_size": 8,
                    "lr": 3e-3,
                    "warmup_steps": 2,
                    "checkpoint_every": steps,
                    "bf16": False,
                },
            },
        }
    )["model"]
    result = pretrain(seqs, tokenizer, model_cfg, 0, root / "ckpt", progress=False)
    out = root / "model"
    result.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
