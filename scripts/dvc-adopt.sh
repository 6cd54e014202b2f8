#!/usr/bin/env bash
# Adopt what a Snakemake run of config/config.yaml just built into dvc.lock, so that
# `dvc status` is clean and `dvc repro` runs nothing (`make reproduce` calls this last).
#   scripts/dvc-adopt.sh
# `dvc commit -f` records the hashes of every stage's deps, params and outs as they are (no
# stage is run, no out is deleted). Outside a git repository, without DVC, or where dvc.yaml
# names outputs the run did not write, it says why and does nothing: the run itself succeeded.
set -uo pipefail
note() { echo "dvc-adopt: $*; dvc.lock not updated" >&2; exit 0; }
command -v dvc >/dev/null 2>&1 || note "dvc is not installed"
[[ -d .dvc && -f dvc.yaml ]] || note "no DVC project here (no .dvc/ or dvc.yaml)"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || note "not a git repository"
# dvc commit puts fresh copies of the outs back: keep their mtimes, or Snakemake would find
# every input newer than its outputs and rerun the whole workflow (scripts/keep-mtimes.py).
here=$(dirname "$0")
snapshot=$(mktemp)
trap 'rm -f "$snapshot"' EXIT
python3 "$here/keep-mtimes.py" save "$snapshot" data results figures
out=$(dvc commit --force --quiet 2>&1)
status=$?
python3 "$here/keep-mtimes.py" restore "$snapshot"
if ((status != 0)); then
    note "dvc commit failed: $(grep -m1 'ERROR' <<<"$out" || tail -n1 <<<"$out")"
fi
echo "dvc-adopt: outputs recorded in dvc.lock (commit it to share them)" >&2
