#!/usr/bin/env bash
# Run the Snakemake workflow so that the same command works again after any kill.
#   scripts/run-workflow.sh --cores all [other snakemake arguments]
# Snakemake leaves its directory lock behind when killed with SIGKILL (OOM killer, power loss)
# and then refuses to start until `--unlock`. This wrapper holds a kernel file lock (flock) for
# the whole run, released automatically however the run dies: if we can take it, no other run
# is active here, so any Snakemake lock left over is stale and safe to remove. Incomplete
# outputs are redone by `rerun-incomplete` in the default profile.
set -euo pipefail
mkdir -p .snakemake
exec 9>.snakemake/run-workflow.flock
if ! flock --nonblock 9; then
    echo "run-workflow: another workflow run (or a job it left running) is active in $PWD" >&2
    exit 1
fi
snakemake --unlock "$@" >/dev/null 2>&1 || true
exec snakemake "$@"
