# Workflow-side Python: config validation, run paths, method variants, input functions.
import re
from pathlib import Path

import yaml
from snakemake.utils import min_version, validate

from testtime.config import SCHEMA_PATH, validate_config
from testtime.device import uses_gpu
from testtime.methods import selection_variants

min_version("9.0")

# Our validator first: it fills defaults, checks cross-field constraints and names the bad key.
config.update(validate_config(config))
validate(config, schema=str(SCHEMA_PATH))

NAME = config["name"]
DATA = f"data/{NAME}"
RESULTS = f"results/{NAME}"
FIGURES = f"figures/{NAME}"
LOGS = f"logs/{NAME}"
BENCH = f"benchmarks/{NAME}"

VARIANTS = [v.name for v in selection_variants(config)]
MEMORY_SHARDS = list(range(config["embed"]["shards"]))
PROMPT_SHARDS = list(range(config["finetune"]["shards"]))
# Jobs claim the `gpu` resource only where they will use one (the local profile caps it at 1).
USES_GPU = uses_gpu(config["device"])


wildcard_constraints:
    method="|".join(re.escape(v) for v in VARIANTS),
    shard=r"\d+",


def write_resolved_config(path):
    """The validated config with defaults, written only when it changed (keeps mtimes stable)."""
    text = yaml.safe_dump(dict(config), sort_keys=True)
    p = Path(path)
    if not p.exists() or p.read_text() != text:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    return str(p)


# Every CLI call reads this file; rules rerun on the config sections they declare as params.
RESOLVED_CONFIG = write_resolved_config(f"{DATA}/config.resolved.yaml")


def memory_embeddings(wildcards=None):
    return expand(f"{DATA}/embeddings/memory.{{shard}}.npy", shard=MEMORY_SHARDS)


def finetune_shards(wildcards=None):
    methods = ["base", *VARIANTS]
    return expand(
        f"{DATA}/finetune/{{method}}/shard-{{shard}}.parquet", method=methods, shard=PROMPT_SHARDS
    )


def sift_selections(wildcards=None):
    return [f"{DATA}/selections/{v}.parquet" for v in VARIANTS if v.startswith("sift")]


REPORT_TABLES = [f"{RESULTS}/bpb.csv", f"{RESULTS}/metrics.json"]
REPORT_PLOT_DATA = [f"{RESULTS}/uncertainty.csv", f"{RESULTS}/bpb_vs_steps.csv"]
REPORT_FIGURES = [
    f"{FIGURES}/bpb_table.md",
    f"{FIGURES}/bpb_table.tex",
    f"{FIGURES}/uncertainty_vs_error.png",
    f"{FIGURES}/uncertainty_vs_error.pdf",
    f"{FIGURES}/bpb_vs_steps.png",
    f"{FIGURES}/bpb_vs_steps.pdf",
    f"{FIGURES}/adaptive_compute.png",
    f"{FIGURES}/adaptive_compute.pdf",
]
# Only a config that sweeps lambda' gets the sweep figure.
LAMBDA_SWEEP_OUTPUT = (
    {"lambda_sweep": f"{FIGURES}/lambda_sweep.png"} if config["select"]["lam_sweep"] else {}
)
# Only a config with select.memory_fractions gets the memory-size curve.
MEMORY_CURVE_OUTPUT = (
    {
        "memory_curve_md": f"{FIGURES}/memory_curve.md",
        "memory_curve_png": f"{FIGURES}/memory_curve.png",
    }
    if config["select"]["memory_fractions"]
    else {}
)
REPORT_FIGURES += list(LAMBDA_SWEEP_OUTPUT.values()) + list(MEMORY_CURVE_OUTPUT.values())
REPORT_OUTPUTS = REPORT_TABLES + REPORT_PLOT_DATA + REPORT_FIGURES
