#!/usr/bin/env bash
# Fetch a run's outputs from the DVC remote and mark them up to date for Snakemake too.
#   scripts/dvc-pull.sh [dvc pull arguments, e.g. -r myremote]
# `dvc pull` restores every out in dvc.lock (data, results, figures and their *.run.json
# provenance) but not their mtimes, so a plain `snakemake` would rerun jobs; `snakemake --touch`
# then stamps the outputs in the DAG's order (nothing is computed), after which `snakemake`,
# `make reproduce` and `dvc repro` all have nothing to do. On failure (remote unreachable,
# objects missing from it) it prints DVC's error in one line and touches nothing; files
# already here are left as they were.
set -uo pipefail
if ! out=$(dvc pull --quiet "$@" 2>&1); then
    missing=$(grep -cE "^- |missing cache files|Missing cache" <<<"$out" || true)
    line=$(grep -m1 '^ERROR' <<<"$out" || tail -n1 <<<"$out")
    echo "dvc-pull: ${line#ERROR: }" >&2
    [[ $missing -gt 0 ]] && grep -E "^- " <<<"$out" | sed 's/^- /dvc-pull: missing /' >&2
    exit 1
fi
exec snakemake --cores 1 --touch --quiet
