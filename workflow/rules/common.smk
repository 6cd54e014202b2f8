# Workflow-side Python: config validation, run paths, method variants, input functions.
import json
import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from testtime import gpu_slots
from testtime.config import SCHEMA_PATH, config_slice_json, validate_config
from testtime.device import uses_gpu
from testtime.methods import (
    finetuned_method_names,
    selection_variants,
    variant_job_config,
)
from testtime.report.outputs import report_argv, report_outputs

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

SELECTION_VARIANTS = selection_variants(config)
VARIANTS = [v.name for v in SELECTION_VARIANTS]
MEMORY_SHARDS = list(range(config["embed"]["shards"]))
PROMPT_SHARDS = list(range(config["finetune"]["shards"]))
# Jobs claim the `gpu` resource only where they will use one (capped at the GPUs present below).
USES_GPU = uses_gpu(config["device"])


def slurm_accounts():
    """The slurm_account values the profile and command line give (defaults and per rule)."""
    settings = workflow.resource_settings
    resources = [settings.default_resources or {}, *settings.overwrite_resources.values()]
    return {str(r["slurm_account"].raw) for r in resources if "slurm_account" in r}


# Before anything is submitted: the slurm profile's placeholder account must have been edited.
if "your_account" in slurm_accounts():
    raise WorkflowError(
        "slurm_account is still the placeholder 'your_account': set your cluster's account"
        " (and partitions) in workflow/profiles/slurm/profile.yaml; nothing was submitted"
    )
# Local runs (not a cluster profile, not inside a Slurm job, where Slurm binds GPUs): `gpu` is
# capped at the GPUs present, and each GPU job takes one device of its own (testtime.gpu_slots).
if not slurm_accounts() and "SLURM_JOB_ID" not in os.environ:
    _requested = workflow.global_resources.get("gpu")
    try:
        _gpus = gpu_slots.gpu_budget(
            None if _requested is None else _requested.value,
            len(gpu_slots.visible_devices()),
        )
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    if _requested is None and _gpus is not None:
        workflow.register_resource("gpu", _gpus)
    os.environ.setdefault(gpu_slots.SLOTS_ENV, os.path.abspath(".snakemake/gpu-slots"))


wildcard_constraints:
    method="|".join(re.escape(v) for v in VARIANTS),
    shard=r"\d+",


def job_config(*keys):
    """Param `config`: the JSON of the config keys (sections or dotted single keys) a rule's
    job may read, passed to the CLI as --config-json.

    Parsing writes nothing (a dry run with another config cannot change a running workflow);
    each job runs with exactly the values it was scheduled with, and reruns when one of them
    changes (params trigger), not when another section does. The CLI sees only these keys, so
    reading an undeclared one fails instead of silently escaping the rerun trigger.
    A function, so that Snakemake does not expand the JSON braces as wildcards.
    """
    text = config_slice_json(config, keys)
    return lambda wildcards: text


def demo_corpus_manifest(wildcards=None):
    """The corpus job's input `pinned`: the pinned demo corpus's manifest (docs/corpus.md), so a
    corpus directory rebuilt by `make install` reruns it. None where the config reads no pinned
    file, or while it is missing (the job's one-line error then says to run `make install`)."""
    from testtime.corpus.demo import PINNED_DOMAINS

    data = config["data"]
    manifest = Path(data["demo"]["corpus_dir"]) / "manifest.json"
    reads = data["source"] == "demo" and PINNED_DOMAINS.intersection(data["domains"])
    return [str(manifest)] if reads and manifest.is_file() else []


def variant_config(job, method=None):
    """Param `config` of a select or finetune job: the JSON of exactly the config its variant
    reads (testtime.methods.variant_job_config; `base` reads no select key, only SIFT reads
    select.adaptive_alphas, a lambda' sweep variant only its own lambda'), so that changing a key
    makes only the jobs that read it stale. `method` for rules without a {method} wildcard."""

    def config_json(wildcards):
        name = method or wildcards.method
        return json.dumps(variant_job_config(config, name, job), sort_keys=True, allow_nan=False)

    return config_json


def memory_embeddings(wildcards=None):
    return expand(f"{DATA}/embeddings/memory.{{shard}}.npy", shard=MEMORY_SHARDS)


def finetune_shards(wildcards=None):
    return expand(
        f"{DATA}/finetune/{{method}}/shard-{{shard}}.parquet",
        method=finetuned_method_names(config),
        shard=PROMPT_SHARDS,
    )


def sift_selections(wildcards=None):
    sift = [v.name for v in SELECTION_VARIANTS if v.selector == "sift"]
    return [f"{DATA}/selections/{name}.parquet" for name in sift]


# The report's files and their flags are testtime.report.outputs (one owner: the optional ones
# exist exactly when select.lam_sweep / select.memory_fractions are set); the workflow adds the
# Snakemake report's caption, category and label of the files the report shows.
REPORT_FILES = report_outputs(config, RESULTS, FIGURES)
REPORT_CAPTIONS = {
    "bpb": ("bpb", "Tables", "bpb.csv"),
    "table_md": ("bpb", "Tables", "bpb table (markdown)"),
    "uncertainty_png": ("uncertainty", "Figures", "uncertainty vs error"),
    "steps_png": ("steps", "Figures", "bpb vs steps"),
    "adaptive_png": ("adaptive", "Figures", "adaptive compute"),
    "uncertainty_gain_png": ("uncertainty_gain", "Figures", "uncertainty vs gain"),
    "lambda_sweep": ("lambda_sweep", "Figures", "lambda' sweep"),
    "memory_curve_md": ("memory_curve", "Tables", "memory curve (markdown)"),
    "memory_curve_png": ("memory_curve", "Figures", "memory curve"),
}


def report_rule_outputs():
    """The report rule's outputs: REPORT_FILES, those with a caption as report() items."""
    outputs = {}
    for key, path in REPORT_FILES.items():
        if key in REPORT_CAPTIONS:
            caption, category, label = REPORT_CAPTIONS[key]
            path = report(
                path,
                caption=f"../report/{caption}.rst",
                category=category,
                labels={"name": label},
            )
        outputs[key] = path
    return outputs


def report_output_flags(wildcards, output):
    """The CLI's output flags with the rule's (quoted) output paths (report_argv)."""
    return shlex.join(report_argv({key: output.get(key) for key in REPORT_FILES}))
