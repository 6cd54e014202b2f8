#!/usr/bin/env python3
"""NN-F and near-copies: how many prompts have a near-copy as their nearest memory sequence,
per domain, and NN-F's bpb (and % of base) on prompts with and without one.

Reads a finished run (default `demo`): data/<name>/prompts.parquet, memory.parquet, tokenizer,
selections/nn_f.parquet (the sequence NN-F trains on N times: the nearest memory sequence by
inner product) and results/<name>/per_prompt.parquet; overlap as defined in testtime.overlap
(the share of the prompt's token 8-grams found in that sequence; near-copy: > 0.5).

    .venv/bin/python scripts/near-copies.py                 # prints the markdown table
    .venv/bin/python scripts/near-copies.py --name demo --csv near_copies.csv
    .venv/bin/python scripts/near-copies.py --anywhere     # needs only the data stage

``--anywhere`` looks for the best-overlapping sequence in the whole memory instead of the
nearest one (an upper bound on the near-copy share; no embeddings or fine-tuning needed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from testtime.overlap import NEAR_COPY, NGRAM, best_overlaps, near_copy_summary, prompt_overlaps
from testtime.report import final_rows, split_ok

REPO = Path(__file__).resolve().parents[1]


def tokenized_prompts(name: str) -> pd.DataFrame:
    """``prompt_id, domain, prompt_ids``: each prompt's text encoded with the run's tokenizer."""
    from transformers import AutoTokenizer

    data = REPO / "data" / name
    prompts = pd.read_parquet(data / "prompts.parquet").sort_values("prompt_id")
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in prompts["prompt_text"]]
    return prompts[["prompt_id", "domain"]].assign(prompt_ids=ids).reset_index(drop=True)


def anywhere(name: str) -> pd.DataFrame:
    """Per domain: prompts and the share whose best-overlapping memory sequence (anywhere in
    the memory) is a near-copy, with the median best overlap."""
    prompts = tokenized_prompts(name)
    memory = pd.read_parquet(REPO / "data" / name / "memory.parquet", columns=["input_ids"])
    best = best_overlaps(prompts["prompt_ids"].tolist(), memory["input_ids"].tolist())
    prompts["best_overlap"] = [o for _, o in best]
    rows = []
    for domain, grp in [*prompts.groupby("domain", sort=False), ("all", prompts)]:
        o = grp["best_overlap"]
        share = float((o > NEAR_COPY).mean())
        rows.append(
            {"domain": domain, "n": len(grp), "near_copy_share": share, "median": float(o.median())}
        )
    return pd.DataFrame(rows)


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Per-prompt overlaps, NN-F's and the base model's final rows, and the domains in order."""
    data = REPO / "data" / name
    prompts = tokenized_prompts(name)
    sel = pd.read_parquet(data / "selections" / "nn_f.parquet")
    nearest = sel[sel["step"] == 1][["prompt_id", "memory_id"]]
    memory = pd.read_parquet(data / "memory.parquet", columns=["seq_id", "input_ids"])
    memory = memory[memory["seq_id"].isin(set(nearest["memory_id"]))]
    seqs = dict(zip(memory["seq_id"], memory["input_ids"], strict=True))
    nearest = nearest.assign(seq_ids=[list(seqs[m]) for m in nearest["memory_id"]])
    overlaps = prompt_overlaps(prompts, nearest)
    per_prompt = pd.read_parquet(REPO / "results" / name / "per_prompt.parquet")
    nn_f, _ = split_ok(final_rows(per_prompt, "nn_f"))
    base, _ = split_ok(final_rows(per_prompt, "base"))
    domains = list(dict.fromkeys(prompts["domain"]))
    return overlaps, nn_f, base, domains


def markdown(summary: pd.DataFrame) -> str:
    lines = [
        "| domain | prompts | near-copy share | NN-F with: n, bpb, % of base "
        "| NN-F without: n, bpb, % of base |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in summary.itertuples():
        with_ = f"{r.n_with}, {r.bpb_with:.3f}, {r.pct_with:.1f}" if r.n_with else "0"
        without = f"{r.n_without}, {r.bpb_without:.3f}, {r.pct_without:.1f}" if r.n_without else "0"
        lines.append(
            f"| {r.domain} | {r.n} | {100 * r.near_copy_frac:.0f}% | {with_} | {without} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="demo", help="run name (data/<name>, results/<name>)")
    parser.add_argument("--csv", help="also write the per-prompt overlaps here")
    parser.add_argument("--anywhere", action="store_true", help="best overlap in the memory")
    args = parser.parse_args()
    if args.anywhere:
        print(anywhere(args.name).round(3).to_string(index=False))
        return
    overlaps, nn_f, base, domains = load(args.name)
    summary = near_copy_summary(overlaps, nn_f, base, domains)
    print(f"near-copy: > {NEAR_COPY:g} of the prompt's {NGRAM}-grams in its nearest sequence\n")
    print(markdown(summary))
    by_domain = overlaps.groupby("domain", sort=False)[["overlap", "lcs_frac"]].median()
    print("median overlap / longest common run (fraction of the prompt) per domain:")
    print(by_domain.round(3).to_string())
    if args.csv:
        overlaps.to_csv(args.csv, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
