"""Cost estimate of a config before anyone spends GPU hours (``testtime plan``).

From the config alone (nothing is streamed or loaded) :func:`make_plan` gives: records to
stream, memory entries, the index type and its RAM (:mod:`testtime.index_size`), embedding and
fine-tuning GPU-hours, and the number of cluster jobs (Snakemake jobs of the workflow).

Throughputs (one NVIDIA H200, bf16):

* fine-tuning: **measured** by the project's own benchmark, ``bench/finetune.py`` (``testtime
  bench finetune``) on an H200 (README, "GPU validation"): GPT-2 124M, context 1,024, 50 steps
  per prompt plus one 1,024-token evaluation, 16 prompts per batch: 1.93 prompts/s, a model FLOPs
  utilisation (MFU) of 7.5 % (6 params x train tokens + 2 params x eval tokens over time, against
  989 TFLOP/s). Other models are scaled by FLOPs at that same MFU, with LoRA's training counted as
  4 params x tokens (no weight gradients of the frozen base); evaluations at each
  ``finetune.eval_at`` step are counted.
* embedding: **not measured** by any project benchmark (the embed stage records rows/s in its
  run.json, but no GPU run of it exists); estimated as 2 params x ``embed.max_length`` tokens
  per text at an assumed 30 % MFU for a batched bf16 encoder forward pass (an assumption, not a
  measurement), Roberta-large's 355M parameters.

>>> plan = make_plan(_example_config())
>>> plan.memory_entries, plan.index_type
(340000, 'flat')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from testtime.index_size import GB, choose_index_type, index_bytes

H200_PEAK_FLOPS = 989e12  # dense bf16, the benchmark's --peak-tflops
FINETUNE_MFU = 0.075  # bench/finetune.py on the H200 (16 prompts per batch, bf16)
EMBED_MFU = 0.30  # assumed, not measured
# Parameters of the models the paper configs name (for FLOP counts; others: --params).
MODEL_PARAMS = {
    "gpt2": 124e6,
    "gpt2-large": 774e6,
    "microsoft/Phi-3-mini-4k-instruct": 3.82e9,
}
EMBEDDER_PARAMS = 355e6  # roberta-large
EMBED_DIM = {"roberta-large": 1024, "minilm": 384}
PILE_TEST_DOCS = 214_670  # the Pile's test split (the uncopyrighted copy holds at most these)
PILE_BYTES_PER_DOC = 825e9 / 211e6  # the Pile paper: 825 GB of text in ~211M documents


class Plan(NamedTuple):
    """The estimate; sizes in documents / entries / bytes, times in GPU-hours."""

    records_to_stream: int
    corpus_gb: float
    memory_entries: int
    prompts: int
    index_type: str
    index_gb: float
    index_stage_gb: float
    embeddings_gb: float
    embed_gpu_hours: float
    finetune_gpu_hours: float
    finetune_runs: int
    cluster_jobs: dict[str, int]


def _embed_dim(name: str) -> int:
    return next((d for key, d in EMBED_DIM.items() if key in name), 1024)


def _prompts(data: Mapping[str, Any]) -> int:
    if data["prompt_sampling"] == "natural":
        return int(data["num_prompts"])
    return int(data["prompts_per_domain"]) * len(data["domains"])


def _memory_entries(data: Mapping[str, Any]) -> int:
    """Memory entries: ``memory_docs`` documents (document unit), else the scanned bound."""
    if data["hf"]["prompt_split"] is not None:
        docs = data["memory_docs"] or data["hf"]["max_scan_docs"]
    else:
        docs = round(data["docs_per_domain"] * len(data["domains"]) * data["split"]["memory"])
    if data["memory_unit"] == "document":
        return int(docs)
    # chunk: about one entry per seq_len tokens; Pile documents average ~1,200 GPT-2 tokens
    return int(docs * max(1, round(1200 / data["seq_len"])))


def cluster_jobs(config: Mapping[str, Any]) -> dict[str, int]:
    """Snakemake jobs per rule for ``config`` (what the slurm profile submits)."""
    from testtime.methods import finetuned_method_names, selection_variants

    shards = config["finetune"]["shards"]
    methods = finetuned_method_names(config)  # base and every selection variant
    return {
        "corpus": 1,
        "tokenizer": 1,
        "chunk": 1,
        "pretrain": 1,
        "embed_memory": config["embed"]["shards"],
        "embed_prompts": 1,
        "index": 1,
        "candidates": 1,
        "select": len(selection_variants(config)),
        "finetune": len(methods) * shards,
        "aggregate": 1,
        "report": 1,
    }


def finetune_seconds_per_prompt(config: Mapping[str, Any], params: float) -> float:
    """H200 seconds to fine-tune and evaluate one prompt (module docstring)."""
    steps = config["select"]["n"]
    train_tokens = steps * config["data"]["seq_len"]
    evals = len(config["finetune"]["eval_at"]) or steps
    eval_tokens = evals * config["data"]["eval_tokens"]
    train_factor = 4 if config["finetune"]["mode"] == "lora" else 6
    flops = train_factor * params * train_tokens + 2 * params * eval_tokens
    return flops / (H200_PEAK_FLOPS * FINETUNE_MFU)


def make_plan(config: Mapping[str, Any], params: float | None = None) -> Plan:
    """The estimate for a validated ``config`` (``params``: base-model parameters when the
    model is not in :data:`MODEL_PARAMS`)."""
    data = config["data"]
    name = config["model"]["name_or_path"] or "gpt2"
    if params is None:
        if name not in MODEL_PARAMS:
            raise ValueError(
                f"config key 'model.name_or_path': parameters of {name!r} unknown; pass --params"
            )
        params = MODEL_PARAMS[name]
    scan = data["hf"]["max_scan_docs"]
    records = scan + min(scan, PILE_TEST_DOCS) if data["hf"]["prompt_split"] is not None else scan
    memory = _memory_entries(data)
    prompts = _prompts(data)
    d = _embed_dim(config["embed"]["model"])
    kind = choose_index_type(config["index"], memory, d)
    embed_flops = 2 * EMBEDDER_PARAMS * config["embed"]["max_length"] * (memory + prompts)
    embed_hours = embed_flops / (H200_PEAK_FLOPS * EMBED_MFU) / 3600
    jobs = cluster_jobs(config)
    runs = (jobs["finetune"] // config["finetune"]["shards"] - 1) * prompts  # base: eval only
    per_prompt = finetune_seconds_per_prompt(config, params)
    base_eval = 2 * params * data["eval_tokens"] / (H200_PEAK_FLOPS * FINETUNE_MFU)
    ft_hours = (runs * per_prompt + prompts * base_eval) / 3600
    return Plan(
        records_to_stream=int(records),
        corpus_gb=(memory + prompts) * min(PILE_BYTES_PER_DOC, data["max_doc_chars"]) / GB,
        memory_entries=memory,
        prompts=prompts,
        index_type=kind,
        index_gb=index_bytes(kind, memory, d, config["index"]) / GB,
        # the index stage merges the shards as float32 before adding them
        index_stage_gb=(4 * memory * d + index_bytes(kind, memory, d, config["index"])) / GB,
        embeddings_gb=2 * memory * d / GB,
        embed_gpu_hours=embed_hours,
        finetune_gpu_hours=ft_hours,
        finetune_runs=runs,
        cluster_jobs=jobs,
    )


def format_plan(plan: Plan, config: Mapping[str, Any]) -> str:
    """The plan as the lines ``testtime plan`` prints."""
    data = config["data"]
    jobs = plan.cluster_jobs
    lines = [
        f"records to stream      <= {plan.records_to_stream:,} (data.hf.max_scan_docs of the "
        "memory split + the test split)",
        f"documents.parquet      ~{plan.corpus_gb:.3g} GB of text (Pile mean document size)",
        f"memory entries         {plan.memory_entries:,} ({data['memory_unit']}s)",
        f"prompts                {plan.prompts:,} ({data['prompt_sampling']})",
        f"index                  {plan.index_type}, {plan.index_gb:.3g} GB RAM "
        f"(index stage peak ~{plan.index_stage_gb:.3g} GB; embeddings on disk "
        f"{plan.embeddings_gb:.3g} GB float16)",
        f"embedding GPU-hours    {plan.embed_gpu_hours:.3g} (H200, assumed 30% MFU: not measured)",
        f"fine-tuning GPU-hours  {plan.finetune_gpu_hours:.3g} ({plan.finetune_runs:,} prompt "
        "runs; H200 at bench/finetune.py's measured 7.5% MFU)",
        f"cluster jobs           {sum(jobs.values()):,} ("
        + ", ".join(f"{k} {v}" for k, v in jobs.items() if v)
        + ")",
    ]
    return "\n".join(lines)


def _example_config() -> dict[str, Any]:
    from testtime.config import validate_config

    return validate_config(
        {
            "data": {
                "source": "hf",
                "memory_unit": "document",
                "memory_docs": 340_000,
                "prompt_sampling": "natural",
                "seq_len": 1024,
                "eval_tokens": 1024,
                "hf": {"prompt_split": "test"},
            },
            "model": {"source": "pretrained", "name_or_path": "gpt2"},
            "embed": {"model": "roberta-large", "max_length": 512},
            "index": {"type": "auto"},
        }
    )
