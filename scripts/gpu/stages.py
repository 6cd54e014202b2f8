"""Run the workflow's select, finetune, aggregate and report stages on one device, in order,
in one process (no Snakemake needed), and time each stage.

The commands are the rules' own (workflow/rules/select.smk, finetune.smk, report.smk; the
report's output flags from :func:`testtime.report.outputs.report_argv`, as the rule's), called
through ``testtime.cli.main`` instead of one ``testtime`` process per job, so the times below
leave out the ~5 s of Python and torch start-up that each Snakemake job pays. The upstream
artifacts (candidates, embeddings, base model, prompts, memory; made on any machine by
``snakemake stage_index stage_pretrain``) are read from ``--data``; the config is the run's
resolved config with ``device`` (and optionally ``finetune.batch_prompts``) overridden.

    python scripts/gpu/stages.py --data data/tiny --device cuda --batch-prompts 8 \\
        --out /tmp/tiny-gpu [--stages select finetune report] [--json times.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data/<name> holding the upstream artifacts")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-prompts", type=int, default=None, help="finetune.batch_prompts")
    p.add_argument("--out", required=True, help="where selections, shards and results go")
    p.add_argument(
        "--stages", nargs="+", default=["select", "finetune", "report"], help="which stages"
    )
    p.add_argument("--json", default=None, help="write the stage times here")
    args = p.parse_args(argv)

    from testtime.cli import main as cli
    from testtime.methods import selection_variants
    from testtime.report.outputs import report_argv, report_outputs

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((data / "config.resolved.yaml").read_text())
    cfg["device"] = args.device
    if args.batch_prompts:
        cfg["finetune"]["batch_prompts"] = args.batch_prompts
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=True))
    variants = [v.name for v in selection_variants(cfg)]
    memory_emb = sorted(
        str(x) for x in (data / "embeddings").glob("memory.*.npy") if ".ids." not in x.name
    )
    sel_dir = data / "selections" if "select" not in args.stages else out / "selections"
    times: dict[str, float] = {}

    def run(stage: str, argv: list[str]) -> None:
        start = time.perf_counter()
        status = cli([argv[0], "--config", str(config), *argv[1:]])
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - start
        if status:
            raise SystemExit(f"{stage}: testtime {argv[0]} failed ({status})")

    if "select" in args.stages:
        for v in variants:
            run(
                "select",
                [
                    "select",
                    "--method", v,
                    "--candidates", str(data / "candidates.parquet"),
                    "--memory-embeddings", *memory_emb,
                    "--prompt-embeddings", str(data / "embeddings" / "prompts.npy"),
                    "--out", str(sel_dir / f"{v}.parquet"),
                ],
            )  # fmt: skip
    shards = []
    if "finetune" in args.stages:
        n_shards = cfg["finetune"]["shards"]
        for method in ["base", *variants]:
            for shard in range(n_shards):
                dest = out / "finetune" / method / f"shard-{shard}.parquet"
                sel = (
                    [] if method == "base" else ["--selection", str(sel_dir / f"{method}.parquet")]
                )
                run(
                    "finetune",
                    [
                        "finetune",
                        "--method", method,
                        "--shard", str(shard),
                        "--num-shards", str(n_shards),
                        "--model", str(data / "base_model"),
                        "--prompts", str(data / "prompts.parquet"),
                        "--memory", str(data / "memory.parquet"),
                        *sel,
                        "--out", str(dest),
                    ],
                )  # fmt: skip
                shards.append(str(dest))
    if "report" in args.stages and shards:
        sift = [v.name for v in selection_variants(cfg) if v.selector == "sift"]
        sift_sels = [str(sel_dir / f"{name}.parquet") for name in sift]
        per_prompt = out / "results" / "per_prompt.parquet"
        run("aggregate", ["aggregate", "--inputs", *shards, "--out", str(per_prompt)])
        outputs = report_outputs(cfg, out / "results", out / "figures")
        argv = ["report", "--per-prompt", str(per_prompt), "--selections", *sift_sels]
        run("report", [*argv, *report_argv(outputs)])
    for stage, t in times.items():
        print(f"stage {stage:<9} {t:8.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "seconds": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
