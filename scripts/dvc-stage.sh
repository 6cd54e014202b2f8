#!/usr/bin/env bash
# One DVC stage's Snakemake call (dvc.yaml `cmd`): that stage's rules run, no other rule does.
#   scripts/dvc-stage.sh RULE... -- TARGET...
# DVC restores files without their mtimes (checkout, pull, commit), and Snakemake reruns a job
# whose input is newer than its output whatever --rerun-triggers says; --allowed-rules does not
# stop it either (Snakemake 9.27 still plans the other rules). So, first, `--touch` with the
# stage's own rules omitted stamps the upstream outputs in the DAG's order (DVC has checked
# their content: they are this stage's deps; nothing is computed, a missing one is an error);
# then the stage runs with the mtime trigger only (DVC tracks params and code), which now
# plans only the jobs whose outputs DVC deleted before calling: this stage's.
# A TARGET containing {shard} stands for one file per prompt shard (finetune.shards).
set -euo pipefail
rules=()
while [[ $# -gt 0 && $1 != -- ]]; do
    rules+=("$1")
    shift
done
[[ $# -gt 1 ]] || { echo "usage: $0 RULE... -- TARGET..." >&2; exit 2; }
shift
shards=$(python -c 'from testtime.config import load_config
print(load_config("config/config.yaml")["finetune"]["shards"])')
targets=()
for target in "$@"; do
    if [[ $target == *"{shard}"* ]]; then
        for ((i = 0; i < shards; i++)); do targets+=("${target//\{shard\}/$i}"); done
    else
        targets+=("$target")
    fi
done
snakemake --cores 1 --quiet --touch --rerun-triggers mtime --omit-from "${rules[@]}" \
    -- "${targets[@]}"
exec snakemake --cores all --rerun-triggers mtime -- "${targets[@]}"
